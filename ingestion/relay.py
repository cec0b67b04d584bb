"""The relay: takes accepted raw events from Postgres to JetStream and to S3.

Two work queues, each backed by a partial index on raw_events_index and claimed in batches
with SELECT ... FOR UPDATE SKIP LOCKED (so several relays can run side by side):

- publish: rows with a publish subject and no published_at. The request path publishes every
  event right after its commit but does not write that down (a second statement per webhook,
  and a second version of the row, was a large share of the request's database work); the
  relay publishes the row again with the same Nats-Msg-Id, JetStream drops that copy inside
  the stream's duplicate window (1 hour) and acknowledges it, and then published_at is set.
  So a publish that failed, lost its ack or never happened (process killed after the
  commit) is made good here, and published_at means "JetStream has it".
- archive: rows with no archived_at. The envelope is written to S3 with server-side
  encryption, and object key, sha256, size and archived_at are recorded.

One step claims a batch of each queue (mostly the same rows), publishes and archives them,
and records both in one UPDATE, which also clears the envelope bytes from Postgres once the
row is archived and published (or never to be published). Both are at-least-once and
idempotent: the S3 key is a function of the event, the bytes are deterministic, and
Nats-Msg-Id (= event id) de-duplicates. A relay killed mid-batch loses only its uncommitted
bookkeeping; the next run redoes those rows. See docs/phase-3/webhooks.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, timedelta

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from opentelemetry.trace import SpanKind

from core import bus, raw_store, tracing
from ingestion.models import RawEvent

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 2.0


def _never() -> bool:
    return False


@dataclass
class PassResult:
    done: int = 0
    failed: int = 0
    unavailable: bool = False  # the backend went away; the rest of the batch was left


@dataclass
class RelayTotals:
    published: int = 0
    archived: int = 0
    failed: int = 0
    unavailable: bool = False

    def add(self, published: PassResult, archived: PassResult) -> None:
        self.published += published.done
        self.archived += archived.done
        self.failed += published.failed + archived.failed
        self.unavailable = published.unavailable or archived.unavailable


def unpublished() -> QuerySet[RawEvent]:
    return RawEvent.objects.filter(published_at__isnull=True).exclude(publish_subject="")


def unarchived() -> QuerySet[RawEvent]:
    return RawEvent.objects.filter(archived_at__isnull=True)


def relay_backlog_counts() -> dict[str, int]:
    """Count both queues (cheap: each count walks a small partial index). /metrics reports
    them as `relay_backlog{kind}` at scrape time (ingestion/scrape_metrics.py)."""
    return {"publish": unpublished().count(), "archive": unarchived().count()}


def _batch(queryset: QuerySet[RawEvent], *, batch_size: int, grace_s: float) -> list[RawEvent]:
    # The grace period leaves the request path time to publish its rows first, so the relay's
    # copy is nearly always the duplicate JetStream drops, not the first delivery.
    cutoff = timezone.now() - timedelta(seconds=grace_s)
    return list(
        queryset.filter(received_at__lte=cutoff)
        .select_for_update(skip_locked=True)
        .order_by("received_at", "id")[:batch_size]
    )


def _publish(rows: list[RawEvent], result: PassResult, should_stop: Callable[[], bool]) -> set[int]:
    """Publish each row's envelope; the ids of the rows JetStream acknowledged."""
    messages: list[tuple[str, bytes, str]] = []
    headers: list[dict[str, str]] = []
    spans = []
    sent: list[int] = []
    for row in rows:
        if should_stop():
            break
        try:
            # Cleared only once published, so this is a fallback for hand-edited rows.
            envelope = row.envelope
            data = bytes(envelope) if envelope is not None else raw_store.get(row.object_key)
        except raw_store.RawStoreUnavailable:
            result.failed += 1
            continue
        # Each row's publish is a span in the trace of the request that accepted it.
        span, carrier = tracing.start_producer_span(
            subject=row.publish_subject,
            msg_id=str(row.event_id),
            parent=tracing.context_from_traceparent(row.trace_parent),
            operation="relay publish",
        )
        headers.append(carrier)
        spans.append(span)
        messages.append((row.publish_subject, data, str(row.event_id)))
        sent.append(row.pk)
    acked = bus.get_bus().publish_many(messages, timeout=PUBLISH_TIMEOUT_S, headers=headers)
    for span, ok in zip(spans, acked, strict=True):
        tracing.end_with(span, None if ok else bus.BusUnavailable("not acknowledged"))
    done = {pk for pk, ok in zip(sent, acked, strict=True) if ok}
    result.done = len(done)
    result.unavailable = len(done) < len(sent)
    return done


def _archive(
    rows: list[RawEvent], result: PassResult, workers: int, should_stop: Callable[[], bool]
) -> dict[int, raw_store.StoredObject]:
    """PUT each row's envelope to S3 (in parallel); the stored objects by row id."""
    gone = threading.Event()  # S3 refused once: skip the rest instead of timing out on each

    def archive(row: RawEvent) -> raw_store.StoredObject | None:
        if gone.is_set() or should_stop():
            return None
        day = row.received_at.astimezone(UTC).date()
        key = raw_store.object_key(
            provider=row.provider, day=day, user_id=row.user_id or "unknown",
            event_id=str(row.event_id),
        )  # fmt: skip
        with tracing.tracer().start_as_current_span(
            "raw_store put",
            context=tracing.context_from_traceparent(row.trace_parent),
            kind=SpanKind.CLIENT,
            attributes={"health.event_id": str(row.event_id), "health.kind": row.kind},
        ) as span:
            try:
                return raw_store.put(key, bytes(row.envelope or b""))
            except raw_store.RawStoreUnavailable as exc:
                span.set_attribute("error.type", type(exc).__name__)
                gone.set()
                return None

    missing = [row for row in rows if row.envelope is None]
    for row in missing:
        # Unarchived without bytes cannot be archived; loud, and never silently "done".
        logger.error("relay_envelope_missing", extra={"event_id": str(row.event_id)})
    result.failed += len(missing)
    todo = [row for row in rows if row.envelope is not None]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        stored = list(pool.map(archive, todo))
    archived = {row.pk: obj for row, obj in zip(todo, stored, strict=True) if obj is not None}
    result.done = len(archived)
    result.unavailable = gone.is_set()
    return archived


# The batch's bookkeeping in one statement. The envelope is cleared on the row as the UPDATE
# sees it: once it is archived (now or before) and published (now or before) or never to be
# published. Rows are locked by the claim, so no other writer moves them meanwhile.
_RECORD_SQL = f"""
UPDATE "{RawEvent._meta.db_table}" AS raw
SET published_at = CASE WHEN v.published THEN now() ELSE raw.published_at END,
    archived_at = CASE WHEN v.object_key IS NULL THEN raw.archived_at ELSE now() END,
    object_key = coalesce(v.object_key, raw.object_key),
    sha256 = coalesce(v.sha256, raw.sha256),
    size_bytes = coalesce(v.size_bytes, raw.size_bytes),
    envelope = CASE
        WHEN (raw.archived_at IS NOT NULL OR v.object_key IS NOT NULL)
            AND (raw.published_at IS NOT NULL OR v.published OR raw.publish_subject = '')
        THEN NULL ELSE raw.envelope END
FROM unnest(%s::bigint[], %s::boolean[], %s::text[], %s::text[], %s::integer[])
    AS v(id, published, object_key, sha256, size_bytes)
WHERE raw.id = v.id
"""  # noqa: S608 - table name from _meta


def _record(published: set[int], archived: dict[int, raw_store.StoredObject]) -> None:
    ids = sorted(published | archived.keys())
    if not ids:
        return
    stored = [archived.get(pk) for pk in ids]
    with connection.cursor() as cursor:
        cursor.execute(
            _RECORD_SQL,
            [
                ids,
                [pk in published for pk in ids],
                [obj.key if obj else None for obj in stored],
                [obj.sha256 if obj else None for obj in stored],
                [obj.size if obj else None for obj in stored],
            ],
        )


def relay_step(
    *,
    batch_size: int,
    grace_s: float,
    workers: int = 4,
    should_stop: Callable[[], bool] = _never,
) -> tuple[PassResult, PassResult]:
    """One batch of each queue, committed together; publish first (consumers wait on it,
    the archive does not)."""
    published, archived = PassResult(), PassResult()
    with transaction.atomic():
        # Locks this transaction already holds do not count as locked for SKIP LOCKED.
        to_publish = _batch(unpublished(), batch_size=batch_size, grace_s=grace_s)
        to_archive = _batch(unarchived(), batch_size=batch_size, grace_s=grace_s)
        done_publishing = _publish(to_publish, published, should_stop)
        stored = _archive(to_archive, archived, workers, should_stop)
        _record(done_publishing, stored)
    if published.done or archived.done:
        logger.info(
            "relay_batch",
            extra={"published": published.done, "archived": archived.done,
                   "failed": published.failed + archived.failed},
        )  # fmt: skip
    return published, archived


def relay_drain(
    *,
    batch_size: int = 100,
    grace_s: float = 0.0,
    workers: int = 4,
    should_stop: Callable[[], bool] = _never,
) -> RelayTotals:
    """Work both queues until a step makes no progress (both empty, or backends down)."""
    totals = RelayTotals()
    while not should_stop():
        published, archived = relay_step(
            batch_size=batch_size, grace_s=grace_s, workers=workers, should_stop=should_stop
        )
        totals.add(published, archived)
        if not published.done and not archived.done:
            break
    return totals
