"""Dead-letter services: record a message a consumer gave up on, and replay it.

The consumer runner, `manage.py replay_dead_letters` and the admin action all call these.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from core import audit_port, bus
from core.consumers import MessageMeta
from core.models import DeadLetter

logger = logging.getLogger(__name__)

_MAX_REASON = 2000


def dead_letter_record(
    *, meta: MessageMeta, data: bytes, reason: str, error_type: str
) -> DeadLetter:
    """One row per (consumer, stream, stream sequence): a repeated dead-lettering of the same
    message (the process died before its ack) updates the attempts instead of adding a row."""
    dead_letter, created = DeadLetter.objects.get_or_create(
        consumer=meta.consumer,
        stream=meta.stream,
        stream_seq=meta.stream_seq,
        defaults={
            "subject": meta.subject,
            "msg_id": meta.msg_id[:200],
            "data": data,
            "reason": reason[:_MAX_REASON],
            "error_type": error_type[:100],
            "attempts": meta.num_delivered,
        },
    )
    if not created:
        DeadLetter.objects.filter(pk=dead_letter.pk).update(attempts=meta.num_delivered)
    return dead_letter


def dead_letters_open() -> QuerySet[DeadLetter]:
    return DeadLetter.objects.filter(resolved=False).order_by("created_at", "id")


def dead_letter_replay(*, dead_letter: DeadLetter, actor: str) -> str:
    """Publish the original bytes to the original subject again; returns the new msg id.

    A fresh Nats-Msg-Id, because the original id is still inside the stream's duplicate
    window for an hour and JetStream would silently drop the replay. The consumers are
    idempotent, so a replay of a message that did get through is harmless. The row is marked
    resolved: if the cause is not fixed, the replayed message is dead-lettered as a new row.
    """
    msg_id = f"replay-{dead_letter.pk}-{uuid.uuid4()}"
    bus.get_bus().publish(dead_letter.subject, bytes(dead_letter.data), msg_id=msg_id)
    with transaction.atomic():
        DeadLetter.objects.filter(pk=dead_letter.pk).update(
            replayed_at=timezone.now(), resolved=True
        )
        audit_port.record(
            action="dead_letter.replayed",  # audit.models.AuditEntry.Action.DEAD_LETTER_REPLAYED
            actor=actor,
            details={
                "dead_letter_id": dead_letter.pk,
                "consumer": dead_letter.consumer,
                "subject": dead_letter.subject,
                "error_type": dead_letter.error_type,
            },
        )
    logger.info(
        "dead_letter_replayed",
        extra={"dead_letter_id": dead_letter.pk, "consumer": dead_letter.consumer},
    )
    return msg_id


def dead_letters_replay(*, queryset: QuerySet[DeadLetter], actor: str) -> int:
    replayed = 0
    for dead_letter in queryset.order_by("created_at", "id"):
        dead_letter_replay(dead_letter=dead_letter, actor=actor)
        replayed += 1
    return replayed


def dead_letters_purge(*, older_than_days: int) -> int:
    """Retention: dead letters older than `older_than_days` (their copies on HEALTH_DLQ age
    out with the stream's max_age, DEAD_LETTER_RETENTION_DAYS as well)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = DeadLetter.objects.filter(created_at__lt=cutoff).delete()
    return deleted
