"""Writes of the jobs domain: start, cancel, run bookkeeping, status, reconciliation.

A job row and its dramatiq message go together: the message is built inside the transaction
that inserts the row (its id is stored on the row) and enqueued on commit, so no message can
name a row that does not exist. The other half (a committed row whose message never reached
the queue, or whose worker died) is the reconciler's work: `jobs_reconcile`.

A run holds a lease (`lease_id`) taken with one conditional UPDATE, and a heartbeat keeps it.
Every later write of the run is conditional on the lease, so two deliveries of the same
message, or a worker that comes back after being presumed dead, can never both write.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_record
from core import bus
from core.identifiers import validate_user_id
from core.messages import JobStatusMessage, JobTypeError, job_status_subject
from core.metrics import backfill_job_duration_seconds
from core.pseudonyms import person_hash
from ingestion.data_types import BACKFILL_TYPES, DEFAULT_TYPES, canonical, granted
from ingestion.models import OuraConnection
from ingestion.selectors import connection_for_user
from jobs.models import IngestionJob
from jobs.selectors import job_type_statuses

logger = logging.getLogger(__name__)

Status = IngestionJob.Status

# A running job whose heartbeat is older than this is presumed to have lost its worker. The
# heartbeat thread beats every HEARTBEAT_INTERVAL_S whatever the run is waiting on (a long
# Retry-After included), so this only has to cover a few missed beats.
JOB_STALE_AFTER_S = 60.0
HEARTBEAT_INTERVAL_S = 10.0
# A queued job gets this long for its message to be picked up before the reconciler checks
# that the message really is in the queue.
QUEUED_GRACE_S = 60.0
# Runs that began (claims). A job that crashes its worker this often is failed, not retried
# forever.
MAX_RUN_ATTEMPTS = 5
MAX_RANGE_DAYS = 10 * 366


class JobRequestInvalid(ValueError):
    """The request cannot become a job; `code` is the API error code."""

    def __init__(self, code: str, detail: str, http_status: int = 400) -> None:
        super().__init__(detail)
        self.code = code
        self.http_status = http_status


class LeaseLost(RuntimeError):
    """Another run owns the job now (or it was finished); this run must stop writing."""


@dataclass(frozen=True)
class JobStart:
    job: IngestionJob
    created: bool


def _enqueue(message: Any) -> None:
    from jobs.actors import run_backfill

    try:
        run_backfill.broker.enqueue(message)
    except Exception as exc:  # the row is committed; the reconciler re-sends the message
        logger.warning(
            "job_enqueue_failed",
            extra={"job_id": message.args[0], "error_type": type(exc).__name__},
        )


def _new_message(job_id: uuid.UUID) -> Any:
    from jobs.actors import run_backfill

    return run_backfill.message(str(job_id))


def _send_on_commit(job: IngestionJob) -> None:
    """Give the job a fresh message id now, enqueue that message once this commits."""
    message = _new_message(job.job_id)
    job.message_id = uuid.UUID(message.message_id)
    transaction.on_commit(lambda: _enqueue(message))


def resolve_data_types(requested: list[str] | None, scopes: list[str] | None) -> list[str]:
    """The sorted list of collections the job will page (sorted: it is part of its identity)."""
    if not requested:
        chosen = [name for name in DEFAULT_TYPES if granted(BACKFILL_TYPES[name], scopes)]
        if not chosen:
            raise JobRequestInvalid(
                "scope_not_granted", "The Oura connection grants none of the data types."
            )
        return sorted(chosen)
    names = sorted({canonical(name) for name in requested})
    unknown = [name for name in names if name not in BACKFILL_TYPES]
    if unknown:
        raise JobRequestInvalid(
            "invalid_request",
            f"Unknown data type(s): {', '.join(unknown)}. "
            f"Known: {', '.join(sorted(BACKFILL_TYPES))}.",
        )
    refused = [name for name in names if not granted(BACKFILL_TYPES[name], scopes)]
    if refused:
        raise JobRequestInvalid(
            "scope_not_granted",
            f"The Oura connection does not grant the scope for: {', '.join(refused)}.",
        )
    return names


def job_start(
    *,
    user_id: str,
    start: date,
    end: date,
    data_types: list[str] | None,
    requested_by: str,
    retry_of: uuid.UUID | None = None,
) -> JobStart:
    """Create a backfill job and enqueue it on commit, or return the identical active job.

    The partial unique index on active identical jobs decides races: a second insert waits
    for the first transaction, fails, and then reads the job that won. `retry_of` names the
    job whose failed types this one fetches again (job_retry).
    """
    validate_user_id(user_id)
    if start > end:
        raise JobRequestInvalid("invalid_request", "range.start must not be after range.end.")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise JobRequestInvalid(
            "invalid_request", f"A range may span at most {MAX_RANGE_DAYS} days."
        )
    oura = connection_for_user(user_id=user_id)
    if oura is None or oura.status == OuraConnection.Status.REVOKED:
        raise JobRequestInvalid("not_connected", "This user has no Oura connection.", 409)
    if oura.status == OuraConnection.Status.NEEDS_REAUTH:
        raise JobRequestInvalid(
            "needs_reauth", "The user's Oura authorization expired; they must connect again.", 409
        )
    types = resolve_data_types(data_types, oura.scopes)
    identity = {
        "user_id": user_id, "provider": "oura", "range_start": start, "range_end": end,
        "data_types": types,
    }  # fmt: skip
    with transaction.atomic():
        job = IngestionJob(**identity, requested_by=requested_by[:150], retry_of=retry_of)
        message = _new_message(job.job_id)
        job.message_id = uuid.UUID(message.message_id)
        try:
            with transaction.atomic():
                job.save(force_insert=True)
        except IntegrityError:
            existing = IngestionJob.objects.filter(
                **identity, status__in=IngestionJob.ACTIVE_STATUSES
            ).first()
            if existing is None:
                raise
            return JobStart(job=existing, created=False)
        transaction.on_commit(lambda: _enqueue(message))
        audit_record(
            action=AuditEntry.Action.JOB_STARTED, actor=requested_by, user_id=user_id,
            details={"job_id": str(job.job_id), "range": [start.isoformat(), end.isoformat()],
                     "data_types": types}
            | ({"retry_of": str(retry_of)} if retry_of else {}),
        )  # fmt: skip
        transaction.on_commit(lambda: job_publish_status(job=job))
    logger.info("job_started", extra={"job_id": str(job.job_id), "person": person_hash(user_id)})
    return JobStart(job=job, created=True)


def job_retry(*, job: IngestionJob, requested_by: str) -> JobStart:
    """Fetch again only the data types a finished job failed on: a new job for the same user
    and range, limited to the keys of its `errors`, that names the job in `retry_of`.

    Idempotent like job_start: while that job is queued or running, asking again returns it
    (same user, range and types: the partial unique index), so two retries never run at once.
    Raises JobRequestInvalid `job_not_retryable` (409) when no single type failed: the job is
    active, succeeded, was cancelled, or failed as a whole (the user must connect again).
    """
    if job.status in IngestionJob.ACTIVE_STATUSES:
        raise JobRequestInvalid(
            "job_not_retryable", f"The job is {job.status}; retry it once it has finished.", 409
        )
    statuses = job_type_statuses(job=job)
    if (
        job.status not in IngestionJob.RETRYABLE_STATUSES
        or not job.errors
        or "skipped" in statuses.values()  # it stopped before some types: not per type
    ):
        reasons: dict[str, str] = {
            Status.SUCCEEDED: "every data type of the job succeeded",
            Status.CANCELLED: "the job was cancelled",
        }
        reason = reasons.get(job.status, "the job failed as a whole, not per data type")
        raise JobRequestInvalid(
            "job_not_retryable", f"Nothing to retry: {reason}. Start a new backfill instead.", 409
        )
    return job_start(
        user_id=job.user_id, start=job.range_start, end=job.range_end,
        data_types=sorted(job.errors), requested_by=requested_by, retry_of=job.job_id,
    )  # fmt: skip


def job_cancel(*, job: IngestionJob, actor: str) -> IngestionJob:
    """Cancel a queued job at once; ask a running one to stop at its next page boundary.

    Finished jobs are returned unchanged (the caller decides whether that is an error).
    """
    with transaction.atomic():
        locked = IngestionJob.objects.select_for_update().get(pk=job.pk)
        if locked.status not in IngestionJob.ACTIVE_STATUSES or locked.cancel_requested:
            return locked
        now = timezone.now()
        locked.cancel_requested = True
        locked.updated_at = now
        if locked.status == Status.QUEUED:
            # Its message, when delivered, finds nothing to claim.
            locked.status = Status.CANCELLED
            locked.finished_at = now
            transaction.on_commit(lambda: _observe_finished(locked))
        locked.save()
        audit_record(
            action=AuditEntry.Action.JOB_CANCELLED, actor=actor, user_id=locked.user_id,
            details={"job_id": str(locked.job_id), "status": locked.status},
        )  # fmt: skip
        transaction.on_commit(lambda: job_publish_status(job=locked))
    logger.info("job_cancel_requested", extra={"job_id": str(locked.job_id)})
    return locked


def _observe_finished(job: IngestionJob) -> None:
    """Once the job reached a terminal state: how long it took, from its first run (or from
    its request, for a job cancelled before it ran)."""
    began = job.started_at or job.created_at
    ended = job.finished_at or timezone.now()
    backfill_job_duration_seconds.labels(outcome=job.status).observe(
        max(0.0, (ended - began).total_seconds())
    )


# -- run bookkeeping (called by jobs/backfill.py) -------------------------------------------


def _stale_before(now: datetime, stale_after_s: float = JOB_STALE_AFTER_S) -> datetime:
    return now - timedelta(seconds=stale_after_s)


def job_claim(*, job_id: uuid.UUID | str, lease_id: uuid.UUID) -> IngestionJob | None:
    """Take the job for this run, if it is queued or its last run is gone. One UPDATE."""
    now = timezone.now()
    claimable = Q(status=Status.QUEUED, cancel_requested=False) | Q(
        Q(lease_id__isnull=True) | Q(heartbeat_at__lt=_stale_before(now)),
        status=Status.RUNNING,
    )
    updated = (
        IngestionJob.objects.filter(claimable, job_id=job_id)
        .update(
            status=Status.RUNNING, lease_id=lease_id, heartbeat_at=now, updated_at=now,
            attempts=F("attempts") + 1,
        )
    )  # fmt: skip
    if not updated:
        return None
    job = IngestionJob.objects.get(job_id=job_id)
    if job.started_at is None:
        IngestionJob.objects.filter(job_id=job_id).update(started_at=now)
        job.started_at = now
    return job


def job_heartbeat(*, job_id: uuid.UUID, lease_id: uuid.UUID) -> bool:
    """Keep the lease alive; False once it is lost."""
    return bool(
        IngestionJob.objects.filter(job_id=job_id, lease_id=lease_id).update(
            heartbeat_at=timezone.now()
        )
    )


@dataclass
class PageCommit:
    cancel_requested: bool
    progress: int
    counts: dict[str, int] = field(default_factory=dict)


def job_page_commit(
    *,
    job_id: uuid.UUID,
    lease_id: uuid.UUID,
    data_type: str,
    checkpoint: dict[str, Any],
    added_documents: int,
    progress: int,
) -> PageCommit:
    """Record one finished page: the type's checkpoint, its count and the progress.

    Call inside the transaction that indexed the page, so the page and the checkpoint that
    says it is done commit together. Raises LeaseLost when this run no longer owns the job.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE health.ingestion_jobs
               SET checkpoint = checkpoint || jsonb_build_object(%(type)s, %(cp)s::jsonb),
                   counts = counts || jsonb_build_object(
                       %(type)s, COALESCE((counts ->> %(type)s)::int, 0) + %(added)s),
                   progress = GREATEST(progress, %(progress)s),
                   updated_at = %(now)s, heartbeat_at = %(now)s
             WHERE job_id = %(job)s AND lease_id = %(lease)s AND status = 'running'
            RETURNING cancel_requested, progress, counts
            """,
            {"type": data_type, "cp": _json(checkpoint), "added": added_documents,
             "progress": progress, "now": now, "job": job_id, "lease": lease_id},
        )  # fmt: skip
        row = cursor.fetchone()
    if row is None:
        raise LeaseLost(str(job_id))
    counts = row[2] if isinstance(row[2], dict) else _loads(row[2])
    return PageCommit(cancel_requested=bool(row[0]), progress=int(row[1]), counts=counts)


def job_collection_failed(
    *,
    job_id: uuid.UUID,
    lease_id: uuid.UUID,
    data_type: str,
    checkpoint: dict[str, Any],
    error: dict[str, Any],
    progress: int,
) -> PageCommit:
    """Record that one data type failed (its entry in `errors`, and its checkpoint marked done
    so a resumed run goes on with the next type), and the progress that counts it as done.

    `error` is `{"error": code, "detail": text, "at": ISO time}` (core.messages.JobTypeError):
    statuses and windows only. Raises LeaseLost when this run no longer owns the job.
    """
    JobTypeError.model_validate(error)  # what the status DTO and the bus will read back
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE health.ingestion_jobs
               SET checkpoint = checkpoint || jsonb_build_object(%(type)s, %(cp)s::jsonb),
                   errors = errors || jsonb_build_object(%(type)s, %(error)s::jsonb),
                   progress = GREATEST(progress, %(progress)s),
                   updated_at = %(now)s, heartbeat_at = %(now)s
             WHERE job_id = %(job)s AND lease_id = %(lease)s AND status = 'running'
            RETURNING cancel_requested, progress, counts
            """,
            {"type": data_type, "cp": _json(checkpoint), "error": _json(error),
             "progress": progress, "now": now, "job": job_id, "lease": lease_id},
        )  # fmt: skip
        row = cursor.fetchone()
    if row is None:
        raise LeaseLost(str(job_id))
    logger.warning(
        "job_collection_failed",
        extra={"job_id": str(job_id), "data_type": data_type, "error_type": error["error"]},
    )
    counts = row[2] if isinstance(row[2], dict) else _loads(row[2])
    return PageCommit(cancel_requested=bool(row[0]), progress=int(row[1]), counts=counts)


def job_finish(
    *,
    job: IngestionJob,
    lease_id: uuid.UUID,
    status: str,
    last_error: str = "",
    every_type_attempted: bool = False,
) -> IngestionJob:
    """End the run with a terminal status (succeeded, succeeded_with_errors, failed or
    cancelled). Progress ends at 100 when every type was attempted (failed types count as
    done), which a succeeded job always has."""
    now = timezone.now()
    with transaction.atomic():
        values: dict[str, Any] = {
            "status": status, "updated_at": now, "finished_at": now, "lease_id": None,
            "heartbeat_at": None, "last_error": last_error[:2000],
        }  # fmt: skip
        if every_type_attempted or status == Status.SUCCEEDED:
            values["progress"] = 100
        updated = IngestionJob.objects.filter(
            job_id=job.job_id, lease_id=lease_id, status=Status.RUNNING
        ).update(**values)
        if not updated:
            raise LeaseLost(str(job.job_id))
        job.refresh_from_db()
        action = (
            AuditEntry.Action.JOB_CANCELLED
            if status == Status.CANCELLED
            else AuditEntry.Action.JOB_FINISHED
        )
        audit_record(
            action=action, actor="worker", user_id=job.user_id,
            details={"job_id": str(job.job_id), "status": status, "counts": job.counts,
                     "failed_types": sorted(job.errors or {}), "last_error": job.last_error},
        )  # fmt: skip
        transaction.on_commit(lambda: job_publish_status(job=job))
        transaction.on_commit(lambda: _observe_finished(job))
    log = logger.info if status in (Status.SUCCEEDED, Status.CANCELLED) else logger.warning
    log("job_finished", extra={"job_id": str(job.job_id), "status": status})
    return job


def job_release(
    *, job: IngestionJob, lease_id: uuid.UUID, last_error: str, counts_as_attempt: bool = True
) -> None:
    """An unexpected error ends this run but not the job: free the lease so the retried
    message can resume it (a job without a lease is claimable at once).

    The heartbeat is stamped, not cleared: a cleared one reads as a dead worker to
    `jobs_reconcile`, which then sent a second message beside dramatiq's own retry, and both
    runs spent an attempt (bench/chaos.py saw a 30 s S3 outage use up every attempt in 13 s).
    The reconciler steps in only once the heartbeat is stale, when no retry came.
    A run ended by our infrastructure being away (S3, NATS, Postgres) does not count as an
    attempt: MAX_RUN_ATTEMPTS bounds runs that die or fail for reasons a retry will not cure,
    while an outage only delays the job.
    """
    IngestionJob.objects.filter(job_id=job.job_id, lease_id=lease_id).update(
        lease_id=None, heartbeat_at=timezone.now(), last_error=last_error[:2000],
        updated_at=timezone.now(),
        attempts=F("attempts") - (0 if counts_as_attempt else 1),
    )  # fmt: skip


def job_fail_unclaimed(*, job: IngestionJob, last_error: str) -> None:
    """Fail a job no run owns (the reconciler's give-up path)."""
    now = timezone.now()
    updated = IngestionJob.objects.filter(
        job_id=job.job_id, status__in=IngestionJob.ACTIVE_STATUSES
    ).update(status=Status.FAILED, last_error=last_error, finished_at=now, updated_at=now,
             lease_id=None)  # fmt: skip
    if updated:
        job.refresh_from_db()
        audit_record(
            action=AuditEntry.Action.JOB_FINISHED, actor="reconciler", user_id=job.user_id,
            details={"job_id": str(job.job_id), "status": Status.FAILED, "last_error": last_error},
        )  # fmt: skip
        _observe_finished(job)
        job_publish_status(job=job)


# -- status on the bus ----------------------------------------------------------------------


def job_status_message(job: IngestionJob) -> JobStatusMessage:
    """What watchers of a job see: ids, state, counts. Never a health value."""
    return JobStatusMessage(
        job_id=job.job_id,
        user_id=job.user_id,
        status=job.status,
        progress=job.progress,
        counts_per_type=dict(job.counts or {}),
        started_at=job.started_at,
        updated_at=job.updated_at,
        last_error=job.last_error or None,
        status_per_type=job_type_statuses(job=job),
        errors_per_type={
            name: JobTypeError.model_validate(error) for name, error in (job.errors or {}).items()
        },
    )


def job_publish_status(*, job: IngestionJob) -> None:
    """Best effort: the row is the record; a missed status message is replaced by the next."""
    try:
        bus.get_bus().publish(
            job_status_subject(job.job_id), job_status_message(job).to_bytes(), timeout=2.0
        )
    except bus.BusUnavailable:
        logger.warning("job_status_publish_failed", extra={"job_id": str(job.job_id)})


# -- reconciliation -------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    resent: list[str] = field(default_factory=list)  # queued jobs whose message was missing
    resumed: list[str] = field(default_factory=list)  # running jobs whose worker died
    cancelled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _queue_table() -> str:
    from django.conf import settings

    options = getattr(settings, "DRAMATIQ_BROKER", {}).get("OPTIONS", {})
    schema = options.get("schema") or "dramatiq"
    prefix = options.get("prefix") or ""
    return f'"{schema}"."{prefix}queue"'


def _messages_pending(message_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these dramatiq messages are still queued or being consumed."""
    if not message_ids:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT message_id FROM {_queue_table()} "  # noqa: S608 - identifiers from settings
            "WHERE message_id = ANY(%s) AND state IN ('queued', 'consumed')",
            [message_ids],
        )
        return {row[0] for row in cursor.fetchall()}


def jobs_reconcile(
    *,
    stale_after_s: float = JOB_STALE_AFTER_S,
    queued_grace_s: float = QUEUED_GRACE_S,
) -> ReconcileReport:
    """Repair jobs whose message or worker went missing. Safe to run often and concurrently.

    - queued, older than the grace period, and its message is not in the queue: send a new one;
    - running with a stale heartbeat: the worker died. Cancel it if cancel was asked, fail it
      after MAX_RUN_ATTEMPTS runs, otherwise put it back to queued (it resumes from its
      checkpoint) and send a new message.
    """
    report = ReconcileReport()
    now = timezone.now()
    with transaction.atomic():
        stale = list(
            IngestionJob.objects.select_for_update(skip_locked=True).filter(
                Q(heartbeat_at__lt=_stale_before(now, stale_after_s))
                | Q(heartbeat_at__isnull=True),
                status=Status.RUNNING,
            )
        )
        for job in stale:
            job.lease_id = None
            job.heartbeat_at = None
            job.updated_at = now
            if job.cancel_requested:
                job.status, job.finished_at = Status.CANCELLED, now
                report.cancelled.append(str(job.job_id))
            elif job.attempts >= MAX_RUN_ATTEMPTS:
                job.status, job.finished_at = Status.FAILED, now
                job.last_error = (
                    f"gave up after {job.attempts} runs that did not finish"
                    + (f"; last error: {job.last_error}" if job.last_error else "")
                )[:2000]
                report.failed.append(str(job.job_id))
            else:
                job.status = Status.QUEUED
                _send_on_commit(job)
                report.resumed.append(str(job.job_id))
            job.save()
            if job.status != Status.QUEUED:
                transaction.on_commit(lambda j=job: _observe_finished(j))  # type: ignore[misc]  # default-arg binding in a lambda
            transaction.on_commit(lambda j=job: job_publish_status(job=j))  # type: ignore[misc]  # default-arg binding in a lambda

        waiting = list(
            IngestionJob.objects.select_for_update(skip_locked=True).filter(
                status=Status.QUEUED,
                updated_at__lt=now - timedelta(seconds=queued_grace_s),
            )
        )
        pending = _messages_pending([j.message_id for j in waiting if j.message_id])
        for job in waiting:
            if job.message_id in pending:
                continue
            _send_on_commit(job)
            job.updated_at = now
            job.save(update_fields=["message_id", "updated_at"])
            report.resent.append(str(job.job_id))
    for name in ("resent", "resumed", "cancelled", "failed"):
        for job_id in getattr(report, name):
            logger.info("job_reconciled", extra={"job_id": job_id, "action": name})
    return report


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def _loads(value: Any) -> dict[str, int]:
    import json

    loaded: dict[str, int] = json.loads(value) if value else {}
    return loaded
