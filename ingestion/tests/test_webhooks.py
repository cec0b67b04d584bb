"""POST /v1/webhooks/oura against real Postgres, NATS and S3; Oura is the simulator or us."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client, override_settings

from audit.models import AuditEntry
from core.metrics import webhook_accepted_total, webhook_invalid_total
from core.pseudonyms import person_hash
from devstack.stack import Stack
from ingestion.models import OuraConnection, RawEvent
from ingestion.relay import relay_drain
from ingestion.tests.asgi_client import AsgiClient
from ingestion.tests.webhook_helpers import (
    URL,
    assert_stored_audited_published,
    connect,
    envelope_of,
    notification,
    raw_stream_messages,
    sign,
    signed,
)
from ingestion.webhook_services import WEBHOOK_SUBJECT, envelope_bytes, reset_publish_breaker
from oura_simulator import OuraSimulator
from oura_simulator.config import SimulatorConfig

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["wsgi", "asgi"])
def client(request: pytest.FixtureRequest) -> Iterator[Client | AsgiClient]:
    """Every test with a `client` runs against both front doors: the Django view (the WSGI
    application) and health_project/asgi.py, which `make run` serves, whose deliveries never
    reach the view (ingestion/webhook_asgi.py)."""
    if request.param == "wsgi":
        yield Client()
        return
    asgi = AsgiClient()
    yield asgi
    asgi.close()


@pytest.fixture(autouse=True)
def _fresh_limits(clean_streams: None) -> Iterator[None]:
    cache.clear()
    reset_publish_breaker()
    yield
    reset_publish_breaker()


def post(client: Client, body: bytes, headers: dict[str, str], **extra: Any) -> Any:
    return client.post(URL, data=body, content_type="application/json", headers=headers, **extra)


def invalid_count(reason: str) -> float:
    value = webhook_invalid_total.labels(provider="oura", reason=reason)._value.get()
    return float(value)


# --- the happy path -----------------------------------------------------------------------


def test_valid_delivery_is_stored_audited_and_published_with_its_event_id(client: Client) -> None:
    connect("oura-user-1", user_id="user-1")
    accepted_before = webhook_accepted_total.labels(provider="oura")._value.get()
    body = notification(user_id="oura-user-1")
    raw, headers = signed(body)

    response = post(client, raw, {**headers, "user-agent": "Oura", "cookie": "x=y"})

    assert response.status_code == 202, response.content
    event_id = response.json()["eventId"]
    row = RawEvent.objects.get(event_id=event_id)
    assert row.status == RawEvent.Status.ACCEPTED
    assert (row.user_id, row.provider_user_id, row.kind) == ("user-1", "oura-user-1", "webhook")
    assert (row.data_type, row.event_type, row.object_id) == ("sleep", "update", body["object_id"])
    assert row.publish_subject == WEBHOOK_SUBJECT
    assert row.published_at is None  # the relay records it, see the next test
    assert row.archived_at is None
    assert row.envelope is not None

    envelope = envelope_of(event_id)
    assert envelope["event_id"] == event_id
    assert envelope["dedupe_key"] == row.dedupe_key
    assert envelope["notification"] == body
    assert envelope["body"] == raw.decode()
    assert envelope["user_id"] == "user-1"
    assert envelope["status"] == "accepted"
    assert envelope["signature"] == {
        "algorithm": "hmac-sha256", "timestamp": headers["x-oura-timestamp"],
        "secret": "current", "form": "raw",
    }  # fmt: skip
    assert set(envelope["headers"]) == {
        "content-type",
        "user-agent",
        "x-oura-timestamp",
        "x-oura-signature",
    }  # the cookie is not kept

    assert bytes(row.envelope) == envelope_bytes(envelope)  # deterministic, byte for byte

    [audit] = AuditEntry.objects.filter(event_id=event_id)
    assert audit.action == AuditEntry.Action.WEBHOOK_RECEIVED
    assert audit.occurred_at == row.received_at
    assert (audit.user_id, audit.person_ref) == ("", person_hash("oura-user-1", namespace="oura"))
    assert audit.details == {"data_type": "sleep", "event_type": "update", "status": "accepted"}

    [message] = raw_stream_messages()
    assert message.subject == WEBHOOK_SUBJECT
    assert message.msg_id == event_id
    assert message.data == bytes(row.envelope)
    assert webhook_accepted_total.labels(provider="oura")._value.get() == accepted_before + 1


def test_an_accepted_delivery_logs_one_line_its_access_line_with_the_event_id(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    connect()
    raw, headers = signed(notification())
    with caplog.at_level(logging.INFO):
        response = post(client, raw, headers)
    assert response.status_code == 202
    mine = [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith(
        ("ingestion", "core.request_id"))]  # fmt: skip
    assert [r.getMessage() for r in mine] == ["http_request"]
    (line,) = mine
    assert line.__dict__["event_id"] == response.json()["eventId"]
    assert line.__dict__["event_status"] == "accepted"
    assert line.__dict__["data_type"] == "sleep"
    assert "oura-user-1" not in json.dumps({k: str(v) for k, v in line.__dict__.items()})


def test_the_relay_records_a_published_delivery_without_a_second_message(
    client: Client,
) -> None:
    connect("oura-user-1", user_id="user-1")
    response = post(client, *signed(notification(user_id="oura-user-1")))
    assert response.status_code == 202

    totals = relay_drain(grace_s=0)

    # The relay published it again with the same Nats-Msg-Id: acknowledged, then dropped.
    assert (totals.published, totals.archived) == (1, 1)
    row = RawEvent.objects.get()
    assert row.published_at is not None
    assert row.archived_at is not None
    assert row.envelope is None
    [message] = raw_stream_messages()
    assert message.msg_id == response.json()["eventId"]


def test_event_id_and_dedupe_key_are_stable_across_offsets_of_the_same_instant(
    client: Client,
) -> None:
    first = notification(event_time="2026-01-01T10:00:00+02:00")
    same_instant = {**first, "event_time": "2026-01-01T08:00:00Z"}
    assert post(client, *signed(first)).status_code == 202
    again = post(client, *signed(same_instant))
    assert again.status_code == 409
    assert again.json()["error"] == "duplicate_event"


# --- signatures ---------------------------------------------------------------------------


def test_bad_signature_returns_400_counts_it_and_stores_nothing(client: Client) -> None:
    before = invalid_count("mismatch")
    raw, headers = signed(notification())
    headers["x-oura-signature"] = "0" * 64
    response = post(client, raw, headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert invalid_count("mismatch") == before + 1
    assert not RawEvent.objects.exists()
    assert not AuditEntry.objects.exists()
    assert raw_stream_messages() == []


def test_missing_signature_headers_are_an_invalid_signature(client: Client) -> None:
    raw, _ = signed(notification())
    response = post(client, raw, {})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert not RawEvent.objects.exists()


# 10 s beyond the 300 s tolerance: the header has whole seconds, so a closer offset could
# land inside it when the test crosses a second boundary.
# 10**500: beyond what a float holds (the skew was once computed in floats: a 500).
@pytest.mark.parametrize(
    ("offset", "reason"),
    [(-310, "too old"), (310, "in the future"),
     pytest.param(10**500, "in the future", id="500-digits-future"),
     pytest.param(-(10**500), "too old", id="500-digits-past")],
)  # fmt: skip
def test_timestamps_outside_the_tolerance_are_refused(
    client: Client, offset: int, reason: str
) -> None:
    raw, headers = signed(notification(), timestamp=int(time.time()) + offset)
    response = post(client, raw, headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert reason in response.json()["detail"]
    assert not RawEvent.objects.exists()


def test_timestamp_just_inside_the_tolerance_is_accepted(client: Client) -> None:
    raw, headers = signed(notification(), timestamp=int(time.time()) - 290)
    assert post(client, raw, headers).status_code == 202


def test_wrong_secret_is_refused(client: Client) -> None:
    raw, headers = signed(notification(), secret="not-our-secret")
    response = post(client, raw, headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert not RawEvent.objects.exists()


def test_previous_secret_is_accepted_during_a_rotation(client: Client) -> None:
    old = settings.OURA_CLIENT_SECRET
    raw, headers = signed(notification(), secret=old)
    with override_settings(OURA_CLIENT_SECRET="the-new-secret", OURA_CLIENT_SECRET_PREVIOUS=old):
        response = post(client, raw, headers)
    assert response.status_code == 202, response.content
    assert envelope_of(response.json()["eventId"])["signature"]["secret"] == "previous"


def test_previous_secret_is_refused_once_the_rotation_is_over(client: Client) -> None:
    raw, headers = signed(notification(), secret="the-old-secret")
    with override_settings(OURA_CLIENT_SECRET_PREVIOUS=""):
        assert post(client, raw, headers).status_code == 400


def test_pretty_printed_body_signed_over_its_compact_form_is_accepted(client: Client) -> None:
    body = notification(object_id="ünïcode-id")
    pretty = json.dumps(body, indent=2, ensure_ascii=False).encode()
    compact = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    raw, headers = signed(pretty, signed_message=compact)
    response = post(client, raw, headers)
    assert response.status_code == 202, response.content
    envelope = envelope_of(response.json()["eventId"])
    assert envelope["signature"]["form"] == "compact"
    assert envelope["body"] == pretty.decode()  # the bytes as received, not re-serialised


def test_pretty_printed_body_signed_over_its_raw_bytes_is_accepted(client: Client) -> None:
    raw, headers = signed(json.dumps(notification(), indent=2).encode())
    response = post(client, raw, headers)
    assert response.status_code == 202
    assert envelope_of(response.json()["eventId"])["signature"]["form"] == "raw"


def test_lower_case_signature_is_accepted(client: Client) -> None:
    raw, headers = signed(notification())
    headers["x-oura-signature"] = headers["x-oura-signature"].lower()
    assert post(client, raw, headers).status_code == 202


# --- bodies -------------------------------------------------------------------------------


@override_settings(WEBHOOK_MAX_BODY_BYTES=1024)
def test_oversized_body_returns_413_before_anything_else(client: Client) -> None:
    before = invalid_count("payload_too_large")
    raw, headers = signed(notification(object_id="x" * 2000))
    response = post(client, raw, headers)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert invalid_count("payload_too_large") == before + 1
    assert not RawEvent.objects.exists()


def test_body_that_is_not_json_but_correctly_signed_is_malformed(client: Client) -> None:
    raw, headers = signed(b"this is not json")
    response = post(client, raw, headers)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"
    assert not RawEvent.objects.exists()


def test_json_that_is_not_an_object_is_malformed(client: Client) -> None:
    raw, headers = signed(b'["event_type"]')
    response = post(client, raw, headers)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_body"


def test_unsigned_garbage_is_an_invalid_signature_not_a_parse_error(client: Client) -> None:
    response = post(client, b"{{{", {"x-oura-signature": "AB", "x-oura-timestamp": "1"})
    assert response.json()["error"] == "invalid_signature"


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":"\\ud800"}',
        b"[" * 100_000,
        b"{" * 5000,
        b'{"user_id":"' + "\u00e9".encode("utf-16-le") + b'"}',
        b"\xff\xfe{}",
    ],
    ids=["lone-surrogate", "nested-100k", "nested-objects", "utf16", "not-utf8"],
)
def test_badly_signed_hostile_bodies_are_an_invalid_signature_never_a_500(
    client: Client, body: bytes
) -> None:
    headers = {"x-oura-signature": "AB" * 32, "x-oura-timestamp": str(int(time.time()))}
    with override_settings(WEBHOOK_MAX_BODY_BYTES=200_000):
        response = post(client, body, headers)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_signature"
    assert not RawEvent.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":"\\ud800"}',
        json.dumps(notification(object_id="\ud800")).encode(),
        b"[" * 10_000,
        b"{" * 5000,
        json.dumps(notification()).encode("utf-16"),
        b"\xff" + json.dumps(notification()).encode(),
    ],
    ids=["lone-surrogate", "surrogate-field", "nested", "nested-objects", "utf16", "not-utf8"],
)
def test_signed_bodies_that_are_not_strict_json_are_malformed_and_store_nothing(
    client: Client, body: bytes
) -> None:
    response = post(client, *signed(body))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "malformed_body"
    assert not RawEvent.objects.exists()


def test_signed_fields_with_nul_or_an_out_of_range_time_are_refused_or_kept_without_a_500(
    client: Client,
) -> None:
    response = post(client, *signed(notification(object_id="a\x00b")))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_notification"
    response = post(client, *signed(notification(event_time="0001-01-01T00:00:00+05:00")))
    assert response.status_code == 202, response.content


def test_alternative_signature_forms_are_tried_only_for_small_bodies(client: Client) -> None:
    body = notification(object_id="x" * 100, data_type="sleep")
    body["padding"] = " " * 3000
    pretty = json.dumps(body, indent=2).encode()
    compact = json.dumps(body, separators=(",", ":")).encode()
    response = post(client, *signed(pretty, signed_message=compact))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"


def test_the_default_body_limit_is_what_oura_sends_plus_margin(client: Client) -> None:
    assert settings.WEBHOOK_MAX_BODY_BYTES <= 16 * 1024
    raw, headers = signed(notification(object_id="x" * 20_000))
    response = post(client, raw, headers)
    assert response.status_code == 413
    assert response.json() == {
        "error": "payload_too_large",
        "detail": f"The body is larger than {settings.WEBHOOK_MAX_BODY_BYTES} bytes.",
    }


@pytest.mark.parametrize(
    "change",
    [
        {"event_type": None},
        {"data_type": None},
        {"object_id": None},
        {"event_time": None},
        {"user_id": None},
        {"object_id": 12345},
        {"user_id": ""},
        {"event_type": "upsert"},
        {"data_type": "x" * 41},
    ],
    ids=lambda change: "-".join(f"{k}={str(v)[:8]}" for k, v in change.items()),
)
def test_missing_or_wrong_fields_are_an_invalid_notification(
    client: Client, change: dict[str, Any]
) -> None:
    body = notification()
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    response = post(client, *signed(body))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_notification"
    assert not RawEvent.objects.exists()


# --- duplicates ---------------------------------------------------------------------------


def test_duplicate_delivery_returns_409_and_touches_nothing_else(client: Client) -> None:
    connect()
    raw, headers = signed(notification())
    first = post(client, raw, headers)
    assert first.status_code == 202
    raw_again, headers_again = signed(json.loads(raw), timestamp=int(time.time()) + 1)
    second = post(client, raw_again, headers_again)
    assert second.status_code == 409
    assert second.json()["error"] == "duplicate_event"
    assert second.json()["eventId"] == first.json()["eventId"]
    assert_stored_audited_published(1)


def test_twenty_concurrent_copies_give_one_202_and_nineteen_409(live_server: Any) -> None:
    connect()
    raw, headers = signed(notification())
    start = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def deliver() -> None:
        with httpx.Client(timeout=30) as http:
            start.wait()
            response = http.post(
                live_server.url + URL,
                content=raw,
                headers={**headers, "content-type": "application/json"},
            )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(statuses) == [202] + [409] * 19
    assert_stored_audited_published(1)


# --- who the delivery is for --------------------------------------------------------------


def test_delivery_for_an_unknown_oura_user_is_kept_as_orphan_and_not_published(
    client: Client,
) -> None:
    response = post(client, *signed(notification(user_id="nobody-we-know")))
    assert response.status_code == 202
    row = RawEvent.objects.get(event_id=response.json()["eventId"])
    assert row.status == RawEvent.Status.ORPHAN
    assert row.user_id == ""
    assert row.publish_subject == ""
    assert row.published_at is None
    assert AuditEntry.objects.get().action == AuditEntry.Action.WEBHOOK_ORPHANED
    assert raw_stream_messages() == []


def test_delivery_for_a_revoked_connection_is_dropped_and_not_published(client: Client) -> None:
    connect("oura-gone", user_id="user-gone", status=OuraConnection.Status.REVOKED)
    response = post(client, *signed(notification(user_id="oura-gone")))
    assert response.status_code == 202
    row = RawEvent.objects.get(event_id=response.json()["eventId"])
    assert (row.status, row.user_id, row.publish_subject) == ("dropped", "user-gone", "")
    audit = AuditEntry.objects.get()
    assert audit.action == AuditEntry.Action.WEBHOOK_DROPPED
    assert (audit.user_id, audit.person_ref) == ("", person_hash("oura-gone", namespace="oura"))
    assert raw_stream_messages() == []


@pytest.mark.parametrize(
    "status", [OuraConnection.Status.ACTIVE, OuraConnection.Status.REVOKED, None]
)
def test_stored_envelope_is_the_deterministic_serialisation_even_for_odd_user_ids(
    client: Client, status: str | None
) -> None:
    # Postgres appends "status" and "user_id" to the envelope (webhook_services._RECORD_SQL);
    # its JSON escaping must give exactly the bytes json.dumps would, or the archive's
    # sha256 would depend on who wrote the row.
    odd_user = 'user-"quoted"\\back\tslash-é-✓'
    if status is not None:
        connect("oura-odd", user_id=odd_user, status=status)
    response = post(client, *signed(notification(user_id="oura-odd")))
    assert response.status_code == 202
    row = RawEvent.objects.get(event_id=response.json()["eventId"])
    stored = bytes(row.envelope or b"")
    envelope = json.loads(stored)
    assert stored == envelope_bytes(envelope)
    assert envelope["user_id"] == ("" if status is None else odd_user)
    assert envelope["status"] == row.status
    audit = AuditEntry.objects.get()
    # The audit entry names the Oura account by its keyed hash, never by a plain id.
    assert (audit.user_id, audit.person_ref) == ("", person_hash("oura-odd", namespace="oura"))


# --- rate limiting ------------------------------------------------------------------------


@override_settings(WEBHOOK_RATE_LIMIT_PER_MINUTE=2)
def test_a_source_over_its_rate_limit_gets_429(client: Client) -> None:
    answers = [post(client, *signed(notification())) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] in ([202, 202], [202, 429])  # minute boundary
    assert answers[2].status_code == 429
    assert answers[2].json()["error"] == "rate_limited"
    assert int(answers[2]["Retry-After"]) <= 60
    assert RawEvent.objects.count() == sum(a.status_code == 202 for a in answers)


# --- verification challenge ---------------------------------------------------------------


def test_challenge_with_the_right_token_is_echoed(client: Client) -> None:
    token = settings.OURA_WEBHOOK_VERIFICATION_TOKEN
    response = client.get(URL, {"verification_token": token, "challenge": "abc123"})
    assert response.status_code == 200
    assert response.json() == {"challenge": "abc123"}


def test_challenge_with_a_wrong_token_is_401(client: Client) -> None:
    response = client.get(URL, {"verification_token": "wrong", "challenge": "abc123"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_verification_token"
    assert "abc123" not in response.content.decode()


def test_other_methods_are_405_in_the_error_shape(client: Client) -> None:
    response = client.put(URL, data=b"{}")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_the_endpoint_is_in_the_openapi_document(client: Client) -> None:
    schema = client.get("/v1/schema/", {"format": "json"}).json()
    operations = schema["paths"]["/v1/webhooks/oura"]
    assert {"get", "post"} <= set(operations)
    assert "409" in operations["post"]["responses"]


# --- outages ------------------------------------------------------------------------------


@pytest.mark.services
def test_nats_down_still_answers_202_and_the_relay_publishes_each_event_once(
    client: Client, stack: Stack
) -> None:
    connect()
    stack.stop("nats")
    ids = []
    for _ in range(3):
        response = post(client, *signed(notification(user_id="oura-user-1")))
        assert response.status_code == 202, response.content
        ids.append(response.json()["eventId"])
    assert RawEvent.objects.filter(published_at__isnull=True).count() == 3

    stack.start("nats")
    totals = relay_drain(batch_size=2, grace_s=0)
    assert totals.published == 3
    relay_drain(batch_size=2, grace_s=0)  # a second run republishes nothing

    messages = raw_stream_messages()
    assert sorted(m.msg_id for m in messages) == sorted(ids)
    assert not RawEvent.objects.filter(published_at__isnull=True).exists()


@pytest.mark.services
def test_s3_down_still_answers_202_and_the_relay_archives_once_it_is_back(
    client: Client, stack: Stack
) -> None:
    from core import raw_store

    stack.stop("s3")
    ids = [post(client, *signed(notification())).json()["eventId"] for _ in range(3)]
    assert len(set(ids)) == 3
    failed = relay_drain(grace_s=0)
    assert failed.archived == 0
    assert failed.unavailable

    stack.start("s3")
    raw_store.reset_client()
    from core.provisioning import ProvisionReport, provision_bucket

    provision_bucket(ProvisionReport())
    assert relay_drain(grace_s=0).archived == 3
    for row in RawEvent.objects.all():
        stored = raw_store.get(row.object_key)
        assert row.sha256 == hashlib.sha256(stored).hexdigest()
        assert row.size_bytes == len(stored)
        assert row.archived_at is not None
        assert row.envelope is None  # orphans are never published, so archived is enough


@pytest.mark.services
def test_postgres_down_answers_503_and_publishes_nothing(client: Client, stack: Stack) -> None:
    stack.stop("postgres")
    response = post(client, *signed(notification()))
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert raw_stream_messages() == []


# --- the simulator's emitter --------------------------------------------------------------


@pytest.fixture
def oura_sim_config() -> SimulatorConfig:  # narrows the plugin's fixture for this module
    return SimulatorConfig(client_secret=settings.OURA_CLIENT_SECRET, max_retries_per_class=0)


def subscribe_sim(sim: OuraSimulator, callback_url: str) -> None:
    response = httpx.post(
        sim.base_url + "/v2/webhook/subscription",
        headers={"x-client-id": sim.config.client_id, "x-client-secret": sim.config.client_secret},
        json={
            "callback_url": callback_url,
            "verification_token": settings.OURA_WEBHOOK_VERIFICATION_TOKEN,
            "event_type": "create",
            "data_type": "daily_sleep",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text  # our GET answered the challenge


@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
def test_simulator_deliveries_are_accepted_by_a_live_server(
    live_server: Any,
    oura_sim: OuraSimulator,
    pretty: bool,
) -> None:
    oura_sim.config.pretty_print_body = pretty
    user = oura_sim.add_user(history_days=3)
    connect(user.oura_user_id, user_id="user-sim")
    subscribe_sim(oura_sim, live_server.url + URL)

    doc = oura_sim.put_document(user.oura_user_id, "daily_sleep")
    [delivery] = oura_sim.wait_for_deliveries(timeout=20)

    assert delivery.status == 202
    assert delivery.succeeded
    row = RawEvent.objects.get(object_id=doc["id"])
    assert (row.status, row.user_id, row.data_type) == ("accepted", "user-sim", "daily_sleep")
    form = json.loads(bytes(row.envelope or b""))["signature"]["form"]
    assert form == ("compact" if pretty else "raw")
    [message] = raw_stream_messages()
    assert message.msg_id == str(row.event_id)


def test_simulator_signing_with_the_wrong_key_is_refused(
    live_server: Any,
    oura_sim: OuraSimulator,
) -> None:
    oura_sim.config.sign_with_wrong_key = True
    user = oura_sim.add_user(history_days=3)
    subscribe_sim(oura_sim, live_server.url + URL)
    oura_sim.put_document(user.oura_user_id, "daily_sleep")
    [delivery] = oura_sim.wait_for_deliveries(timeout=20)
    assert delivery.status == 400
    assert not delivery.succeeded
    assert not RawEvent.objects.exists()


def test_signature_helper_matches_the_simulators_signer() -> None:
    from oura_simulator.webhooks import sign as sim_sign

    assert sign("k", "1", b"{}").upper() == sim_sign("k", "1", b"{}")
