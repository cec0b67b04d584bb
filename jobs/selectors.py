"""Reads of the jobs domain."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from core.messages import TypeStatus
from jobs.models import IngestionJob


def job_get(*, job_id: uuid.UUID | str) -> IngestionJob | None:
    return IngestionJob.objects.filter(job_id=job_id).first()


def jobs_for_user(*, user_id: str) -> QuerySet[IngestionJob]:
    return IngestionJob.objects.filter(user_id=user_id).order_by("-created_at")


def jobs_active() -> QuerySet[IngestionJob]:
    return IngestionJob.objects.filter(status__in=IngestionJob.ACTIVE_STATUSES)


def job_type_statuses(*, job: IngestionJob) -> dict[str, TypeStatus]:
    """Each requested type's state, from the job's status, checkpoint and errors.

    Types are paged one after the other in `data_types` order, so while the job runs the
    first type neither done nor failed is the one being paged. Types a finished job never
    reached (it was cancelled, or failed as a whole) are "skipped".
    """
    checkpoint, errors = job.checkpoint or {}, job.errors or {}
    statuses: dict[str, TypeStatus] = {}
    current_seen = False
    for name in job.data_types:
        if name in errors:
            statuses[name] = "failed"
        elif (checkpoint.get(name) or {}).get("done"):
            statuses[name] = "succeeded"
        elif job.status == IngestionJob.Status.RUNNING and not current_seen:
            statuses[name], current_seen = "running", True
        elif job.status in IngestionJob.ACTIVE_STATUSES:
            statuses[name] = "pending"
        else:
            statuses[name] = "skipped"
    return statuses
