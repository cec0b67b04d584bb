"""Erasure, retention, signed raw access and the append-only audit log, on real services."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta

import httpx
import pytest
from django.apps import apps
from django.utils import timezone

from audit.models import AuditEntry
from backoffice.services import (
    USER_DATA_MODELS,
    raw_object_signed_url,
    raw_retention_purge,
    user_erase,
)
from core import bus, raw_store
from ingestion.models import OuraConnection, RawEvent
from jobs.models import IngestionJob
from normalized.models import Activity, DailyReadiness

pytestmark = pytest.mark.django_db(transaction=True)


def archived_event(user_id: str, *, days_old: int = 0) -> RawEvent:
    event_id = uuid.uuid4()
    key = raw_store.object_key(
        provider="oura", day=date.today(), user_id=user_id, event_id=str(event_id)
    )
    stored = raw_store.put(key, b'{"event_type":"update"}')
    return RawEvent.objects.create(
        event_id=event_id, kind="webhook", dedupe_key=uuid.uuid4().hex, user_id=user_id,
        object_key=stored.key, sha256=stored.sha256, archived_at=timezone.now(),
        received_at=timezone.now() - timedelta(days=days_old),
    )  # fmt: skip


def seed_person(user_id: str) -> RawEvent:
    now = timezone.now()
    DailyReadiness.objects.create(
        user_id=user_id, oura_id=f"r-{user_id}", day=date.today(), score=80, normalizer_version=1
    )
    Activity.objects.create(
        user_id=user_id, oura_id=f"w-{user_id}", kind="workout", day=date.today(), start=now,
        end=now, type="walking", normalizer_version=1,
    )  # fmt: skip
    IngestionJob.objects.create(
        user_id=user_id, range_start=date.today(), range_end=date.today(), data_types=["sleep"]
    )
    OuraConnection.objects.create(user_id=user_id, provider_user_id=f"oura-{user_id}")
    return archived_event(user_id)


async def _publish_normalized(user_id: str) -> None:
    nc = await bus.connect()
    js = nc.jetstream()
    await js.publish(f"health.normalized.user.{user_id}.metrics", b'{"days":1}')
    await nc.close()


async def _count_normalized(user_id: str) -> int:
    nc = await bus.connect()
    js = nc.jetstream()
    info = await js.stream_info(
        "HEALTH_NORMALIZED", subjects_filter=f"health.normalized.user.{user_id}.>"
    )
    await nc.close()
    return sum((info.state.subjects or {}).values())


def test_erasure_removes_one_person_everywhere_and_nobody_else(clean_streams) -> None:
    erased_event = seed_person("alice")
    kept_event = seed_person("bob")
    asyncio.run(_publish_normalized("alice"))
    asyncio.run(_publish_normalized("bob"))

    report = user_erase(user_id="alice", actor="test")

    for label, column in USER_DATA_MODELS:
        model = apps.get_model(label)
        assert not model._default_manager.filter(**{column: "alice"}).exists(), label
    for model in (DailyReadiness, Activity, IngestionJob, OuraConnection, RawEvent):
        assert model._default_manager.filter(user_id="bob").exists(), model
    assert raw_store.head(erased_event.object_key) is None
    assert raw_store.head(kept_event.object_key) is not None
    assert asyncio.run(_count_normalized("alice")) == 0
    assert asyncio.run(_count_normalized("bob")) == 1
    assert report.objects == 1
    assert AuditEntry.objects.filter(action="user.erased", user_id="alice").exists()
    # Running it again is harmless.
    again = user_erase(user_id="alice", actor="test")
    assert sum(again.rows.values()) == 0


def test_every_model_with_a_user_id_is_covered_by_erasure() -> None:
    covered = {label for label, _ in USER_DATA_MODELS}
    for model in apps.get_models():
        if model._meta.app_label in {"audit"}:
            continue  # the audit log is kept: it holds ids and counts, not health data
        if any(f.name == "user_id" for f in model._meta.fields):
            assert model._meta.label in covered, model._meta.label


def test_retention_purge_deletes_old_raw_events_and_their_objects() -> None:
    old = archived_event("carol", days_old=200)
    fresh = archived_event("carol", days_old=1)
    assert raw_retention_purge() == 1
    assert not RawEvent.objects.filter(pk=old.pk).exists()
    assert raw_store.head(old.object_key) is None
    assert RawEvent.objects.filter(pk=fresh.pk).exists()
    assert raw_store.head(fresh.object_key) is not None


def test_signed_url_serves_the_raw_object_and_is_audited() -> None:
    event = archived_event("dave")
    url = raw_object_signed_url(event_id=event.event_id, staff="staff:eve")
    assert "X-Amz-Expires=300" in url or "Expires=" in url
    assert httpx.get(url).content == b'{"event_type":"update"}'
    entry = AuditEntry.objects.get(action="raw.accessed")
    assert entry.actor == "staff:eve"
    assert entry.event_id == event.event_id
