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


class WatchdogFinding(models.Model):
    """One thing the missed-webhook watchdog found (jobs/watchdog.py), and what it did.

    Written only by the watchdog, read by staff in the admin. Names a person by our user id
    (like a job, and erased with them); holds no health value: types, times, ids.
    """

    class Reason(models.TextChoices):
        STALE_DATA = "stale_data", "no news from Oura for too long"
        SUBSCRIPTION_MISSING = "subscription_missing"
        SUBSCRIPTION_EXPIRED = "subscription_expired"

    class Action(models.TextChoices):
        CATCH_UP_STARTED = "catch_up_started"
        ALREADY_COVERED = "already_covered", "already covered by an active job"
        DEFERRED = "deferred", "deferred (this run's catch-ups were used up)"
        NOT_REPAIRED = "not_repaired", "not repaired (job refused)"
        SUBSCRIPTIONS_SYNCED = "subscriptions_synced"
        SYNC_FAILED = "sync_failed"

    run_id = models.UUIDField(db_index=True, help_text="the watchdog run that found it")
    found_at = models.DateTimeField(default=timezone.now, db_index=True)
    reason = models.CharField(max_length=24, choices=Reason.choices)
    # Empty for subscriptions: they are the application's, not a person's.
    user_id = models.CharField(max_length=64, blank=True)
    data_type = models.CharField(max_length=40)
    event_type = models.CharField(max_length=10, blank=True, help_text="subscriptions only")
    stale_since = models.DateTimeField(
        null=True, blank=True,
        help_text="stale data: the last news of the type (a webhook, document or page "
        "received, or a job that asked Oura), empty if none within the look-back; "
        "a subscription: when it expired, empty if missing",
    )  # fmt: skip
    action = models.CharField(max_length=24, choices=Action.choices)
    job_id = models.UUIDField(null=True, blank=True, help_text="the catch-up or covering job")
    detail = models.CharField(max_length=200, blank=True, help_text="an error code, no values")

    class Meta:
        db_table = health_table("watchdog_findings")
        ordering = ("-found_at", "-id")

    def __str__(self) -> str:
        return f"{self.reason} {self.data_type} ({self.action})"
