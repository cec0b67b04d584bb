"""The backfill run: page every requested Oura collection over date windows.

For each page: the response bytes go to S3 as received, a RawEvent(kind="page") indexes them,
the job's checkpoint for that collection advances in the same transaction, and the page
message is published to `health.raw.oura.{collection}` for the normalizer. A run killed at
any point resumes from the checkpoint: a page is either committed with its checkpoint (and
is not fetched again) or not at all (and is fetched again under the same dedupe key, so its
S3 key, event id and Nats-Msg-Id are the same). A page committed but not yet published is
published by the next run (and by the ingestion relay meanwhile).

Failure policy: the Oura client already retries 5xx/timeouts with jittered backoff, honours
Retry-After and refreshes on 401. Here a page gets PAGE_ATTEMPTS such rounds. A collection
that still fails (or that Oura answers 404 for, or a 4xx not worth retrying) is recorded in
the job's `errors` under its name and the run goes on with the next collection: the job
ends `succeeded_with_errors` when others succeeded, `failed` when every one failed, and the
failed ones can be retried alone (services.job_retry). What makes every collection
unfetchable ends the job at once as before: a refused authorization (failed), a cancel, an
erasure (cancelled), a lost lease. Nothing ends as "succeeded" with a collection missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import httpx
from django.db import InterfaceError, OperationalError, transaction
from django.db import connection as db_connection
from django.utils import timezone
from opentelemetry.context import Context

from core import bus, raw_store, tracing
from core.db import person_lock
from core.messages import PageEnvelope, PageWindow, TypeErrorCode, page_subject
from core.metrics import job_backfill_inflight
from ingestion.data_types import BACKFILL_TYPES, DataType, Window, windows
from ingestion.models import OuraConnection, RawEvent
from ingestion.oura_client import (
    NeedsReauth,
    OuraCircuitOpen,
    OuraRateLimited,
    OuraRequestError,
    OuraUnavailable,
    get_client,
)
from ingestion.rate_budget import BudgetExhausted, Priority
from ingestion.selectors import connection_for_user
from jobs import services
from jobs.models import IngestionJob
from privacy.selectors import oura_account_erased

logger = logging.getLogger(__name__)

Status = IngestionJob.Status

# uuid5 namespace of page event ids: event_id = uuid5(PAGE_NAMESPACE, dedupe_key). Fixed
# forever, or re-run pages would get new ids and be published twice.
PAGE_NAMESPACE = uuid.UUID("6a1f3c2e-8b7d-5e4f-9a0b-1c2d3e4f5a6b")
PAGE_ATTEMPTS = 3
PAGE_RETRY_BASE_S = 1.0  # pause between a page's attempts, times the attempt number
# How long one budget acquisition may wait before we look at cancel/lease again.
BUDGET_WAIT_S = 10.0
PUBLISH_TIMEOUT_S = 2.0
# Errors that mean one of our own services is away: the run ends, the job waits for it.
INFRASTRUCTURE_AWAY = (
    raw_store.RawStoreUnavailable, bus.BusUnavailable, OperationalError, InterfaceError,
)  # fmt: skip
MAX_ERROR_DETAIL = 500  # core.messages.JobTypeError.detail
RECONNECT = "the user must connect again, then start a new backfill."
REAUTH_ERROR = f"Oura refused the user's authorization (revoked or expired): {RECONNECT}"


class CollectionFailed(Exception):
    """A collection kept failing. The message names the collection, window and cause (HTTP
    statuses, never a body or token); `error` is its JobTypeError code."""

    def __init__(self, message: str, *, error: TypeErrorCode = "retries_exhausted") -> None:
        super().__init__(message)
        self.error: TypeErrorCode = error


class Cancelled(Exception):
    pass


# -- identities ----------------------------------------------------------------------------


def page_dedupe_key(job_id: uuid.UUID | str, collection: str, window: Window, page: int) -> str:
    start, end = window.start.isoformat(), window.end.isoformat()
    raw = f"oura|page|{job_id}|{collection}|{start}|{end}|{page}"
    return hashlib.sha256(raw.encode()).hexdigest()


def page_event_id(dedupe_key: str) -> uuid.UUID:
    return uuid.uuid5(PAGE_NAMESPACE, dedupe_key)


# -- checkpoint ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a collection stands: the window being paged, the next page index in it and the
    token for that page (None on a window's first page)."""

    window: int = 0
    page: int = 0
    next_token: str | None = None
    done: bool = False

    @classmethod
    def load(cls, raw: Any) -> Cursor:
        if not isinstance(raw, dict):
            return cls()
        return cls(
            window=int(raw.get("window", 0)),
            page=int(raw.get("page", 0)),
            next_token=raw.get("next_token") or None,
            done=bool(raw.get("done", False)),
        )

    def dump(self) -> dict[str, Any]:
        return {"window": self.window, "page": self.page, "next_token": self.next_token,
                "done": self.done}  # fmt: skip

    def after(self, next_token: str | None, window_count: int) -> Cursor:
        if next_token:
            return Cursor(self.window, self.page + 1, next_token)
        following = self.window + 1
        return Cursor(following, 0, None, done=following >= window_count)


def _progress(job: IngestionJob, plan: dict[str, list[Window]], cursors: dict[str, Cursor]) -> int:
    total = sum(len(w) for w in plan.values()) or 1
    done = sum(len(plan[t]) if c.done else c.window for t, c in cursors.items())
    return min(99, done * 100 // total)


# -- the lease heartbeat -------------------------------------------------------------------


class Heartbeat(threading.Thread):
    """Keeps the run's lease fresh while the main thread waits on Oura, the budget or S3,
    and notices a cancel request in the meantime."""

    def __init__(self, job_id: uuid.UUID, lease_id: uuid.UUID, interval_s: float) -> None:
        super().__init__(daemon=True, name=f"job-heartbeat-{job_id}")
        self.job_id, self.lease_id, self.interval_s = job_id, lease_id, interval_s
        self.stopping = threading.Event()
        self.lost = False
        self.cancel_requested = False

    def beat(self) -> None:
        with db_connection.cursor() as cursor:
            cursor.execute(
                "UPDATE health.ingestion_jobs SET heartbeat_at = now() "
                "WHERE job_id = %s AND lease_id = %s RETURNING cancel_requested",
                [self.job_id, self.lease_id],
            )
            row = cursor.fetchone()
        if row is None:
            self.lost = True
        else:
            self.cancel_requested = self.cancel_requested or bool(row[0])

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.interval_s) and not self.lost:
                try:
                    self.beat()
                except Exception as exc:  # a missed beat is fine; a few make us stale
                    logger.warning("job_heartbeat_failed", extra={"error_type": type(exc).__name__})
        finally:
            db_connection.close()

    def stop(self) -> None:
        self.stopping.set()

    def check(self) -> None:
        if self.lost:
            raise services.LeaseLost(str(self.job_id))
        if self.cancel_requested:
            raise Cancelled


# -- one page -------------------------------------------------------------------------------


def _fetch(
    oura: OuraConnection, data_type: DataType, window: Window, token: str | None, hb: Heartbeat
) -> httpx.Response:
    params = window.query(data_type) | ({"next_token": token} if token else {})
    where = f"{data_type.name} {window.start.isoformat()}..{window.end.isoformat()}"
    failures = 0
    while True:
        hb.check()
        try:
            response = get_client().get(
                oura, f"/v2/usercollection/{data_type.name}", params,
                priority=Priority.BACKFILL, max_budget_wait_s=BUDGET_WAIT_S,
            )  # fmt: skip
        except BudgetExhausted as exhausted:
            # Backfill's share of this window is used up (live fetches keep the rest): wait
            # for the next window, a slice at a time so cancel and the lease are seen.
            time.sleep(max(0.05, min(exhausted.retry_after_s, BUDGET_WAIT_S)))
            continue
        except OuraCircuitOpen as refused:
            # Oura is down for everyone (the breaker is open): wait, without counting an
            # attempt, a slice at a time so cancel and the lease are seen.
            time.sleep(max(0.05, min(refused.retry_after_s or 1.0, BUDGET_WAIT_S)))
            continue
        except OuraRateLimited as limited:
            # A 429 says "wait", not "this page is broken" (Oura's window can be 300 s): the
            # client has paused every process until Retry-After; wait it out like an
            # exhausted budget, without counting an attempt (found by bench/chaos.py).
            logger.info("backfill_rate_limited", extra={"data_type": data_type.name})
            time.sleep(max(0.05, min(limited.retry_after_s, BUDGET_WAIT_S)))
            continue
        except OuraUnavailable as exc:
            failures += 1
            if failures >= PAGE_ATTEMPTS:
                raise CollectionFailed(
                    f"{where}: {exc} (gave up after {failures} attempts)"
                ) from None
            logger.info(
                "backfill_page_retry",
                extra={"data_type": data_type.name, "error_type": type(exc).__name__},
            )
            time.sleep(PAGE_RETRY_BASE_S * random.uniform(1.0, 2.0) * failures)
            continue
        except OuraRequestError as exc:
            raise CollectionFailed(f"{where}: {exc} (not retried)", error="request_error") from None
        if response.status_code == 404:
            raise CollectionFailed(
                f"{where}: Oura answered 404 for the collection", error="not_found"
            )
        return response


def _message(
    *, job: IngestionJob, oura: OuraConnection, collection: str, window: Window,
    event_id: uuid.UUID, stored: raw_store.StoredObject, document_count: int,
) -> bytes:  # fmt: skip
    """The page's message: the bus contract's PageEnvelope (core/messages.py)."""
    return PageEnvelope(
        event_id=event_id,
        provider="oura",
        kind="page",
        user_id=job.user_id,
        provider_user_id=oura.provider_user_id,
        collection=collection,
        object_key=stored.key,
        sha256=stored.sha256,
        document_count=document_count,
        job_id=job.job_id,
        window=PageWindow(start=window.start, end=window.end),
        received_at=timezone.now(),
    ).to_bytes()


def _store_page(
    *, job: IngestionJob, oura: OuraConnection, collection: str, window: Window, page: int,
    content: bytes, document_count: int,
) -> tuple[RawEvent, bool]:  # fmt: skip
    """Write the bytes to S3 and index them. Call inside the page's transaction.

    Returns (row, created). A row that exists already (the page was done by an earlier run)
    is returned as it is, and its S3 object is not overwritten.
    """
    dedupe_key = page_dedupe_key(job.job_id, collection, window, page)
    existing = RawEvent.objects.filter(provider="oura", dedupe_key=dedupe_key).first()
    if existing is not None:
        return existing, False
    event_id = page_event_id(dedupe_key)
    key = raw_store.object_key(
        provider="oura", day=window.start, user_id=job.user_id, event_id=str(event_id)
    )
    stored = raw_store.put(key, content)
    now = timezone.now()
    row, created = RawEvent.objects.get_or_create(
        provider="oura",
        dedupe_key=dedupe_key,
        defaults={
            "event_id": event_id, "kind": RawEvent.Kind.PAGE, "status": RawEvent.Status.ACCEPTED,
            "user_id": job.user_id, "provider_user_id": oura.provider_user_id,
            "data_type": collection, "received_at": now, "object_key": stored.key,
            "sha256": stored.sha256, "size_bytes": stored.size, "archived_at": now,
            "publish_subject": page_subject(collection),
            "trace_parent": tracing.current_traceparent(),  # the relay's republish joins it
            "envelope": _message(job=job, oura=oura, collection=collection, window=window,
                                 event_id=event_id, stored=stored, document_count=document_count),
        },
    )  # fmt: skip
    return row, created


def publish_page(row: RawEvent) -> bool:
    """Publish a page's message (Nats-Msg-Id = event id) and mark it published.

    On failure the row keeps its envelope and the ingestion relay publishes it later.
    """
    if row.envelope is None or row.published_at is not None:
        return row.published_at is not None
    try:
        bus.get_bus().publish(
            row.publish_subject, bytes(row.envelope), msg_id=str(row.event_id),
            timeout=PUBLISH_TIMEOUT_S,
        )  # fmt: skip
    except bus.BusUnavailable:
        logger.warning("backfill_page_publish_failed", extra={"event_id": str(row.event_id)})
        return False
    RawEvent.objects.filter(pk=row.pk, published_at__isnull=True).update(
        published_at=timezone.now(), envelope=None
    )
    return True


def _publish_leftovers(job: IngestionJob) -> None:
    """Pages a killed run committed but did not publish. Re-publishing is harmless."""
    rows = RawEvent.objects.filter(
        user_id=job.user_id, kind=RawEvent.Kind.PAGE, published_at__isnull=True,
        envelope__isnull=False,
    ).exclude(publish_subject="").order_by("received_at")[:5000]  # fmt: skip
    for row in rows:
        publish_page(row)


# -- the run --------------------------------------------------------------------------------


def _page_collection(
    job: IngestionJob,
    oura: OuraConnection,
    data_type: DataType,
    plan: dict[str, list[Window]],
    cursors: dict[str, Cursor],
    lease_id: uuid.UUID,
    hb: Heartbeat,
) -> None:
    name = data_type.name
    type_windows = plan[name]
    seen_tokens: set[str] = set()
    last_progress = job.progress
    while not cursors[name].done:
        # Each page is a trace of its own, from Oura's answer to the normalizer's rows (a
        # two-year job would otherwise be one trace of thousands of spans).
        with tracing.tracer().start_as_current_span(
            f"backfill page {name}",
            context=Context(),
            attributes={"health.job_id": str(job.job_id), "health.data_type": name},
        ):
            cursor = cursors[name]
            window = type_windows[cursor.window]
            response = _fetch(oura, data_type, window, cursor.next_token, hb)
            content = response.content
            body = json.loads(content)
            documents = body.get("data") or []
            next_token = body.get("next_token") or None
            if next_token is not None and next_token in seen_tokens:
                # Oura has been seen to hand out the same token again (CONTRACT 3.5): a cycle.
                logger.warning("oura_next_token_cycle", extra={"data_type": name})
                next_token = None
            if next_token:
                seen_tokens.add(next_token)
            else:
                seen_tokens.clear()
            following = cursor.after(next_token, len(type_windows))
            cursors[name] = following
            progress = _progress(job, plan, cursors)
            row: RawEvent | None = None
            created = False
            with transaction.atomic():
                # Under the person's lock, which an erasure holds while it runs: either this page
                # commits first (and the erasure removes it) or the erasure's tombstone stops it.
                person_lock(job.user_id)
                if oura_account_erased(oura.provider_user_id):
                    raise Cancelled
                if documents:  # an empty window has nothing to store or normalize
                    row, created = _store_page(
                        job=job, oura=oura, collection=name, window=window, page=cursor.page,
                        content=content, document_count=len(documents),
                    )  # fmt: skip
                commit = services.job_page_commit(
                    job_id=job.job_id, lease_id=lease_id, data_type=name,
                    checkpoint=following.dump(), added_documents=len(documents) if created else 0,
                    progress=progress,
                )  # fmt: skip
            if row is not None:
                publish_page(row)
            job.progress, job.counts = commit.progress, commit.counts
            if commit.progress != last_progress:
                last_progress = commit.progress
                job.updated_at = timezone.now()
                services.job_publish_status(job=job)
            if commit.cancel_requested:
                raise Cancelled


def _record_failure(
    job: IngestionJob,
    name: str,
    failure: CollectionFailed,
    plan: dict[str, list[Window]],
    cursors: dict[str, Cursor],
    lease_id: uuid.UUID,
) -> None:
    """Keep the collection's error on the job and count it as done, so the run (or a resumed
    one) goes on with the next collection."""
    cursors[name] = replace(cursors[name], done=True)
    error = {"error": failure.error, "detail": str(failure)[:MAX_ERROR_DETAIL],
             "at": timezone.now().isoformat()}  # fmt: skip
    commit = services.job_collection_failed(
        job_id=job.job_id, lease_id=lease_id, data_type=name, checkpoint=cursors[name].dump(),
        error=error, progress=_progress(job, plan, cursors),
    )  # fmt: skip
    job.errors = {**(job.errors or {}), name: error}
    job.progress, job.counts, job.updated_at = commit.progress, commit.counts, timezone.now()
    services.job_publish_status(job=job)
    if commit.cancel_requested:
        raise Cancelled


def _outcome(job: IngestionJob) -> tuple[str, str]:
    """The terminal status once every collection was attempted, and the last_error naming
    each failed one."""
    errors = job.errors or {}
    failed = [name for name in job.data_types if name in errors]
    if not failed:
        return Status.SUCCEEDED, ""
    summary = "; ".join(str(errors[name]["detail"]) for name in failed)
    if len(failed) == len(job.data_types):
        return Status.FAILED, summary
    return Status.SUCCEEDED_WITH_ERRORS, (
        f"{len(failed)} of {len(job.data_types)} data types failed: {summary}"
    )


def _run(job: IngestionJob, lease_id: uuid.UUID, hb: Heartbeat) -> tuple[str, str, bool]:
    """(terminal status, last_error, whether every collection was attempted)."""
    oura = connection_for_user(user_id=job.user_id)
    if oura is None or oura.status != OuraConnection.Status.ACTIVE:
        state = oura.status if oura else "missing"
        return Status.FAILED, f"Oura connection is {state}: {RECONNECT}", False
    _publish_leftovers(job)
    plan = {
        name: windows(job.range_start, job.range_end, BACKFILL_TYPES[name].window_days)
        for name in job.data_types
    }
    cursors = {name: Cursor.load((job.checkpoint or {}).get(name)) for name in job.data_types}
    try:
        if job.cancel_requested:
            raise Cancelled
        for name in job.data_types:
            try:
                _page_collection(job, oura, BACKFILL_TYPES[name], plan, cursors, lease_id, hb)
            except CollectionFailed as failure:
                _record_failure(job, name, failure, plan, cursors, lease_id)
    except Cancelled:
        return Status.CANCELLED, "", False
    except NeedsReauth:
        return Status.FAILED, REAUTH_ERROR, False
    return (*_outcome(job), True)


def backfill_run(*, job_id: uuid.UUID | str) -> str | None:
    """Run (or resume) one job to a terminal status. Returns it, or None if this delivery
    found nothing to do (finished, cancelled, or running under a live lease elsewhere).

    Unexpected errors free the lease and propagate, so dramatiq retries the message and the
    retry resumes from the checkpoint.
    """
    lease_id = uuid.uuid4()
    job = services.job_claim(job_id=job_id, lease_id=lease_id)
    if job is None:
        logger.info("job_not_claimed", extra={"job_id": str(job_id)})
        return None
    if job.attempts > services.MAX_RUN_ATTEMPTS:
        services.job_finish(
            job=job, lease_id=lease_id, status=Status.FAILED,
            last_error=f"gave up after {job.attempts - 1} runs that did not finish"
            + (f"; last error: {job.last_error}" if job.last_error else ""),
        )  # fmt: skip
        return Status.FAILED
    logger.info("job_running", extra={"job_id": str(job.job_id), "attempt": job.attempts})
    services.job_publish_status(job=job)
    hb = Heartbeat(job.job_id, lease_id, services.HEARTBEAT_INTERVAL_S)
    hb.start()
    job_backfill_inflight.inc()
    try:
        status, error, every_type_attempted = _run(job, lease_id, hb)
        services.job_finish(
            job=job, lease_id=lease_id, status=status, last_error=error,
            every_type_attempted=every_type_attempted,
        )  # fmt: skip
        return status
    except services.LeaseLost:
        logger.warning("job_lease_lost", extra={"job_id": str(job.job_id)})
        return None
    except Exception as exc:
        services.job_release(
            job=job, lease_id=lease_id,
            last_error=f"worker error {type(exc).__name__}; the job resumes from its checkpoint",
            counts_as_attempt=not isinstance(exc, INFRASTRUCTURE_AWAY),
        )  # fmt: skip
        raise
    finally:
        hb.stop()
        job_backfill_inflight.dec()
