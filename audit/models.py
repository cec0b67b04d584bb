"""The append-only audit log: the bottom layer every app writes to (see audit/services.py)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.db import health_table


class AuditEntry(models.Model):
    """One thing that happened to someone's data. Ids and counts only, never payloads.

    Append-only: a database trigger (backoffice migration 0001, where the table was born)
    refuses UPDATE and DELETE.
    """

    class Action(models.TextChoices):
        WEBHOOK_RECEIVED = "webhook.received"
        WEBHOOK_ORPHANED = "webhook.orphaned"
        WEBHOOK_DROPPED = "webhook.dropped"
        CONNECTION_CREATED = "connection.created"
        CONNECTION_REVOKED = "connection.revoked"
        CONNECTION_NEEDS_REAUTH = "connection.needs_reauth"
        JOB_STARTED = "job.started"
        JOB_FINISHED = "job.finished"
        JOB_CANCELLED = "job.cancelled"
        RAW_ACCESSED = "raw.accessed"
        USER_ERASED = "user.erased"
        RETENTION_PURGED = "retention.purged"
        DEAD_LETTER_REPLAYED = "dead_letter.replayed"
        UPKEEP_RUN = "upkeep.run"

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=40, choices=Action.choices)
    actor = models.CharField(max_length=150, help_text="system component, API key or staff user")
    user_id = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=20, default="oura")
    event_id = models.UUIDField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = health_table("audit_log")
        ordering = ["-occurred_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            # Meta.indexes, not db_index=True: on a CharField that also builds a
            # varchar_pattern_ops copy for LIKE 'x%', which nothing here runs, and every
            # webhook writes an audit row.
            models.Index(fields=["user_id"], name="audit_user_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.action} {self.user_id}"
