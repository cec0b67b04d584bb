"""One webhook is one trace across the real processes; a backfill page is one trace too.

The web (granian), relay, normalizer and backfill worker run as child processes, as under
`make run`, with the real OTLP/HTTP exporter pointed at a receiver in this test. What the
receiver gets is also checked for what must never leave a process: raw ids, tokens, the
OAuth callback's code and state, the webhook body.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings

from core.pseudonyms import person_hash
from core.tests.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from core.tests.test_shutdown import free_port
from health_project.serving import granian_args
from ingestion import crypto
from ingestion.models import OuraConnection, RawEvent
from ingestion.tests.webhook_helpers import signed
from jobs.models import IngestionJob
from jobs.services import job_start
from jobs.tests.conftest import HISTORY_END, broker, connect_user, day_bounds  # noqa: F401 - broker is a fixture
from jobs.tests.test_worker import oura_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("broker")]

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
GRANIAN = str(Path(sys.executable).parent / "granian")
# A distinctive id, so finding it anywhere in a span means it leaked.
USER_ID = "trace-person-5e1f"
OAUTH_CODE = "code-7c1d9a0b33"
OAUTH_STATE = "state-4b8e2f61aa"


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def processes(
    subprocess_env: dict[str, str], oura, clean_streams
) -> Iterator[tuple[OtlpReceiver, str]]:
    port = free_port()
    children: list[subprocess.Popen[bytes]] = []
    with otlp_receiver() as receiver:
        env = (
            subprocess_env
            | oura_env(oura)
            | {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "PYTHONUNBUFFERED": "1",
            }
        )
        argvs = {
            "web": [GRANIAN, *granian_args(host="127.0.0.1", port=port, workers=1),
                    "--workers-kill-timeout", "5"],
            "relay": [sys.executable, MANAGE, "run_relay"],
            "normalizer": [sys.executable, MANAGE, "run_consumer", "normalizer"],
            "worker": [sys.executable, MANAGE, "run_worker", "--threads", "1"],
        }  # fmt: skip
        try:
            for name, argv in argvs.items():
                children.append(
                    subprocess.Popen(
                        argv,
                        cwd=settings.BASE_DIR,
                        env=env | {"OTEL_SERVICE_NAME": f"health-{name}"},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            base = f"http://127.0.0.1:{port}"
            _wait(lambda: _status(f"{base}/healthz") == 200, 60, "the web process")
            yield receiver, base
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)


def _status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def _traces(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    return by_trace


def _is_upsert(span: ReceivedSpan, table: str) -> bool:
    statement = str(span.attributes.get("db.statement", ""))
    return table in statement and "ON CONFLICT" in statement.upper()


def _webhook_trace(spans: list[ReceivedSpan], event_id: str) -> list[ReceivedSpan] | None:
    """The trace whose normalizer consume span handled `event_id`, once it is complete."""
    for trace in _traces(spans).values():
        services = {span.service for span in trace}
        consumed = any(
            span.attributes.get("messaging.message.id") == event_id
            and span.service == "health-normalizer"
            for span in trace
        )
        announced = any(span.name == "health.normalized.user.* publish" for span in trace)
        archived = any(span.name == "raw_store put" for span in trace)
        if (
            consumed
            and announced
            and archived
            and {"health-web", "health-relay", "health-normalizer"} <= services
        ):
            return trace
    return None


def test_one_webhook_is_one_trace_from_the_request_to_the_upsert_and_a_page_one_per_page(
    processes: tuple[OtlpReceiver, str], oura, make_api_key
) -> None:
    receiver, base = processes
    conn, oura_uid = connect_user(oura, user_id=USER_ID, history_days=200)
    day = HISTORY_END
    lo, hi = day_bounds(day - timedelta(days=3), day)
    document = oura.documents(oura_uid, "daily_sleep", lo, hi)[0]

    # One signed webhook, as Oura sends it.
    notification = {
        "event_type": "update",
        "data_type": "daily_sleep",
        "object_id": document["id"],
        "event_time": "2026-01-01T08:00:00+00:00",
        "user_id": oura_uid,
    }
    body, headers = signed(notification)
    status = _status(
        f"{base}/v1/webhooks/oura", body, headers | {"Content-Type": "application/json"}
    )
    assert status == 202
    event_id = str(RawEvent.objects.get(kind="webhook", object_id=document["id"]).event_id)

    trace = receiver.wait_for(lambda spans: _webhook_trace(spans, event_id), 60)
    assert trace is not None, "no complete trace for the webhook"
    by_id = {span.span_id: span for span in trace}
    request = [s for s in trace if s.service == "health-web" and not s.parent_span_id]
    assert len(request) == 1, "the trace starts at the web request"
    assert request[0].kind == 2  # SERVER
    publish = next(s for s in trace if s.name == "health.raw.oura.webhook publish")
    assert publish.service == "health-web"
    assert publish.attributes["messaging.message.id"] == event_id
    consume = next(
        s for s in trace if s.service == "health-normalizer" and s.name.endswith(" process")
    )
    assert consume.attributes["messaging.nats.stream_sequence"] > 0
    assert by_id[consume.parent_span_id].service in {"health-web", "health-relay"}
    upserts = [s for s in trace if s.service == "health-normalizer" and _is_upsert(s, "daily")]
    assert upserts, "the Postgres upsert is in the webhook's trace"
    # The normalizer's Oura fetch is there too, by path template only.
    assert any(s.service == "health-normalizer" and s.kind == 3 for s in trace)  # CLIENT

    # A short backfill of one type: every page is a trace of its own, worker to normalizer.
    job = job_start(
        user_id=USER_ID, start=day - timedelta(days=179), end=day,
        data_types=["daily_sleep"], requested_by="test",
    ).job  # fmt: skip
    _wait(lambda: IngestionJob.objects.get(pk=job.pk).status == "succeeded", 60, "backfill")
    pages = {str(p.event_id) for p in RawEvent.objects.filter(kind="page", user_id=USER_ID)}
    assert len(pages) >= 2

    def page_traces(spans: list[ReceivedSpan]) -> dict[str, str] | None:
        found = {}
        for trace_id, spans_of_trace in _traces(spans).items():
            for span in spans_of_trace:
                page = span.attributes.get("messaging.message.id")
                if page in pages and span.service == "health-normalizer":
                    roots = [s for s in spans_of_trace if not s.parent_span_id]
                    if [r.name for r in roots] == ["backfill page daily_sleep"]:
                        found[str(page)] = trace_id
        return found if set(found) == pages else None

    per_page = receiver.wait_for(page_traces, 60)
    assert per_page is not None, "every page has its trace"
    assert len(set(per_page.values())) == len(pages), "one trace per page"

    # Reads and the OAuth callback, then nothing of what must stay inside has left.
    key = make_api_key()
    assert _status(f"{base}/v1/health/{USER_ID}/oura/daily?start=2026-01-01&end=2026-01-07",
                   headers={"Authorization": f"Bearer {key}"}) == 200  # fmt: skip
    _status(f"{base}/v1/oauth/oura/callback?code={OAUTH_CODE}&state={OAUTH_STATE}")
    time.sleep(1.0)  # the exporters' schedule is 100 ms
    conn = OuraConnection.objects.get(pk=conn.pk)
    secrets = {
        USER_ID, oura_uid, OAUTH_CODE, OAUTH_STATE, settings.OURA_CLIENT_SECRET,
        crypto.decrypt(bytes(conn.access_token_enc or b"")),
        crypto.decrypt(bytes(conn.refresh_token_enc or b"")),
        body.decode(),
    }  # fmt: skip
    spans = receiver.snapshot()
    assert any("oauth" in s.name or "oauth" in str(s.attributes) for s in spans)
    leaks = {
        (span.service, span.name, secret)
        for span in spans
        for text in span.strings()
        for secret in secrets
        if secret and secret in text
    }
    assert leaks == set()
    # The read's path names the person by keyed hash, as log lines do.
    read = [s for s in spans if "/oura/daily" in str(s.attributes.get("http.url", ""))]
    assert read, "the read request was traced"
    assert all(person_hash(USER_ID) in json.dumps(s.attributes) for s in read)
    # Served on the lean chain (LEAN_PREFIXES): its span is named and routed by the URL
    # pattern, like the ecosystem middleware's, never by the path.
    assert {(s.name, s.attributes.get("http.route")) for s in read} == {
        ("GET v1/health/<user_id:user_id>/oura/daily", "v1/health/<user_id:user_id>/oura/daily")
    }
