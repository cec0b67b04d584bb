"""Writes of the backoffice domain: raw-object access, erasure, retention."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_record
from core import bus, raw_store

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


# Every table that holds a person's data, by model label and the column naming the person.
# A new model with a user_id column must be added here; test_erasure checks that none is
# missed.
USER_DATA_MODELS: tuple[tuple[str, str], ...] = (
    ("normalized.DailyReadiness", "user_id"),
    ("normalized.DailySleep", "user_id"),
    ("normalized.DailyActivity", "user_id"),
    ("normalized.SleepPeriod", "user_id"),
    ("normalized.Activity", "user_id"),
    ("normalized.DeletedDocument", "user_id"),
    ("jobs.IngestionJob", "user_id"),
    ("ingestion.OAuthState", "user_id"),
    ("ingestion.RawEvent", "user_id"),
    ("ingestion.OuraConnection", "user_id"),
)


@dataclass
class ErasureReport:
    rows: dict[str, int] = field(default_factory=dict)
    objects: int = 0
    bus_messages_purged: bool = False


async def _purge_user_subjects(user_id: str) -> None:
    nc = await bus.connect(name="erasure")
    try:
        js = nc.jetstream()
        await js.purge_stream("HEALTH_NORMALIZED", subject=f"health.normalized.user.{user_id}.>")
    finally:
        await nc.close()


def user_erase(*, user_id: str, actor: str) -> ErasureReport:
    """GDPR erasure of one person: revoke at Oura, then delete S3 objects, rows and bus data.

    Order matters: objects are deleted before the index rows that name them, so a failure
    half-way leaves something to retry from, never an orphan object nobody can find. Safe to
    run twice.
    """
    from ingestion.connection_services import connection_disconnect
    from ingestion.models import OuraConnection, RawEvent

    report = ErasureReport()
    connection = OuraConnection.objects.filter(user_id=user_id).first()
    if connection is not None:
        connection_disconnect(connection=connection, actor=actor)

    keys = list(
        RawEvent.objects.filter(user_id=user_id).exclude(object_key="")
        .values_list("object_key", flat=True)
    )  # fmt: skip
    report.objects = raw_store.delete_keys(keys)

    with transaction.atomic():
        for label, column in USER_DATA_MODELS:
            model: type[models.Model] = apps.get_model(label)
            deleted, _ = model._default_manager.filter(**{column: user_id}).delete()
            report.rows[label] = deleted
        audit_record(
            action=AuditEntry.Action.USER_ERASED,
            actor=actor,
            user_id=user_id,
            details={"rows": report.rows, "objects": report.objects},
        )
    asyncio.run(_purge_user_subjects(user_id))
    report.bus_messages_purged = True
    logger.info("user_erased", extra={"user_id": user_id, "objects": report.objects})
    return report


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
