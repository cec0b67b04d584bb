"""Platform tables that belong to no single domain: dead letters of the bus consumers, and
the named staff rights every app's admin checks (no table)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.db import health_table


class DeadLetter(models.Model):
    """A message a consumer gave up on: the durable copy and the source of replays.

    `data` is the message exactly as it was on the bus. Only envelopes and object keys travel
    on the bus (ARCHITECTURE section 3), so no health payload is stored here. `reason` names
    the failure (exception type, field locations, statuses), never input values.
    """

    consumer = models.CharField(max_length=64)
    stream = models.CharField(max_length=64)
    subject = models.CharField(max_length=255)
    stream_seq = models.BigIntegerField()
    msg_id = models.CharField(max_length=200, blank=True)
    data = models.BinaryField(editable=False)
    reason = models.TextField()
    error_type = models.CharField(max_length=100)
    attempts = models.PositiveIntegerField(help_text="deliveries before it was dead-lettered")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    replayed_at = models.DateTimeField(null=True, blank=True)
    resolved = models.BooleanField(default=False)

    class Meta:
        db_table = health_table("dead_letters")
        ordering = ["-created_at", "-id"]
        constraints = [
            # A consumer that dies between writing the row and acking sees the same message
            # again; this keeps that second dead-lettering to one row.
            models.UniqueConstraint(
                fields=["consumer", "stream", "stream_seq"], name="dead_letter_message_uniq"
            )
        ]
        indexes = [models.Index(fields=["resolved", "created_at"], name="dead_letter_open_idx")]

    def __str__(self) -> str:
        return f"{self.consumer} #{self.stream_seq} {self.error_type}"


class StaffRight(models.Model):
    """No table: the holder of the backoffice's named permissions (`core.<codename>`).

    The rights live at the ground so that every app's admin can check them without importing
    a layer above it, and so that they are one list: the groups that bundle them are built at
    the top (backoffice's `setup_staff_groups`). Stock add/change/delete/view rights of each
    model stay with that model.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_raw_payload", "Open raw health documents (signed raw-object URLs)"),
            ("erase_person", "Erase a person (GDPR)"),
            ("disconnect_connection", "Disconnect an Oura connection (revoke at Oura)"),
            ("revoke_api_key", "Revoke API keys"),
            ("replay_dead_letter", "Replay dead letters"),
            ("manage_subscriptions", "Renew Oura webhook subscriptions"),
            ("cancel_job", "Cancel backfill jobs"),
            ("start_backfill", "Start backfill jobs"),
            ("view_coverage", "See data coverage per person and type"),
        ]

    def __str__(self) -> str:
        return "staff rights"
