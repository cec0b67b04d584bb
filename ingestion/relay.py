"""The relay: takes accepted raw events from Postgres to S3 and to JetStream.

Two work queues, each read in batches with SELECT ... FOR UPDATE SKIP LOCKED (so several
relays can run side by side) and each backed by a partial index on raw_events_index:

- publish: rows with a publish subject and no published_at. The request path publishes
  almost every event itself; this catches the ones whose publish failed (NATS down, ack
  lost, process killed after the commit).
- archive: rows with no archived_at. The envelope is written to S3 with server-side
  encryption; object key, sha256, size and archived_at are recorded, and the envelope
  bytes are cleared from Postgres once the row is also published (or is never published).

Both are at-least-once and idempotent: the S3 key is a function of the event, the bytes are
deterministic, and Nats-Msg-Id (= event id) makes JetStream drop a re-publish inside the
stream's duplicate window. A relay killed mid-batch loses only its uncommitted bookkeeping;
the next run redoes those rows. See docs/phase-3/webhooks.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, timedelta

from django.db import transaction
from django.db.models import BinaryField, Case, F, Q, QuerySet, Value, When
from django.utils import timezone

from core import bus, raw_store
from core.metrics import relay_backlog
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


def relay_backlog_update() -> dict[str, int]:
    """Count both queues (cheap: each count walks a small partial index) and set the gauge."""
    counts = {"publish": unpublished().count(), "archive": unarchived().count()}
    for kind, count in counts.items():
        relay_backlog.labels(kind=kind).set(count)
    return counts


def clear_envelope_when(condition: Q) -> Case:
    # Evaluated by Postgres on the row as it is when the UPDATE runs, so a concurrent
    # publish (request path) and archive (relay) cannot both leave the bytes behind.
    return Case(
        When(condition, then=Value(None, output_field=BinaryField())),
        default=F("envelope"),
        output_field=BinaryField(),
    )


def _batch(queryset: QuerySet[RawEvent], *, batch_size: int, grace_s: float) -> list[RawEvent]:
    # The grace period keeps the relay off rows whose request is still publishing them, so
    # the two rarely wait on each other's row lock or publish the same event twice.
    cutoff = timezone.now() - timedelta(seconds=grace_s)
    return list(
        queryset.filter(received_at__lte=cutoff)
        .select_for_update(skip_locked=True)
        .order_by("received_at", "id")[:batch_size]
    )


def relay_publish_batch(
    *, batch_size: int, grace_s: float, should_stop: Callable[[], bool] = _never
) -> PassResult:
    result = PassResult()
    with transaction.atomic():
        rows = _batch(unpublished(), batch_size=batch_size, grace_s=grace_s)
        done: list[int] = []
        for row in rows:
            if should_stop():
                break
            try:
                # Cleared only once published, so this is a fallback for hand-edited rows.
                data = (
                    bytes(row.envelope)
                    if row.envelope is not None
                    else raw_store.get(row.object_key)
                )
            except raw_store.RawStoreUnavailable:
                result.failed += 1
                continue
            try:
                bus.get_bus().publish(
                    row.publish_subject, data, msg_id=str(row.event_id), timeout=PUBLISH_TIMEOUT_S
                )
            except bus.BusUnavailable:
                result.unavailable = True
                break
            done.append(row.pk)
        if done:
            RawEvent.objects.filter(pk__in=done).update(
                published_at=timezone.now(),
                envelope=clear_envelope_when(Q(archived_at__isnull=False)),
            )
        result.done = len(done)
    return result


def relay_archive_batch(
    *,
    batch_size: int,
    grace_s: float,
    workers: int = 4,
    should_stop: Callable[[], bool] = _never,
) -> PassResult:
    result = PassResult()
    gone = threading.Event()  # S3 refused once: skip the rest instead of timing out on each

    def archive(row: RawEvent) -> raw_store.StoredObject | None:
        if gone.is_set() or should_stop():
            return None
        day = row.received_at.astimezone(UTC).date()
        key = raw_store.object_key(
            provider=row.provider, day=day, user_id=row.user_id or "unknown",
            event_id=str(row.event_id),
        )  # fmt: skip
        try:
            return raw_store.put(key, bytes(row.envelope or b""))
        except raw_store.RawStoreUnavailable:
            gone.set()
            return None

    with transaction.atomic():
        rows = _batch(unarchived(), batch_size=batch_size, grace_s=grace_s)
        missing = [row for row in rows if row.envelope is None]
        for row in missing:
            # Unarchived without bytes cannot be archived; loud, and never silently "done".
            logger.error("relay_envelope_missing", extra={"event_id": str(row.event_id)})
        result.failed += len(missing)
        todo = [row for row in rows if row.envelope is not None]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            stored = list(pool.map(archive, todo))
        now = timezone.now()
        for row, obj in zip(todo, stored, strict=True):
            if obj is None:
                continue
            RawEvent.objects.filter(pk=row.pk).update(
                object_key=obj.key,
                sha256=obj.sha256,
                size_bytes=obj.size,
                archived_at=now,
                envelope=clear_envelope_when(Q(published_at__isnull=False) | Q(publish_subject="")),
            )
            result.done += 1
        result.unavailable = gone.is_set()
    return result


def relay_step(
    *,
    batch_size: int,
    grace_s: float,
    workers: int = 4,
    should_stop: Callable[[], bool] = _never,
) -> tuple[PassResult, PassResult]:
    """One batch of each queue, publish first (consumers wait on it; the archive does not)."""
    published = relay_publish_batch(batch_size=batch_size, grace_s=grace_s, should_stop=should_stop)
    archived = relay_archive_batch(
        batch_size=batch_size, grace_s=grace_s, workers=workers, should_stop=should_stop
    )
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
    relay_backlog_update()
    return totals
