"""Fuzz every endpoint in-process through the WSGI app: no answer may be a 500.

- Every operation of the live OpenAPI schema (/v1/schema/), in schemathesis' positive and
  negative modes, authenticated with a real API key (all scopes, all users) so the fuzz
  reaches the views and not only the 401. Every default check runs (not_a_server_error,
  status code, content type, header and response schema conformance, negative data
  rejected, ...) but one, see `_excluded_checks`, plus one of ours: a 4xx answers in the
  error shape `{"error": ..., "detail": ...}` (core/errors.py), documented status or not.
- Known ids are mixed in, so the fuzz also gets past "not found": a connected user (reads
  with well-formed cursors holding any position), a queued job, the verification token.
- The webhook delivery unsigned (always 400/413 in the error shape) and signed with the
  real client secret (schemathesis' bodies, then arbitrary bytes, JSON and nesting).
- Every operation with a JSON body, given one nested too deeply for Python's parser: a 4xx
  in the error shape.
- The endpoints outside the schema that take input: the OAuth start step and callback (any
  query string and cookie; and a live flow's state with any code and error) and
  healthz/readyz/metrics (GET). The OAuth steps answer a person's browser with an HTML page,
  so only "no 500" is checked there, not the JSON error shape.

Runs are derandomized (CI sees the same examples every time) and bounded: about 30 s for
the module on two cores.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ingestion.connection_services import connection_start
from ingestion.models import OuraConnection
from ingestion.tests.webhook_helpers import notification, signed
from jobs.services import job_start
from normalized.serializers import encode_cursor
from normalized.tests.factories import (
    ActivityFactory,
    DailyActivityFactory,
    DailyReadinessFactory,
    DailySleepFactory,
    SleepPeriodFactory,
)

pytestmark = pytest.mark.django_db

CONNECTED_USER = "user-a"
# The operations this module must see in the live schema (more are fuzzed if there are more).
KNOWN_OPERATIONS = {
    "oura_connection_start",
    "oura_connection_delete",
    "oura_sync_start",
    "oura_sync_status",
    "oura_sync_cancel",
    "oura_daily_list",
    "oura_activity_list",
    "oura_sleep_period_list",
    "oura_heart_rate_list",
    "oura_webhook_challenge",
    "oura_webhook_deliver",
}


def fuzz_settings(max_examples: int) -> Callable[[Any], Any]:
    return hypothesis_settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


def _latin1(value: object) -> str:
    """json.dumps' fallback for the raw bytes schemathesis puts in some negative bodies."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(type(value).__name__)


def _json_body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_shape(ctx: Any, response: Any, case: Any) -> None:
    """A 4xx (documented or not) under /v1/ answers {"error": str, "detail": str, ...}."""
    if not 400 <= response.status_code < 500:
        return
    body = _json_body(response)
    assert isinstance(body, dict), f"{response.status_code} is not a JSON object"
    assert isinstance(body.get("error"), str), f"{response.status_code} has no error code"
    assert isinstance(body.get("detail"), str), f"{response.status_code} has no detail"


def no_server_error(response: Any) -> None:
    """For the endpoints outside the schema (Django test client responses)."""
    assert response.status_code < 500 or (
        # readyz answers 503 by design when a service is down; never a 500.
        response.status_code == 503 and response.request["PATH_INFO"] == "/readyz"
    ), f"{response.status_code} for {response.request.get('QUERY_STRING')!r}"


@pytest.fixture
def wsgi_app_in_test_transaction() -> Iterator[Any]:
    """The WSGI app, minus the end-of-request close of the database connection.

    The test's rows live in an open transaction on this thread's connection; closing it
    after a request would roll them back. Django's own test client disconnects the same
    handlers.
    """
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from health_project.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(settings: Any) -> dict[str, str]:
    """Rows the generator could not guess: a connected user with data and a queued job."""
    settings.API_RATE_LIMIT_PER_MINUTE = 1_000_000
    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 1_000_000
    cache.clear()
    # Rows for the user the generator will usually not guess, and for a plain one it may.
    for user_id in (CONNECTED_USER, "0"):
        DailyReadinessFactory(user_id=user_id, day=date(2000, 1, 1))
        DailySleepFactory(user_id=user_id, day=date(2000, 1, 1))
        SleepPeriodFactory(user_id=user_id, day=date(2000, 1, 1))
        DailyActivityFactory(user_id=user_id, day=date(2000, 1, 2))
        ActivityFactory(user_id=user_id, day=date(2000, 1, 1))
    OuraConnection.objects.create(
        user_id=CONNECTED_USER,
        provider_user_id="oura-user-1",
        status=OuraConnection.Status.ACTIVE,
        scopes=list(django_settings.OURA_SCOPES),
    )
    job = job_start(
        user_id=CONNECTED_USER,
        start=date(2000, 1, 1),
        end=date(2000, 1, 31),
        data_types=None,
        requested_by="test",
    ).job
    return {"user_id": CONNECTED_USER, "job_id": str(job.job_id)}


@pytest.fixture
def api_schema(wsgi_app_in_test_transaction: Any) -> Any:
    import schemathesis

    return schemathesis.openapi.from_wsgi("/v1/schema/", wsgi_app_in_test_transaction)


def _operations(schema: Any) -> dict[str, Any]:
    # An Err would raise here, failing the test.
    found = [result.ok() for result in schema.get_all_operations()]
    return {op.definition.raw["operationId"]: op for op in found}


def _excluded_checks() -> list[Any]:
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    # OpenAPI cannot say "end >= start", "at most 366 days", "this user is connected",
    # "signed with the client secret" or "the verification token we were given": such
    # requests are schema-valid and rightly answered 4xx, which this one check would flag.
    # The checks that matter here (not_a_server_error, status code, content type and
    # response schema conformance, negative_data_rejection) all run.
    return [positive_data_acceptance]


def _pinned(op_id: str, operation: Any, seed: dict[str, str]) -> Any:
    """Positive cases with a known id in them, so the fuzz gets past "not found"."""
    from schemathesis import GenerationMode

    positive = GenerationMode.POSITIVE
    if op_id in {"oura_sync_status", "oura_sync_cancel"}:
        return operation.as_strategy(positive, path_parameters={"job_id": seed["job_id"]})
    if op_id == "oura_webhook_challenge":
        token = django_settings.OURA_WEBHOOK_VERIFICATION_TOKEN
        return operation.as_strategy(positive, query={"verification_token": token})
    if op_id == "oura_sync_start":

        def connected(case: Any) -> Any:
            if isinstance(case.body, dict):
                case.body = {**case.body, "userId": seed["user_id"]}
            return case

        return operation.as_strategy(positive).map(connected)
    if "{user_id}" in operation.path:
        known_user = operation.as_strategy(positive, path_parameters={"user_id": seed["user_id"]})
        if op_id.endswith("_list"):  # a read: also with cursors shaped like the ones we issue

            def with_cursor(drawn: tuple[Any, str]) -> Any:
                case, cursor = drawn
                case.query = {**(case.query or {}), "cursor": cursor}
                return case

            kind = {
                "oura_daily_list": "daily",
                "oura_sleep_period_list": "sleep",
                "oura_heart_rate_list": "heartrate",  # keyset-shaped: reads `t`, ignores `i`
                "oura_sleep_time_list": "sleep_time",
                "oura_tag_list": "tags",
                "oura_rest_mode_period_list": "rest_mode_periods",
            }.get(op_id, "activities")
            return st.tuples(known_user, _cursors(kind)).map(with_cursor)
        return known_user
    return None  # the webhook delivery: signed in its own test below


def _cursors(kind: str) -> st.SearchStrategy[str]:
    """Well-formed cursors (base64 JSON, as the reads issue them) holding any position:
    mostly this endpoint's kind and shape, with any day, any time at any offset (some leave
    the calendar in UTC) and any id; sometimes another kind, shape or value altogether."""
    widest = timedelta(hours=23, minutes=59)
    offsets = st.sampled_from([-widest, widest]) | st.timedeltas(-widest, widest)
    edges = st.sampled_from([datetime.min, datetime.max])
    moments = st.builds(
        lambda moment, offset: moment.replace(tzinfo=timezone(offset)).isoformat(),
        edges | st.datetimes(),
        offsets,
    )
    anything = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    day = st.fixed_dictionaries({"d": st.dates().map(date.isoformat) | anything})
    keyset = st.fixed_dictionaries({"t": moments | anything, "i": st.integers() | anything})
    day_keyset = st.fixed_dictionaries(
        {"d": st.dates().map(date.isoformat) | anything, "i": st.integers() | anything}
    )
    own, other = {
        "daily": (day, keyset),
        "sleep_time": (day_keyset, keyset),
        "rest_mode_periods": (day_keyset, keyset),
    }.get(kind, (keyset, day))
    kinds = (
        st.just(kind)
        | st.sampled_from(
            ["daily", "activities", "sleep", "heartrate", "sleep_time", "tags", "rest_mode_periods"]
        )
        | st.text(max_size=9)
    )
    return st.builds(encode_cursor, kinds, own | other)


# Disconnecting revokes the seeded connection; run it last so the others see it connected.
def _order(op_id: str) -> int:
    return 1 if op_id == "oura_connection_delete" else 0


def unsigned_webhook_refused(ctx: Any, response: Any, case: Any) -> None:
    """Without our signature, a delivery gets 400 (or 413 for size) and nothing else."""
    if case.operation.definition.raw.get("operationId") == "oura_webhook_deliver":
        assert response.status_code in (400, 413), response.status_code


def test_every_schema_operation_answers_no_500_and_as_documented(api_schema, seeded, make_api_key):
    from schemathesis import GenerationMode

    key = make_api_key(scopes=("health:read", "health:sync", "health:connect"))
    auth = {"Authorization": f"Bearer {key}"}
    operations = _operations(api_schema)
    assert set(operations) >= KNOWN_OPERATIONS, sorted(KNOWN_OPERATIONS - set(operations))
    excluded = _excluded_checks()

    def call(case: Any) -> None:
        case.call_and_validate(
            headers=auth,
            excluded_checks=excluded,
            additional_checks=[error_shape, unsigned_webhook_refused],
        )

    for op_id in sorted(operations, key=lambda name: (_order(name), name)):
        operation = operations[op_id]
        runs = [
            (operation.as_strategy(GenerationMode.POSITIVE), 25),
            (operation.as_strategy(GenerationMode.NEGATIVE), 25),
        ]
        pinned = _pinned(op_id, operation, seeded)
        if pinned is not None:
            runs.append((pinned, 50))

        for strategy, examples in runs:
            fuzz_settings(max_examples=examples)(given(case=strategy)(call))()


def test_every_operation_taking_json_answers_a_body_nested_too_deeply_with_a_4xx(
    api_schema, seeded, make_api_key
):
    """Python's json recurses once per level, so such a body raises RecursionError, which
    DRF's own parser let through as a 500 (core/parsers.py). Every operation of the schema
    with a JSON body, present and future, must answer it with a 4xx in the error shape."""
    key = make_api_key(scopes=("health:read", "health:sync", "health:connect"))
    client = Client(raise_request_exception=False)
    taking_json = {
        op_id: operation
        for op_id, operation in _operations(api_schema).items()
        if "application/json" in operation.definition.raw.get("requestBody", {}).get("content", {})
    }
    assert {"oura_sync_start", "oura_webhook_deliver"} <= set(taking_json)
    ids = defaultdict(lambda: seeded["user_id"], job_id=seeded["job_id"])
    for op_id, operation in taking_json.items():
        for body in (b"[" * 100_000, b'{"a":' * 50_000, b"[" * 5_000 + b"]" * 5_000):
            response = client.generic(
                operation.method.upper(),
                operation.path.format_map(ids),
                body,
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {key}",
            )
            assert 400 <= response.status_code < 500, (op_id, response.status_code)
            error_shape(None, response, None)


def _raw_bodies() -> st.SearchStrategy[bytes]:
    """Anything a sender could put in a delivery's body: bytes, any JSON, a notification
    whose fields are any JSON (strings with lone surrogates included: json.dumps escapes
    them as \\udXXX), deep nesting, and bodies around and far over the size limit."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    )
    fields = ("event_type", "data_type", "object_id", "event_time", "user_id")
    notifications = st.fixed_dictionaries(
        {}, optional={name: st.text() | json_values for name in fields}
    ).map(lambda overrides: json.dumps(notification(**overrides)).encode())
    limit = django_settings.WEBHOOK_MAX_BODY_BYTES
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda value: json.dumps(value).encode()),
        notifications,
        (st.integers(1, 3000) | st.just(100_000)).map(lambda n: b"[" * n + b"]" * n),
        st.integers(limit - 2, limit + 2).map(lambda n: b" " * n),
    )


def test_webhook_deliveries_signed_or_not_answer_no_500_and_as_documented(api_schema, seeded):
    """The delivery endpoint, past the signature: bodies schemathesis makes from the schema
    (valid notifications and invalid ones) and arbitrary ones, each signed with the real
    client secret, so the fuzz reaches parsing, storing and publishing. Then the same
    arbitrary bodies unsigned or wrongly signed: 400 or 413, in the error shape."""
    from schemathesis import GenerationMode
    from schemathesis.core import NotSet

    operation = _operations(api_schema)["oura_webhook_deliver"]
    excluded = _excluded_checks()
    # The request itself (path, headers) comes from a positive case; only the body varies.
    # A negative case would also drop or mangle the signature headers we set.
    transport = operation.as_strategy(GenerationMode.POSITIVE)

    def as_json(body: Any) -> bytes:
        return b"" if isinstance(body, NotSet) else json.dumps(body, default=_latin1).encode()

    schema_bodies = st.one_of(
        [
            operation.as_strategy(mode).map(lambda case: as_json(case.body))
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
    )

    def send(case: Any, raw: bytes, headers: dict[str, str]) -> Any:
        return case.call_and_validate(
            data=raw,
            headers={**headers, "Content-Type": "application/json"},
            excluded_checks=excluded,
            additional_checks=[error_shape],
        )

    for bodies in (schema_bodies, _raw_bodies()):

        @fuzz_settings(max_examples=80)
        @given(case=transport, raw=bodies)
        def deliver_signed(case: Any, raw: bytes) -> None:
            send(case, raw, signed(raw)[1])

        deliver_signed()

    # What an HTTP client can send at all: visible ASCII, no leading space, no line breaks.
    header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)

    @fuzz_settings(max_examples=60)
    @given(
        case=transport,
        raw=_raw_bodies(),
        headers=st.fixed_dictionaries(
            {}, optional={"x-oura-signature": header_values, "x-oura-timestamp": header_values}
        ),
        stale=st.booleans(),
    )
    def deliver_unsigned(case: Any, raw: bytes, headers: dict[str, str], stale: bool) -> None:
        if stale:  # the right signature over a timestamp outside the tolerance
            headers = signed(raw, timestamp=1)[1]
        response = send(case, raw, headers)
        assert response.status_code in (400, 413), response.status_code

    deliver_unsigned()


def _query_strings() -> st.SearchStrategy[str]:
    """What follows `?`: well-formed pairs of any text, or any bytes (bad escapes, bad UTF-8)."""
    names = st.sampled_from(["state", "code", "error", "scope", "x"]) | st.text(max_size=10)
    pairs = st.lists(st.tuples(names, st.text(max_size=100)), max_size=5).map(
        lambda items: urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in items])
    )
    raw = st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    return pairs | raw


def _cookies() -> st.SearchStrategy[str]:
    """A raw Cookie header: the flow's own cookie with any value, or any text at all."""
    value = st.text(max_size=60).map(lambda v: v.encode("utf-8", "surrogatepass").decode("latin-1"))
    return st.one_of(
        st.just(""),
        value.map(lambda v: f"oura_oauth_browser={v}"),
        st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    )


@pytest.mark.parametrize("path", ["/v1/oauth/oura/callback", "/v1/oauth/oura/start"])
def test_oauth_pages_answer_no_500_to_any_query_or_cookie(path, seeded):
    """The browser-facing steps of the connect flow, with whatever query and cookie."""
    client = Client(raise_request_exception=False)

    @fuzz_settings(max_examples=50)
    @given(query=_query_strings(), cookie=_cookies())
    def run(query: str, cookie: str) -> None:
        no_server_error(client.get(path, QUERY_STRING=query, HTTP_COOKIE=cookie))

    run()


def test_oauth_callback_answers_no_500_to_any_code_or_error_for_a_live_flow(seeded, oura):
    """A real flow per example, as a browser walks it (our start URL, its redirect to Oura
    and cookie, if any), then the callback with the live state and any code and error:
    the code reaches the token exchange at the simulator."""

    @fuzz_settings(max_examples=20)
    @given(
        code=st.none() | st.text(max_size=100),
        error=st.none() | st.text(max_size=30),
    )
    def run(code: str | None, error: str | None) -> None:
        client = Client(raise_request_exception=False)
        url = urlsplit(connection_start(user_id=CONNECTED_USER))
        if url.path.startswith("/v1/oauth/"):  # our own start step: it sets the cookie
            opened = client.get(url.path, QUERY_STRING=url.query)
            assert opened.status_code == 302, opened.status_code
            url = urlsplit(opened["Location"])
        state = parse_qs(url.query)["state"][0]
        params = [("state", state)]
        params += [("code", code)] if code is not None else []
        params += [("error", error)] if error is not None else []
        query = urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in params])
        no_server_error(client.get("/v1/oauth/oura/callback", QUERY_STRING=query))

    run()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_answer_no_500_to_any_query(path, seeded):
    client = Client(raise_request_exception=False)

    @fuzz_settings(max_examples=15)
    @given(query=_query_strings())
    def run(query: str) -> None:
        response = client.get(path, QUERY_STRING=query)
        no_server_error(response)
        if path != "/readyz":  # 503 there means a service is down, not a bad query
            assert response.status_code == 200, response.status_code

    run()
