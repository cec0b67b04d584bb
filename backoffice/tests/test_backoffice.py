"""Retention, signed raw access and the append-only audit log, on real services (erasure:
privacy/tests)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx
import pytest
from django.utils import timezone

from audit.models import AuditEntry
from backoffice.services import expired_purge, raw_object_signed_url, raw_retention_purge
from core import raw_store
from core.models import DeadLetter
from ingestion.models import OAuthState, RawEvent
from normalized.models import DailyReadiness

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


def test_retention_purges_rows_never_archived_and_unlinks_rows_normalized_from_them() -> None:
    never_archived = RawEvent.objects.create(
        event_id=uuid.uuid4(), kind="webhook", dedupe_key=uuid.uuid4().hex, user_id="carol",
        envelope=b'{"user_id":"carol"}', received_at=timezone.now() - timedelta(days=200),
    )  # fmt: skip
    old = archived_event("carol", days_old=200)
    row = DailyReadiness.objects.create(
        user_id="carol", oura_id="r-1", day=date.today(), score=80, normalizer_version=1,
        raw_object_key=old.object_key,
    )  # fmt: skip
    kept = DailyReadiness.objects.create(
        user_id="carol", oura_id="r-2", day=date.today() - timedelta(days=1), score=70,
        normalizer_version=1, raw_object_key="provider=oura/kept.json",
    )  # fmt: skip

    assert raw_retention_purge() == 2

    assert not RawEvent.objects.filter(pk=never_archived.pk).exists()
    row.refresh_from_db()
    kept.refresh_from_db()
    assert row.raw_object_key == ""  # says its raw document is gone, points at nothing
    assert kept.raw_object_key == "provider=oura/kept.json"


def test_expired_purge_removes_old_dead_letters_and_spent_sign_in_states(settings) -> None:
    old_letter = DeadLetter.objects.create(
        consumer="normalizer", stream="HEALTH_RAW", subject="health.raw.oura.webhook",
        stream_seq=1, data=b"{}", reason="r", error_type="Poison", attempts=5,
        created_at=timezone.now() - timedelta(days=settings.DEAD_LETTER_RETENTION_DAYS + 1),
    )  # fmt: skip
    fresh_letter = DeadLetter.objects.create(
        consumer="normalizer", stream="HEALTH_RAW", subject="health.raw.oura.webhook",
        stream_seq=2, data=b"{}", reason="r", error_type="Poison", attempts=5,
    )  # fmt: skip
    now = timezone.now()
    states = {
        name: OAuthState.objects.create(
            state_hash=uuid.uuid4().hex,
            user_id="erin",
            code_verifier_enc=b"x",
            expires_at=now + expires,
            used_at=used,
        )
        for name, expires, used in (
            ("expired", timedelta(minutes=-1), None),
            ("used", timedelta(minutes=5), now),
            ("live", timedelta(minutes=5), None),
        )
    }

    counts = expired_purge()

    assert counts["dead_letters"] == 1
    assert counts["oauth_states"] == 2
    assert not DeadLetter.objects.filter(pk=old_letter.pk).exists()
    assert DeadLetter.objects.filter(pk=fresh_letter.pk).exists()
    assert list(OAuthState.objects.values_list("pk", flat=True)) == [states["live"].pk]
    assert AuditEntry.objects.filter(action="retention.purged", details=counts).exists()


def test_signed_url_serves_the_raw_object_and_is_audited() -> None:
    event = archived_event("dave")
    url = raw_object_signed_url(event_id=event.event_id, staff="staff:eve")
    assert "X-Amz-Expires=300" in url or "Expires=" in url
    assert httpx.get(url).content == b'{"event_type":"update"}'
    entry = AuditEntry.objects.get(action="raw.accessed")
    assert entry.actor == "staff:eve"
    assert entry.event_id == event.event_id
