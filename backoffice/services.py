"""Writes of the backoffice domain: raw-object access and retention (erasure: privacy/)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_record
from core import raw_store

logger = logging.getLogger(__name__)


def raw_object_signed_url(*, event_id: uuid.UUID, staff: str) -> str:
    """A short-lived URL to one raw object, for backoffice staff only; every issue audited."""
    from ingestion.models import RawEvent

    event = RawEvent.objects.get(event_id=event_id)
    if not event.object_key:
        raise ValueError("this event is not archived yet")
    url = raw_store.signed_url(event.object_key)
    audit_record(
        action=AuditEntry.Action.RAW_ACCESSED,
        actor=staff,
        user_id=event.user_id,
        event_id=event.event_id,
        details={"ttl_s": settings.RAW_SIGNED_URL_TTL_S},
    )
    return url


def raw_retention_purge(*, older_than_days: int | None = None, actor: str = "retention") -> int:
    """Delete raw objects and their index rows older than RAW_RETENTION_DAYS (180).

    The bucket's lifecycle rule expires objects on its own; this removes the index rows (and
    any object the rule has not reached yet) so the two never disagree.
    """
    from ingestion.models import RawEvent

    days = older_than_days or settings.RAW_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    purged = 0
    while True:
        batch = list(
            RawEvent.objects.filter(received_at__lt=cutoff, archived_at__isnull=False)
            .order_by("received_at")
            .values_list("pk", "object_key")[:500]
        )
        if not batch:
            break
        raw_store.delete_keys([key for _, key in batch if key])
        RawEvent.objects.filter(pk__in=[pk for pk, _ in batch]).delete()
        purged += len(batch)
    audit_record(
        action=AuditEntry.Action.RETENTION_PURGED,
        actor=actor,
        details={"rows": purged, "older_than_days": days},
    )
    return purged
