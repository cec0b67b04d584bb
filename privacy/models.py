"""Erasure requests and the tombstones that keep an erased person out afterwards."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from core.db import health_table


class ErasureTombstone(models.Model):
    """One erased person (our user id) or Oura account, by keyed hash only
    (core.pseudonyms): deliveries, backfill pages and normalized writes for them are
    refused, so an erasure stays done while Oura keeps sending. A new consent (the person
    connects again through OAuth) lifts it."""

    class Namespace(models.TextChoices):
        USER = "user"
        OURA = "oura"

    ref = models.CharField(max_length=32, unique=True)
    namespace = models.CharField(max_length=4, choices=Namespace.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = health_table("erasure_tombstones")

    def __str__(self) -> str:
        return f"erased {self.namespace} {self.ref[:8]}…"


class ErasureRequest(models.Model):
    """One person's erasure, resumable: a crash leaves it `running` or `failed`, and running
    it again picks up where it stopped (every step is idempotent).

    The plain ids are kept only while the work is pending (it cannot find the person
    without them); they are blanked when it is done, leaving the keyed hash and the receipt.
    """

    class Status(models.TextChoices):
        REQUESTED = "requested"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    PENDING_STATUSES = (Status.REQUESTED, Status.RUNNING, Status.FAILED)

    request_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    person_ref = models.CharField(max_length=32, db_index=True)
    user_id = models.CharField(max_length=64, blank=True)
    oura_ids = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=200, blank=True)
    receipt = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = health_table("erasure_requests")
        ordering = ["-requested_at"]
        constraints = [
            # One pending erasure per person: asking twice resumes the first.
            models.UniqueConstraint(
                fields=["person_ref"],
                condition=models.Q(status__in=["requested", "running", "failed"]),
                name="erasure_one_pending_per_person",
            )
        ]

    def __str__(self) -> str:
        return f"erasure {self.request_id} ({self.status})"
