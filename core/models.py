"""Platform tables that belong to no single domain: dead letters of the bus consumers."""

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
