"""Rebuild normalized rows from the raw objects we hold, without asking Oura.

When a mapping changes (its `TableMapping.version` goes up) or a table is added, the rows are
rebuilt from what S3 already holds: the objects indexed in health.raw_events_index, where a
webhook's fetched document is one object holding that document and a backfill page is one
object holding Oura's response (`{"data": [...]}`). Their documents go through
`services.normalize_documents`, the normalizer's own validation, mapping and upsert, and the
changes are announced like the normalizer's; so tombstones (a deleted document never comes
back), erasures (an erased person gets no rows) and newest-wins hold exactly as for live data.
Heart rate, the time series, goes the same way (normalize_documents hands it to
normalized/timeseries.py); it has no TableMapping, and its rows carry the global
`mappers.NORMALIZER_VERSION`.

Which observation time a rebuilt document carries. The upsert replaces a row only with a
document observed at the same time or later, and the raw index does not keep that time (a
page's was in its bus envelope, cleared once published; a document's was taken just before its
fetch, and an unchanged re-fetch reuses the first fetch's object). So an object that is the
source of rows now (their `raw_object_key`) is written as observed when those rows were: they
are rebuilt from it exactly, and their `source_observed_at` stays. An object that is the source
of no row (a newer object replaced its rows, or the table is new) counts as observed when it was
indexed (`received_at`), which keeps the order we received things in: replaced rows stay
replaced, and a new table gets the newest document of each key. (Two fetches of one document
that overlapped in time, milliseconds apart, may then come out in either order.)

Batches, resumption. Objects are taken in raw index order (`id`), a batch at a time; a batch is
read from S3 whole before anything of it is written, then written in one transaction. A run
that stops (S3 away, Ctrl-C) has committed whole batches only and names the last raw index id
it finished: `--after-id` resumes there. Starting again from the beginning is just as correct,
only slower (the same objects give the same rows); with `--older-than-version` the objects whose
rows are all rebuilt are not read again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Max, Q, QuerySet

from core import raw_store
from ingestion.data_types import ALIASES, DATA_TYPES, canonical
from ingestion.models import RawEvent
from normalized import contracts, mappers, services, timeseries
from normalized.models import HeartRateSample

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200  # objects per transaction: a few hundred KB to a few MB of pages
_S3_READERS = 8  # parallel GETs: the objects are small, the time is S3's round trips
_VIOLATIONS_KEPT = 5


class NothingToRebuild(ValueError):
    """The selection names a type that is unknown or has no rows to rebuild."""


def rebuildable() -> list[str]:
    """Every type stored as rows: the document tables, and heart rate's time series."""
    return sorted([*mappers.TABLES, timeseries.COLLECTION])


def collections_to_rebuild(types: Sequence[str]) -> list[str]:
    """Registry names of `types` (aliases accepted); none named: every document table.

    Heart rate only when named, as in a backfill: it is most of the raw data by far.
    """
    if not types:
        return sorted(mappers.TABLES)
    names = sorted({canonical(name) for name in types})
    unknown = [name for name in names if name not in DATA_TYPES]
    if unknown:
        raise NothingToRebuild(
            f"unknown data type(s): {', '.join(unknown)}; known: {', '.join(sorted(DATA_TYPES))}"
        )
    without_rows = [name for name in names if name not in rebuildable()]
    if without_rows:
        raise NothingToRebuild(
            f"kept raw only, no rows to rebuild: {', '.join(without_rows)}; "
            f"types with rows: {', '.join(rebuildable())}"
        )
    return names


@dataclass(frozen=True)
class Selection:
    collections: Sequence[str]  # registry names, each in rebuildable()
    user_id: str | None = None
    since: date | None = None  # the documents' own day (Oura's `day`; UTC for heart rate)
    until: date | None = None
    # Only objects that are the source of a row with normalizer_version < this.
    older_than_version: int | None = None
    after_id: int = 0  # raw index id already done (a previous run's last)
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass
class Progress:
    """What a run did so far. Counts only: no ids of people, no values."""

    last_id: int = 0  # the raw index id up to which every object is done
    batches: int = 0
    objects: int = 0  # read and written
    not_needed: int = 0  # --older-than-version: no row of theirs is older
    missing: int = 0  # indexed, but gone from S3 (retention, erasure): counted, not fatal
    unreadable: int = 0  # bytes that differ from their sha256 or hold no documents
    documents: int = 0
    outside_range: int = 0  # documents whose day is outside --since/--until
    written: int = 0
    stale: int = 0  # a later observation holds the row: left as it is
    deleted: int = 0  # tombstoned: not brought back
    erased: int = 0
    invalid: int = 0  # fail today's contract or mapping: kept raw, no row written
    violations: list[str] = field(default_factory=list)  # the first few, "collection [i] loc: type"

    def line(self) -> str:
        return (
            f"up to raw event id {self.last_id}: {self.objects} objects read "
            f"({self.missing} missing from S3, {self.unreadable} unreadable, "
            f"{self.not_needed} not needed), {self.documents} documents: {self.written} "
            f"written, {self.stale} newer kept, {self.deleted} deleted, {self.erased} erased, "
            f"{self.invalid} invalid, {self.outside_range} outside the days"
        )


@dataclass(frozen=True)
class _Source:
    observed_at: datetime | None  # when the rows built from this object were observed
    needs_rebuild: bool  # holds a row older than --older-than-version (within the days)


@dataclass
class _Group:
    """The documents of one person and collection in a batch, for one normalize call."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    object_keys: list[str] = field(default_factory=list)
    observed_at: list[datetime] = field(default_factory=list)


def renormalize(
    selection: Selection,
    *,
    progress: Progress | None = None,
    on_batch: Callable[[Progress], None] | None = None,
) -> Progress:
    """Rebuild the selected rows from S3; see the module docstring.

    Raises RawStoreUnavailable when S3 cannot be read (nothing of the current batch is then
    written) and BusUnavailable when a committed batch cannot be announced; in both cases
    `progress.last_id` is where to resume. `progress`, if given, is updated as the run goes.
    """
    progress = progress or Progress()
    progress.last_id = max(progress.last_id, selection.after_id)
    with ThreadPoolExecutor(max_workers=_S3_READERS) as executor:
        while True:
            batch = list(_candidates(selection, after_id=progress.last_id)[: selection.batch_size])
            if not batch:
                break
            _rebuild(batch, selection, progress, executor)
            progress.last_id = batch[-1].pk
            progress.batches += 1
            logger.info(
                "renormalize_batch",
                extra={"last_id": progress.last_id, "objects": progress.objects,
                       "missing": progress.missing, "written": progress.written,
                       "invalid": progress.invalid},
            )  # fmt: skip
            if on_batch is not None:
                on_batch(progress)
    return progress


def rows_older_than(selection: Selection) -> tuple[int, int]:
    """(rows with normalizer_version < older_than_version, those of them with no raw object
    left): what a run could not rebuild, for the operator. (0, 0) without a version."""
    if selection.older_than_version is None:
        return 0, 0
    total = without_raw = 0
    for collection in selection.collections:
        rows = _rows(collection, selection).filter(
            normalizer_version__lt=selection.older_than_version
        )
        total += rows.count()
        without_raw += rows.filter(raw_object_key="").count()
    return total, without_raw


def _table(collection: str) -> QuerySet[Any]:
    if collection == timeseries.COLLECTION:
        return HeartRateSample.objects.all()
    mapping = mappers.TABLES[collection]
    rows = mapping.model._default_manager.all()
    if mapping.kind:  # two collections share the table
        rows = rows.filter(Q(kind=mapping.kind))  # a column of that table, not of the base
    return rows


def _rows(collection: str, selection: Selection) -> QuerySet[Any]:
    rows = _table(collection)
    if selection.user_id is not None:
        rows = rows.filter(user_id=selection.user_id)
    return rows.filter(_days(collection, selection))


def _days(collection: str, selection: Selection) -> Q:
    days = Q()
    if collection == timeseries.COLLECTION:  # samples have instants, their days are UTC days
        if selection.since is not None:
            days &= Q(timestamp__gte=datetime.combine(selection.since, time.min, UTC))
        if selection.until is not None:
            next_day = selection.until + timedelta(days=1)
            days &= Q(timestamp__lt=datetime.combine(next_day, time.min, UTC))
        return days
    if selection.since is not None:
        days &= Q(day__gte=selection.since)
    if selection.until is not None:
        days &= Q(day__lte=selection.until)
    return days


def _candidates(selection: Selection, *, after_id: int) -> QuerySet[RawEvent]:
    """Raw objects of the selected types and person, in index order, after `after_id`.

    Webhook envelopes (kind webhook) hold no document and tombstones no object; documents and
    pages do. Aliases are included in case an older writer indexed a type by its alias.
    """
    spellings = [*selection.collections]
    spellings += [alias for alias, name in ALIASES.items() if name in selection.collections]
    events = RawEvent.objects.filter(
        provider=services.PROVIDER,
        kind__in=[RawEvent.Kind.DOCUMENT, RawEvent.Kind.PAGE],
        status=RawEvent.Status.ACCEPTED,
        data_type__in=spellings,
        pk__gt=after_id,
    ).exclude(object_key="")
    if selection.user_id is not None:
        events = events.filter(user_id=selection.user_id)
    return events.order_by("pk")


def _sources(batch: Sequence[RawEvent], selection: Selection) -> dict[tuple[str, str], _Source]:
    """Per (collection, object key) of the batch: the rows now built from that object."""
    found: dict[tuple[str, str], _Source] = {}
    by_collection: dict[str, list[RawEvent]] = {}
    for event in batch:
        by_collection.setdefault(canonical(event.data_type), []).append(event)
    for collection, events in by_collection.items():
        # Every row built from these objects, whatever its day: they were all observed at once.
        rows = _table(collection).filter(
            user_id__in={event.user_id for event in events},
            raw_object_key__in=[event.object_key for event in events],
        )
        aggregates: dict[str, Any] = {"observed_at": Max("source_observed_at")}
        if selection.older_than_version is not None:
            older = Q(normalizer_version__lt=selection.older_than_version)
            aggregates["older"] = Count("user_id", filter=older & _days(collection, selection))
        summary: list[Mapping[str, Any]] = list(
            rows.values("raw_object_key").annotate(**aggregates)
        )
        for source in summary:
            found[(collection, source["raw_object_key"])] = _Source(
                observed_at=source["observed_at"], needs_rebuild=source.get("older", 0) > 0
            )
    return found


def _read(event: RawEvent) -> bytes | None:
    """The object's bytes; None when it is gone. Raises RawStoreUnavailable when S3 is."""
    try:
        return raw_store.get(event.object_key)
    except raw_store.RawStoreUnavailable:
        # As the normalizer's page read does: "S3 is away" raises, "not there" is None.
        if raw_store.head(event.object_key) is None:
            return None
        raise


def _documents(event: RawEvent, data: bytes) -> list[dict[str, Any]] | None:
    """The documents an object holds (one, or a page's `data`); None if it holds none."""
    if event.sha256 and hashlib.sha256(data).hexdigest() != event.sha256:
        return None
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if event.kind == RawEvent.Kind.PAGE:
        documents = body.get("data") if isinstance(body, dict) else None
    else:
        documents = [body]
    if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
        return None
    return documents


def _in_days(collection: str, document: dict[str, Any], selection: Selection) -> bool:
    if selection.since is None and selection.until is None:
        return True
    try:
        parsed = contracts.parse_document(collection, document)
    except contracts.ContractViolation:
        return True  # let the normalizer say why it is invalid
    day = mappers.document_day(parsed)
    if day is None and isinstance(parsed, contracts.HeartRateRow):
        day = parsed.timestamp.astimezone(UTC).date()
    if day is None:
        return True
    return (selection.since is None or day >= selection.since) and (
        selection.until is None or day <= selection.until
    )


def _rebuild(
    batch: Sequence[RawEvent], selection: Selection, progress: Progress, executor: Executor
) -> None:
    sources = _sources(batch, selection)
    todo = list(batch)
    if selection.older_than_version is not None:
        todo = [
            event
            for event in batch
            if (source := sources.get((canonical(event.data_type), event.object_key)))
            and source.needs_rebuild
        ]
        progress.not_needed += len(batch) - len(todo)
    # Every object of the batch is read before anything is written: with S3 away, this
    # raises and the batch leaves nothing behind.
    contents = list(executor.map(_read, todo))

    groups: dict[tuple[str, str], _Group] = {}
    for event, data in zip(todo, contents, strict=True):
        if data is None:
            progress.missing += 1
            continue
        documents = _documents(event, data)
        if documents is None:
            progress.unreadable += 1
            continue
        progress.objects += 1
        collection = canonical(event.data_type)
        source = sources.get((collection, event.object_key))
        observed_at = (source.observed_at if source else None) or event.received_at
        group = groups.setdefault((event.user_id, collection), _Group())
        for document in documents:
            progress.documents += 1
            if not _in_days(collection, document, selection):
                progress.outside_range += 1
                continue
            group.documents.append(document)
            group.object_keys.append(event.object_key)
            group.observed_at.append(observed_at)

    results: list[services.NormalizeResult] = []
    # One transaction for the batch. Sorted by person: each write takes that person's lock
    # until the commit, in the same order as the normalizer's batches, so they cannot deadlock.
    with transaction.atomic():
        for (user_id, collection), group in sorted(groups.items()):
            if group.documents:
                results.append(
                    services.normalize_documents(
                        user_id=user_id, collection=collection, documents=group.documents,
                        raw_object_key=group.object_keys, observed_at=group.observed_at,
                    )
                )  # fmt: skip
    for result in results:
        progress.written += len(result.written_ids)
        progress.stale += result.skipped_stale
        progress.deleted += result.skipped_deleted
        progress.erased += result.skipped_erased
        progress.invalid += len(result.invalid)
        room = _VIOLATIONS_KEPT - len(progress.violations)
        progress.violations += [f"{result.collection} {v}" for v in result.violations[:room]]
    # Announced after the commit, like the normalizer's writes: subscribers re-read the days.
    source_event_id = f"renormalize-{batch[0].pk}-{batch[-1].pk}"
    for result in results:
        services.normalized_publish(
            user_id=result.user_id, collection=result.collection, change="upsert",
            ids=result.written_ids, days=result.days, source_event_id=source_event_id,
        )  # fmt: skip
