"""The append-only audit log: the bottom layer every app writes to (see audit/services.py)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.db import health_table


class AuditEntry(models.Model):
    """One thing that happened to someone's data. Ids and counts only, never payloads.

    Append-only and hash-chained, both by the database (audit migration 0002): a BEFORE
    INSERT trigger gives each row its place in the chain (`seq`), the previous entry's hash and
    its own; row and TRUNCATE triggers refuse rewrites except the two allowances of
    audit.services (purge of old entries, blanking an erased person's user_id). Whatever the
    application passes for seq, prev_hash and entry_hash is overwritten.

    `person_ref` is core.pseudonyms.person_hash of the person the entry is about; `user_id`
    (the plain id) is kept only for the actions in KEEPS_USER_ID (docs/phase-3/privacy.md).
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
        API_KEY_REVOKED = "api_key.revoked"
        SUBSCRIPTIONS_RENEWED = "subscriptions.renewed"
        # A staff user asked for a page or action their rights do not cover (the 403).
        STAFF_REFUSED = "staff.refused"
        # A staff user opened a person's page (health values, connection, audit trail).
        PERSON_VIEWED = "person.viewed"

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=40, choices=Action.choices)
    actor = models.CharField(max_length=150, help_text="system component, API key or staff user")
    user_id = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=20, default="oura")
    event_id = models.UUIDField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    person_ref = models.CharField(max_length=32, blank=True, default="")
    # Filled by the database trigger; null only until then (the column is NOT NULL).
    seq = models.BigIntegerField(null=True, unique=True, editable=False)
    prev_hash = models.CharField(max_length=64, default="", editable=False)
    entry_hash = models.CharField(max_length=64, default="", editable=False)

    class Meta:
        db_table = health_table("audit_log")
        ordering = ["-occurred_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            # Meta.indexes, not db_index=True: on a CharField that also builds a
            # varchar_pattern_ops copy for LIKE 'x%', which nothing here runs, and every
            # webhook writes an audit row.
            models.Index(fields=["user_id"], name="audit_user_idx"),
            models.Index(fields=["person_ref"], name="audit_person_idx"),
        ]

    # Actions whose entries keep the plain user id, because staff answer questions about a named
    # person from them (who connected, who read raw data, replays). Every other entry names the
    # person only by person_ref. docs/phase-3/privacy.md, "The audit log".
    KEEPS_USER_ID = frozenset(
        {
            Action.CONNECTION_CREATED,
            Action.CONNECTION_REVOKED,
            Action.CONNECTION_NEEDS_REAUTH,
            Action.RAW_ACCESSED,
            Action.USER_ERASED,
            Action.DEAD_LETTER_REPLAYED,
        }
    )

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.action} {self.user_id}"


class AuditCheckpoint(models.Model):
    """Where the chain resumes after a purge: the first kept entry's seq and prev_hash.

    Written by the purge in the same transaction as its DELETE; append-only like the log.
    """

    created_at = models.DateTimeField(default=timezone.now)
    next_seq = models.BigIntegerField(unique=True)
    prev_hash = models.CharField(max_length=64)
    purged = models.BigIntegerField()

    class Meta:
        db_table = health_table("audit_checkpoint")
        ordering = ["-next_seq"]

    def __str__(self) -> str:
        return f"checkpoint at seq {self.next_seq}"
