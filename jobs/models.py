"""Backfill jobs."""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.db import health_table


class IngestionJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        # Every type was attempted; some failed (named in `errors`), the others succeeded.
        SUCCEEDED_WITH_ERRORS = "succeeded_with_errors"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    TERMINAL_STATUSES = (
        Status.SUCCEEDED, Status.SUCCEEDED_WITH_ERRORS, Status.FAILED, Status.CANCELLED,
    )  # fmt: skip
    # Finished jobs whose failed data types (the keys of `errors`) can be retried.
    RETRYABLE_STATUSES = (Status.SUCCEEDED_WITH_ERRORS, Status.FAILED)

    job_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user_id = models.CharField(max_length=64)
    provider = models.CharField(max_length=20, default="oura")
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="0 to 100")
    range_start = models.DateField()
    range_end = models.DateField()
    data_types = ArrayField(models.CharField(max_length=40))
    counts = models.JSONField(default=dict, help_text="documents fetched per data type")
    checkpoint = models.JSONField(default=dict, help_text="last finished window per data type")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    errors = models.JSONField(
        default=dict,
        blank=True,
        help_text='per data type that failed: {"error": code, "detail": text, "at": ISO time}',
    )
    # The job whose failed types this one retries (POST .../retry, the admin action).
    retry_of = models.UUIDField(null=True, blank=True, editable=False, db_index=True)
    requested_by = models.CharField(max_length=150, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Run bookkeeping (jobs/services.py): the dramatiq message that should run the job, the
    # lease of the worker running it now and that worker's liveness, and how many runs began.
    message_id = models.UUIDField(null=True, blank=True, editable=False)
    lease_id = models.UUIDField(null=True, blank=True, editable=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        db_table = health_table("ingestion_jobs")
        constraints = [
            # At most one active job per identical request: a second POST gets the first job.
            models.UniqueConstraint(
                fields=["user_id", "provider", "range_start", "range_end", "data_types"],
                condition=Q(status__in=["queued", "running"]),
                name="ingestion_job_active_uniq",
            )
        ]
        indexes = [models.Index(fields=["status", "updated_at"], name="ingestion_job_status_idx")]

    def __str__(self) -> str:
        return f"job {self.job_id} ({self.status})"
