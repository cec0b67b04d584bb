"""Building blocks for the normalizer tests: connected users, raw messages, a test consumer."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from django.utils import timezone

from core import bus, raw_store
from core.consumers import ConsumerSpec, RunStats, get_consumer, run_consumer
from core.messages import (
    PageEnvelope,
    PageWindow,
    RawWebhookEnvelope,
    WebhookNotification,
    WebhookSignature,
)
from ingestion import crypto
from ingestion.models import OuraConnection
from normalized.models import (
    Activity,
    DailyActivity,
    DailyCardiovascularAge,
    DailyReadiness,
    DailyResilience,
    DailySleep,
    DailySpO2,
    DailyStress,
    RestModePeriod,
    SleepPeriod,
    SleepTime,
    Tag,
    VO2Max,
)
from oura_simulator import OuraSimulator

FIXTURES = Path("/work/shared/oura/fixtures")
if not FIXTURES.exists():  # the vendored copy travels with the repository
    FIXTURES = Path(__file__).resolve().parents[2] / "oura_simulator/tests/contract_data/fixtures"

# Collection responses recorded from Oura (plus the two synthetic ones the contract lists).
FIXTURE_PAGES = {
    "daily_activity": "daily_activity.json",
    "daily_cardiovascular_age": "daily_cardiovascular_age.json",
    "daily_readiness": "daily_readiness.json",
    "daily_resilience": "daily_resilience.json",
    "daily_sleep": "daily_sleep.json",
    "daily_spo2": "daily_spo2.json",
    "daily_stress": "daily_stress.json",
    "enhanced_tag": "enhanced_tag.json",
    "heartrate": "heartrate.json",
    "rest_mode_period": "rest_mode_period.json",
    "ring_configuration": "ring_configuration.json",
    "session": "session.json",
    "sleep": "sleep.json",
    "sleep_time": "sleep_time.json",
    "tag": "tag.SYNTHETIC.json",
    "vO2_max": "vO2_max.SYNTHETIC.json",
    "workout": "workout.json",
}
ROW_MODELS = (
    DailyReadiness, DailySleep, DailyActivity, SleepPeriod, Activity,
    DailyStress, DailySpO2, DailyResilience, DailyCardiovascularAge, VO2Max,
    SleepTime, Tag, RestModePeriod,
)  # fmt: skip
# Columns that legitimately change when the same data is written again.
VOLATILE = {"id", "updated_at", "source_observed_at"}


def fixture_documents(collection: str) -> list[dict[str, Any]]:
    body = json.loads((FIXTURES / FIXTURE_PAGES[collection]).read_text())
    documents: list[dict[str, Any]] = body["data"]
    return documents


def connect_user(oura: OuraSimulator, user_id: str = "user-1") -> OuraConnection:
    sim_user = oura.add_user()
    tokens = oura.issue_tokens(sim_user.oura_user_id)
    return OuraConnection.objects.create(
        user_id=user_id,
        provider_user_id=sim_user.oura_user_id,
        scopes=str(tokens.get("scope", "")).split(),
        access_token_enc=crypto.encrypt(tokens["access_token"]),
        refresh_token_enc=crypto.encrypt(tokens["refresh_token"]),
        access_token_expires_at=timezone.now() + timedelta(seconds=int(tokens["expires_in"])),
    )


def webhook_envelope(
    conn: OuraConnection, event_type: str, data_type: str, object_id: str
) -> dict[str, Any]:
    """What webhook ingestion publishes on health.raw.oura.webhook, built with its model."""
    notification = WebhookNotification.model_validate(
        {
            "event_type": event_type,
            "data_type": data_type,
            "object_id": object_id,
            "event_time": datetime.now(UTC).isoformat(),
            "user_id": conn.provider_user_id,
        }
    )
    event_id = uuid.uuid4()
    envelope = RawWebhookEnvelope(
        envelope_version=1,
        event_id=event_id,
        provider="oura",
        kind="webhook",
        received_at=datetime.now(UTC),
        dedupe_key=hashlib.sha256(event_id.bytes).hexdigest(),
        status="accepted",
        user_id=conn.user_id,
        notification=notification,
        body=notification.model_dump_json(),
        headers={},
        signature=WebhookSignature(
            algorithm="hmac-sha256", timestamp="0", secret="current", form="raw"
        ),
    )
    return dict(json.loads(envelope.to_bytes()))


def page_envelope(
    conn: OuraConnection,
    collection: str,
    documents: list[dict[str, Any]],
    *,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """Store a page in S3 the way the backfill job does and return its bus envelope."""
    received_at = received_at or datetime.now(UTC)
    event_id = uuid.uuid4()
    data = json.dumps({"data": documents, "next_token": None}).encode()
    key = raw_store.object_key(
        provider="oura", day=received_at.date(), user_id=conn.user_id, event_id=str(event_id)
    )
    stored = raw_store.put(key, data)
    envelope = PageEnvelope(
        event_id=event_id,
        provider="oura",
        kind="page",
        user_id=conn.user_id,
        provider_user_id=conn.provider_user_id,
        collection=collection,
        object_key=stored.key,
        sha256=stored.sha256,
        document_count=len(documents),
        job_id=uuid.uuid4(),
        window=PageWindow(start=date(2024, 1, 1), end=date(2024, 12, 31)),
        received_at=received_at,
    )
    return dict(json.loads(envelope.to_bytes()))


def subject_of(envelope: dict[str, Any]) -> str:
    if envelope["kind"] == "webhook":
        return "health.raw.oura.webhook"
    return f"health.raw.oura.{envelope['collection']}"


def publish(envelope: dict[str, Any], *, msg_id: str | None = None) -> None:
    bus.get_bus().publish(
        subject_of(envelope), envelope, msg_id=msg_id or f"{envelope['event_id']}-{uuid.uuid4()}"
    )


def make_spec(**overrides: Any) -> ConsumerSpec:
    """The normalizer with its own durable (tests do not share state) and short delays.

    One durable for both lanes' subjects (webhooks and pages): the lanes share their handler,
    and these tests are about what it does, not about which lane brings the message.
    """
    values: dict[str, Any] = {
        "durable": f"test-normalizer-{uuid.uuid4().hex[:10]}",
        "retry_delays_s": (0.2,),
        "filter_subject": "health.raw.oura.>",
        "filter_subjects": (),
    }
    return dataclasses.replace(get_consumer("normalizer"), **(values | overrides))


def run(spec: ConsumerSpec, *, idle_exit_s: float = 1.5, **kwargs: Any) -> RunStats:
    return run_consumer(spec, idle_exit_s=idle_exit_s, **kwargs)


def delete_durable(spec: ConsumerSpec) -> None:
    async def _delete() -> None:
        nc = await bus.connect(name="tests")
        try:
            await nc.jetstream().delete_consumer(spec.stream, spec.durable)
        except Exception:  # noqa: S110 - already gone is fine
            pass
        finally:
            await nc.close()

    asyncio.run(_delete())


def stream_messages(subject: str) -> list[bytes]:
    """Every message currently on `subject` (reads with an ephemeral consumer)."""

    async def _read() -> list[bytes]:
        nc = await bus.connect(name="tests")
        try:
            js = nc.jetstream()
            sub = await js.subscribe(subject, ordered_consumer=True)
            found: list[bytes] = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except Exception:
                    await sub.unsubscribe()
                    return found
                found.append(msg.data)
        finally:
            await nc.close()

    return asyncio.run(_read())


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every normalized row, minus the bookkeeping that a rewrite may change."""
    return {
        model.__name__: sorted(
            (
                {k: v for k, v in row.items() if k not in VOLATILE}
                for row in model._default_manager.values()
            ),
            key=lambda r: (r["user_id"], str(r.get("kind", "")), r["oura_id"]),
        )
        for model in ROW_MODELS
    }
