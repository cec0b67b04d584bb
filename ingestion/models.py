"""Raw events: the index of everything received from Oura, and its outbox state."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.db import health_table


class RawEvent(models.Model):
    """One raw thing from Oura: a webhook delivery, a fetched document or a backfill page.

    The row is written in the same transaction that accepts the event, with the envelope
    bytes inline (`envelope`), so Postgres is the first durable copy. The relay then archives
    the envelope to S3, records `object_key` and `sha256`, and clears `envelope`; it also
    publishes rows whose `published_at` is still empty.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        DOCUMENT = "document"
        PAGE = "page"

    class Status(models.TextChoices):
        ACCEPTED = "accepted"
        ORPHAN = "orphan", "orphan (no connection for this Oura user)"
        DROPPED = "dropped", "dropped (connection revoked)"
        TOMBSTONE = "tombstone", "tombstone (document deleted at Oura)"

    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=20, default="oura")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACCEPTED)
    dedupe_key = models.CharField(max_length=64, help_text="sha256 of the provider's identity")
    user_id = models.CharField(max_length=64, blank=True, help_text="our user id, if known")
    provider_user_id = models.CharField(max_length=128, blank=True)
    data_type = models.CharField(max_length=40, blank=True)
    event_type = models.CharField(max_length=10, blank=True)
    object_id = models.CharField(max_length=128, blank=True)
    event_time = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    envelope = models.BinaryField(null=True, blank=True, editable=False)
    object_key = models.CharField(max_length=512, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.IntegerField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    publish_subject = models.CharField(max_length=200, blank=True)

    class Meta:
        db_table = health_table("raw_events_index")
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="raw_event_id_uniq"),
            models.UniqueConstraint(fields=["provider", "dedupe_key"], name="raw_dedupe_uniq"),
        ]
        indexes = [
            # The relay's two work queues stay small; partial indexes keep them cheap to scan.
            models.Index(
                fields=["received_at"], name="raw_unarchived_idx",
                condition=Q(archived_at__isnull=True),
            ),
            models.Index(
                fields=["received_at"], name="raw_unpublished_idx",
                condition=Q(published_at__isnull=True) & ~Q(publish_subject=""),
            ),
            models.Index(fields=["user_id", "received_at"], name="raw_user_idx"),
            models.Index(fields=["provider_user_id", "data_type", "object_id"], name="raw_obj_idx"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.kind} {self.event_id}"
