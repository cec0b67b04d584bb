"""The bus contract (core/messages.py): every producer's real output is its model's bytes.

Each test runs a real producer (Postgres, NATS and S3 are the embedded ones) and holds what
it stored or published to the model: it validates, and `to_bytes()` of the parsed model gives
back exactly the same bytes, so the model describes the wire format byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core import bus
from core.messages import (
    BUS_SCHEMAS,
    NOTIFICATION_MAX_LENGTHS,
    TRACE_HEADERS,
    BusMessage,
    DeadLetterHeaders,
    JobStatusMessage,
    NormalizedMetricsMessage,
    PageEnvelope,
    RawWebhookEnvelope,
    WebhookEnvelopeHead,
    WebhookNotification,
    WebhookSignature,
    dead_letter_subject,
    job_status_subject,
    normalized_metrics_subject,
    page_subject,
)
from ingestion.models import RawEvent
from ingestion.tests.webhook_helpers import connect, notification, raw_stream_messages, signed
from ingestion.webhook_services import webhook_accept, webhook_record, webhook_verify
from jobs.backfill import backfill_run
from jobs.services import job_start
from jobs.tests.conftest import HISTORY_END, broker, connect_user, oura_sim_config  # noqa: F401 - fixtures
from normalized import services as normalized_services
from normalized.tests.normalizer_helpers import make_spec, run, stream_messages

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]


def assert_is_model_bytes(model: type[BusMessage], data: bytes) -> None:
    assert model.from_bytes(data).to_bytes() == data


def headed_messages(subject: str) -> list[tuple[dict[str, str], bytes]]:
    """(headers, data) of every message on `subject`."""

    async def read() -> list[tuple[dict[str, str], bytes]]:
        nc = await bus.connect(name="tests")
        try:
            sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
            found: list[tuple[dict[str, str], bytes]] = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except Exception:
                    await sub.unsubscribe()
                    return found
                found.append((dict(msg.headers or {}), msg.data))
        finally:
            await nc.close()

    return asyncio.run(read())


# --- health.raw.oura.webhook: the bytes one SQL statement finishes ----------------------------


@pytest.mark.parametrize("owner", ["connected", "orphan"])
def test_the_sql_built_webhook_envelope_is_the_models_own_serialization(owner: str) -> None:
    if owner == "connected":
        connect("oura-user-1", user_id="user-1")
    # Quotes, a backslash, a newline escape and non-ASCII: the escaping of Python and of
    # Postgres's to_json must meet in the same bytes.
    body = notification(object_id='obj-"ü\\é', data_type="sleep")
    raw, headers = signed(body)
    delivery = webhook_verify(body=raw, headers=headers | {"user-agent": 'Oura/1 "✓"'})
    event = webhook_record(delivery=delivery, received_at=timezone.now())

    stored = bytes(RawEvent.objects.get(event_id=event.event_id).envelope or b"")
    assert stored == event.envelope
    envelope = RawWebhookEnvelope.from_bytes(stored)
    assert envelope.to_bytes() == stored
    assert envelope.status == ("accepted" if owner == "connected" else "orphan")
    assert envelope.user_id == ("user-1" if owner == "connected" else "")
    assert envelope.notification.object_id == 'obj-"ü\\é'
    assert str(envelope.event_id) == str(event.event_id)


def test_a_published_webhook_is_the_stored_envelope_and_validates() -> None:
    connect("oura-user-1", user_id="user-1")
    raw, headers = signed(notification())
    event = webhook_accept(body=raw, headers=headers)

    (message,) = raw_stream_messages()
    assert message.subject == "health.raw.oura.webhook"
    assert message.data == event.envelope
    assert message.msg_id == str(RawWebhookEnvelope.from_bytes(message.data).event_id)
    assert_is_model_bytes(RawWebhookEnvelope, message.data)


def test_the_notification_limits_are_the_models() -> None:
    valid = notification()
    for name, length in NOTIFICATION_MAX_LENGTHS.items():
        if name == "event_type":
            continue
        WebhookNotification.model_validate(valid | {name: "x" * length})
        with pytest.raises(ValidationError):
            WebhookNotification.model_validate(valid | {name: "x" * (length + 1)})
        for bad in ("", "  ", "a\x00b"):
            with pytest.raises(ValidationError):
                WebhookNotification.model_validate(valid | {name: bad})
    with pytest.raises(ValidationError):
        WebhookNotification.model_validate(valid | {"event_type": "patch"})


# --- health.raw.oura.{collection} and health.sync.oura.job.{jobId}.status -------------------


@pytest.mark.usefixtures("broker")
def test_backfill_pages_and_job_statuses_are_their_models_bytes(oura) -> None:
    connect_user(oura, history_days=40)
    job = job_start(
        user_id="user-1", start=HISTORY_END - timedelta(days=20), end=HISTORY_END,
        data_types=["daily_readiness"], requested_by="test",
    ).job  # fmt: skip
    assert backfill_run(job_id=job.job_id) == "succeeded"

    pages = [m for m in raw_stream_messages() if m.subject.startswith("health.raw.oura.")]
    assert pages
    for message in pages:
        assert_is_model_bytes(PageEnvelope, message.data)
        envelope = PageEnvelope.from_bytes(message.data)
        assert message.subject == page_subject(envelope.collection)
        assert message.msg_id == str(envelope.event_id)
        assert envelope.job_id == job.job_id

    statuses = stream_messages(job_status_subject(job.job_id))
    assert statuses  # the stream keeps the latest per job
    for data in statuses:
        status = JobStatusMessage.from_bytes(data)
        assert status.to_bytes() == data
        assert status.job_id == job.job_id
    assert JobStatusMessage.from_bytes(statuses[-1]).status == "succeeded"
    # The bytes watchers always got: json.dumps's defaults, camelCase keys.
    assert json.loads(statuses[-1])["jobId"] == str(job.job_id)
    assert b'"status": "succeeded"' in statuses[-1]


@pytest.mark.usefixtures("broker")
def test_a_job_with_a_failed_type_says_so_on_the_bus(oura) -> None:
    connect_user(oura, history_days=40)
    oura.config.missing_collections = {"vO2_max"}
    job = job_start(
        user_id="user-1", start=HISTORY_END - timedelta(days=20), end=HISTORY_END,
        data_types=["daily_readiness", "vO2_max"], requested_by="test",
    ).job  # fmt: skip
    assert backfill_run(job_id=job.job_id) == "succeeded_with_errors"

    statuses = [
        JobStatusMessage.from_bytes(d) for d in stream_messages(job_status_subject(job.job_id))
    ]
    last = statuses[-1]
    assert last.to_bytes() == stream_messages(job_status_subject(job.job_id))[-1]
    assert (last.status, last.progress) == ("succeeded_with_errors", 100)
    assert last.status_per_type == {"daily_readiness": "succeeded", "vO2_max": "failed"}
    assert last.errors_per_type["vO2_max"].error == "not_found"
    wire = json.loads(last.to_bytes())
    assert wire["errorsPerType"]["vO2_max"]["detail"].startswith("vO2_max ")
    assert wire["statusPerType"]["vO2_max"] == "failed"


def test_a_job_status_written_before_per_type_fields_still_parses() -> None:
    older = (
        b'{"jobId": "6a1f3c2e-8b7d-4e4f-9a0b-1c2d3e4f5a6b", "userId": "u", "status": "failed", '
        b'"progress": 40, "countsPerType": {}, "startedAt": null, '
        b'"updatedAt": "2026-01-02T03:04:05+00:00", "lastError": "x"}'
    )
    status = JobStatusMessage.from_bytes(older)
    assert (status.status_per_type, status.errors_per_type) == ({}, {})


# --- health.normalized.user.{userId}.metrics ------------------------------------------------


def test_the_normalized_announcement_is_its_models_bytes() -> None:
    published = normalized_services.normalized_publish(
        user_id="user-1", collection="workout", change="upsert", ids=["b", "a"],
        days=[date(2026, 1, 2)], source_event_id=str(uuid.uuid4()),
    )  # fmt: skip
    assert published
    (data,) = stream_messages(normalized_metrics_subject("user-1"))
    message = NormalizedMetricsMessage.from_bytes(data)
    assert message.to_bytes() == data
    assert (message.ids, message.days) == (["a", "b"], [date(2026, 1, 2)])
    assert set(json.loads(data)) >= {"userId", "dataType", "normalizerVersion", "occurredAt"}


# --- health.dlq.{consumer} ------------------------------------------------------------------


def test_a_dead_letter_carries_the_original_bytes_and_the_contract_headers() -> None:
    poison = b'{"event_id": "not an envelope"}'
    bus.get_bus().publish("health.raw.oura.webhook", poison, msg_id=f"poison-{uuid.uuid4()}")
    spec = make_spec()
    stats = run(spec)
    assert stats.dead_lettered == 1

    ((headers, data),) = headed_messages(dead_letter_subject("normalizer"))
    assert data == poison
    dead = DeadLetterHeaders.from_headers(headers)
    assert dead.original_subject == "health.raw.oura.webhook"
    assert dead.error_type == "BadEnvelope"
    assert dead.msg_id.startswith("dlq-normalizer-HEALTH_RAW-")
    assert {k: headers[k] for k in dead.as_headers()} == dead.as_headers()


# --- the contract itself ----------------------------------------------------------------------


def test_models_round_trip_through_their_bytes() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    job = JobStatusMessage(
        job_id=uuid.uuid4(), user_id="u", status="running", progress=5,
        counts_per_type={"sleep": 3}, started_at=now, updated_at=now, last_error=None,
    )  # fmt: skip
    assert JobStatusMessage.from_bytes(job.to_bytes()) == job
    assert b'"updatedAt": "2026-01-02T03:04:05.000678+00:00"' in job.to_bytes()
    headers = DeadLetterHeaders.of(
        consumer="normalizer", stream="HEALTH_RAW", stream_seq=7,
        original_subject="health.raw.oura.webhook", dead_letter_id=3, error_type="Poison",
    )  # fmt: skip
    assert DeadLetterHeaders.from_headers(headers.as_headers()) == headers
    with pytest.raises(ValidationError):  # a health value cannot ride on the announcement
        NormalizedMetricsMessage.model_validate(
            {"userId": "u", "provider": "oura", "dataType": "sleep", "change": "upsert",
             "days": [], "ids": [], "normalizerVersion": 1, "occurredAt": now, "score": 80}
        )  # fmt: skip


# Any text webhook_verify lets through: strict UTF-8 has no lone surrogates, Postgres text
# no NUL, and a notification's fields are not blank.
_CHARACTERS = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
_TEXT = st.text(_CHARACTERS, min_size=1, max_size=30).filter(str.strip)


@settings(max_examples=200, deadline=None)
@given(
    notification=st.fixed_dictionaries({name: _TEXT for name in NOTIFICATION_MAX_LENGTHS})
    .map(lambda fields: fields | {"event_type": "update"}),
    received_at=st.datetimes(timezones=st.just(UTC)) | st.datetimes(
        timezones=st.sampled_from([timezone.get_fixed_timezone(m) for m in (-330, 0, 60)])),
    body=st.text(_CHARACTERS, max_size=80),
    headers=st.dictionaries(st.sampled_from(["content-type", "user-agent", "x-oura-timestamp"]),
                            _TEXT),
    timestamp=st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    secret=st.sampled_from(["current", "previous"]),
    form=st.sampled_from(["raw", "compact", "compact_ascii"]),
)  # fmt: skip
def test_the_request_paths_envelope_head_is_the_models_bytes(
    notification: dict[str, str], received_at: datetime, body: str, headers: dict[str, str],
    timestamp: str, secret: str, form: str,
) -> None:  # fmt: skip
    """WebhookEnvelopeHead.checked_bytes skips the model to save CPU; its bytes must still be
    the model's, for any text the request path lets through."""
    event_id, dedupe_key = uuid.uuid4(), "ab" * 32
    model = WebhookEnvelopeHead(
        envelope_version=1, event_id=event_id, provider="oura", kind="webhook",
        received_at=received_at, dedupe_key=dedupe_key,
        notification=WebhookNotification.model_validate(notification), body=body,
        headers=headers, signature=WebhookSignature(
            algorithm="hmac-sha256", timestamp=timestamp, secret=secret, form=form),
    )  # fmt: skip
    assert WebhookEnvelopeHead.checked_bytes(
        event_id=event_id, received_at=received_at, dedupe_key=dedupe_key,
        notification=notification | {"ignored": "x"}, body=body, headers=headers,
        timestamp=timestamp, secret=secret, form=form,
    ) == model.to_bytes()  # fmt: skip


def test_subjects_refuse_tokens_that_are_nats_syntax() -> None:
    assert page_subject("daily_sleep") == "health.raw.oura.daily_sleep"
    assert dead_letter_subject("normalizer") == "health.dlq.normalizer"
    job_id = uuid.uuid4()
    assert job_status_subject(str(job_id)) == f"health.sync.oura.job.{job_id}.status"
    for bad in ("a.b", "*", ">", "webhook", ""):
        with pytest.raises(ValueError, match=r"collection|webhook"):
            page_subject(bad)
    with pytest.raises(ValueError, match="UUID"):
        job_status_subject("x.>")


def test_every_schema_names_its_subject_and_the_trace_headers() -> None:
    assert TRACE_HEADERS == ("traceparent", "tracestate", "baggage")
    for stem, model in BUS_SCHEMAS.items():
        schema = model.model_json_schema(mode="serialization")
        assert schema["x-nats-subject"].startswith("health."), stem
        assert schema["x-nats-headers"][-3:] == list(TRACE_HEADERS), stem
