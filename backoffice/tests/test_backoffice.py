"""Retention, signed raw access and the append-only audit log, on real services (erasure:
privacy/tests)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx
import pytest
from django.utils import timezone

from audit.models import AuditEntry
from backoffice.services import raw_object_signed_url, raw_retention_purge
from core import raw_store
from ingestion.models import RawEvent

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
