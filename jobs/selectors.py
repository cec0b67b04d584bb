"""Reads of the jobs domain."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from jobs.models import IngestionJob


def job_get(*, job_id: uuid.UUID | str) -> IngestionJob | None:
    return IngestionJob.objects.filter(job_id=job_id).first()


def jobs_for_user(*, user_id: str) -> QuerySet[IngestionJob]:
    return IngestionJob.objects.filter(user_id=user_id).order_by("-created_at")


def jobs_active() -> QuerySet[IngestionJob]:
    return IngestionJob.objects.filter(status__in=IngestionJob.ACTIVE_STATUSES)
