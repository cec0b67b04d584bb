"""Writes of the normalized domain: raw documents in, typed rows out.

- `documents_store_raw` (and `document_store_raw` for one): documents fetched from Oura go to
  S3 and into raw_events_index, idempotently (same bytes, same key, one index row).
- `normalize_documents`: validate a batch against the contracts and upsert it in one
  transaction with INSERT ... ON CONFLICT DO UPDATE on each table's unique key.
- `delete_document`: remove the row of a document Oura deleted and keep a tombstone.
- `normalized_publish`: tell `health.normalized.user.{userId}.metrics` what changed.

Out-of-order delivery. Every write for one user takes a transaction-scoped advisory lock on
that user, so writes for a user are serialised and each sees the previous one's result. Two
guards then make the final state independent of arrival order:
- a row is replaced only by a document observed (read from Oura) at the same time or later
  (`source_observed_at`), so an older fetch or backfill page cannot undo a newer one;
- a deleted document leaves a tombstone (`DeletedDocument`), and a document with a tombstone
  is never written again: Oura does not reuse ids, so any copy still in flight is stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from django.db import connection, transaction
from django.utils import timezone

from core import bus, raw_store
from core.db import person_lock
from core.messages import NormalizedMetricsMessage, normalized_metrics_subject
from ingestion.models import RawEvent
from normalized import contracts, mappers, timeseries
from normalized.models import DeletedDocument
from privacy.selectors import user_erased

logger = logging.getLogger(__name__)

PROVIDER = "oura"
# Document event ids are uuid5(namespace, dedupe key): the same bytes fetched twice are one
# raw event with one S3 object.
DOCUMENT_EVENT_NAMESPACE = uuid.UUID("0f4b8f3e-2f43-4d8e-9a55-3f0c2f6d9b11")


@dataclass(frozen=True)
class StoredDocument:
    event_id: uuid.UUID
    object_key: str
    sha256: str
    reused: bool  # an identical earlier fetch already stored these bytes
    erased: bool = False  # its person was erased meanwhile: nothing stored, nothing to write


@dataclass(frozen=True)
class FetchedDocument:
    """A document as read from Oura, before it is stored."""

    user_id: str
    provider_user_id: str
    collection: str
    object_id: str
    event_type: str
    event_time: datetime | None
    document: Mapping[str, Any]


@dataclass
class NormalizeResult:
    collection: str
    user_id: str
    valid: int = 0
    written_ids: list[str] = field(default_factory=list)
    days: set[date] = field(default_factory=set)
    skipped_deleted: int = 0
    skipped_stale: int = 0
    skipped_erased: int = 0
    violations: list[str] = field(default_factory=list)  # "[index] loc: type", no values
    invalid: dict[int, str] = field(default_factory=dict)  # index -> "loc: type", no values
    samples_written: int = 0  # time series (heart rate): samples have no ids to list

    @property
    def stored_as_rows(self) -> bool:
        return self.collection in mappers.TABLES or self.collection == timeseries.COLLECTION


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """Deterministic JSON, so a re-fetch of an unchanged document has the same sha256."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_dedupe_key(*, collection: str, object_id: str, sha256: str) -> str:
    parts = [PROVIDER, "document", collection, object_id, sha256]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def document_store_raw(
    *,
    user_id: str,
    provider_user_id: str,
    collection: str,
    object_id: str,
    event_type: str,
    event_time: datetime | None,
    document: Mapping[str, Any],
) -> StoredDocument:
    """Archive one fetched document; see `documents_store_raw`.

    Raises RawStoreUnavailable when S3 refuses the PUT (the caller retries).
    """
    fetched = FetchedDocument(
        user_id=user_id, provider_user_id=provider_user_id, collection=collection,
        object_id=object_id, event_type=event_type, event_time=event_time, document=document,
    )  # fmt: skip
    (stored,) = documents_store_raw(documents=[fetched])
    if isinstance(stored, raw_store.RawStoreUnavailable):
        raise stored
    return stored


_RAW_INSERT_CHUNK = 1000  # rows per INSERT: 18 parameters each, far below Postgres's 65535


def documents_store_raw(
    *, documents: Sequence[FetchedDocument], executor: Executor | None = None
) -> list[StoredDocument | raw_store.RawStoreUnavailable]:
    """Archive fetched documents (S3, SSE) and index them as raw events of kind document.

    Returns one result per document, in order. The index rows go in first, in the caller's
    transaction (or their own), in one INSERT ... ON CONFLICT DO NOTHING RETURNING: the unique
    dedupe key (the document's sha256) decides there whether these exact bytes are stored
    already, in which case the earlier object is reused and there is no PUT. The new ones are
    PUT while the transaction is open (in parallel on `executor`, if given). The rows of
    failed PUTs are deleted again in the same transaction and their documents come back as
    RawStoreUnavailable, so a committed row never points at a missing object.
    """
    now = timezone.now()
    events: dict[str, RawEvent] = {}  # by dedupe key: the same bytes twice are one event
    data_by_key: dict[str, bytes] = {}
    keys: list[str] = []
    for fetched in documents:
        data = document_bytes(fetched.document)
        sha256 = hashlib.sha256(data).hexdigest()
        dedupe_key = document_dedupe_key(
            collection=fetched.collection, object_id=fetched.object_id, sha256=sha256
        )
        keys.append(dedupe_key)
        if dedupe_key in events:
            continue
        event_id = uuid.uuid5(DOCUMENT_EVENT_NAMESPACE, dedupe_key)
        data_by_key[dedupe_key] = data
        events[dedupe_key] = RawEvent(
            event_id=event_id,
            provider=PROVIDER,
            kind=RawEvent.Kind.DOCUMENT,
            status=RawEvent.Status.ACCEPTED,
            dedupe_key=dedupe_key,
            user_id=fetched.user_id,
            provider_user_id=fetched.provider_user_id,
            data_type=fetched.collection,
            event_type=fetched.event_type,
            object_id=fetched.object_id,
            event_time=fetched.event_time,
            received_at=now,
            object_key=raw_store.object_key(
                provider=PROVIDER,
                day=now.astimezone(UTC).date(),
                user_id=fetched.user_id,
                event_id=str(event_id),
            ),
            sha256=sha256,
            size_bytes=len(data),
            # Stored in S3 below and never published: nothing for the relay to do.
            archived_at=now,
            publish_subject="",
        )

    with transaction.atomic(savepoint=False):
        # Each person's lock before anything of theirs is stored (sorted: one order for all
        # processes); an erasure holds it while it runs, and its tombstone stops the rest.
        erased = {
            user for user in sorted({e.user_id for e in events.values()}) if not _lock_user(user)
        }
        for key in [key for key, event in events.items() if event.user_id in erased]:
            del events[key]
        # Sorted: two processes inserting overlapping keys wait for each other in one order.
        inserted = _insert_raw_events([events[key] for key in sorted(events)])
        reused = _existing_object_keys([key for key in events if key not in inserted])
        new = [key for key in events if key in inserted]

        def put(dedupe_key: str) -> raw_store.RawStoreUnavailable | None:
            try:
                raw_store.put(events[dedupe_key].object_key, data_by_key[dedupe_key])
            except raw_store.RawStoreUnavailable as exc:
                return exc
            return None

        put_errors = list(executor.map(put, new) if executor is not None else map(put, new))
        failed = {key: exc for key, exc in zip(new, put_errors, strict=True) if exc is not None}
        if failed:
            RawEvent.objects.filter(provider=PROVIDER, dedupe_key__in=list(failed)).delete()

    results: list[StoredDocument | raw_store.RawStoreUnavailable] = []
    for dedupe_key, fetched in zip(keys, documents, strict=True):
        if fetched.user_id in erased:
            results.append(StoredDocument(uuid.UUID(int=0), "", "", reused=False, erased=True))
            continue
        event = events[dedupe_key]
        if dedupe_key in failed:
            results.append(failed[dedupe_key])
            continue
        fresh = dedupe_key in inserted
        results.append(
            StoredDocument(
                event_id=event.event_id,
                object_key=event.object_key if fresh else reused[dedupe_key],
                sha256=event.sha256,
                reused=not fresh,
            )
        )
    return results


def _insert_raw_events(events: Sequence[RawEvent]) -> set[str]:
    """Multi-row INSERT ... ON CONFLICT DO NOTHING; returns the dedupe keys inserted.

    A concurrent insert of the same key waits for the first one's transaction to end, then
    finds the conflict (or, if that transaction rolled back, inserts after all).
    """
    fields = [f for f in RawEvent._meta.concrete_fields if not f.primary_key]
    table = connection.ops.quote_name(RawEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column or f.attname) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    inserted: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(events), _RAW_INSERT_CHUNK):
            chunk = events[start : start + _RAW_INSERT_CHUNK]
            values = [
                f.get_db_prep_save(getattr(event, f.attname), connection)
                for event in chunk
                for f in fields
            ]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(chunk))} "  # noqa: S608 - names from _meta
                "ON CONFLICT DO NOTHING RETURNING dedupe_key",
                values,
            )
            inserted.update(dedupe_key for (dedupe_key,) in cursor.fetchall())
    return inserted


def _existing_object_keys(dedupe_keys: list[str]) -> dict[str, str]:
    if not dedupe_keys:
        return {}
    return dict(
        RawEvent.objects.filter(provider=PROVIDER, dedupe_key__in=dedupe_keys).values_list(
            "dedupe_key", "object_key"
        )
    )


def _lock_user(user_id: str) -> bool:
    """Serialises every normalized write of one user across processes (other users
    proceed). False once the user is erased: an erasure holds the same lock while it runs,
    so a batch that waited on it sees the tombstone here and writes nothing of them."""
    person_lock(user_id)
    return not user_erased(user_id)


# Array type per Django field type for the unnest() upsert; Postgres casts each element to
# the column's own type (smallint, varchar(n)) on insert.
_ARRAY_TYPES = {
    "CharField": "text[]",
    "IntegerField": "int8[]",
    "PositiveIntegerField": "int8[]",
    "SmallIntegerField": "int8[]",
    "FloatField": "float8[]",
    "DateField": "date[]",
    "DateTimeField": "timestamptz[]",
    "JSONField": "text[]",  # sent as JSON text, cast to jsonb per element
}


def _upsert(mapping: mappers.TableMapping, rows: list[dict[str, Any]]) -> list[tuple[str, date]]:
    """One INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE for the whole batch.

    One array parameter per column instead of one placeholder per value: a page of 1000
    documents is a single statement with ~20 parameters, which Postgres and psycopg handle far
    faster than 20,000 placeholders. Returns (oura_id, day) of the rows written: the WHERE on
    the update skips rows whose stored document was observed later than the incoming one, and
    RETURNING leaves those out.
    """
    model = mapping.model
    names = list(rows[0])
    by_name = {f.name: f for f in model._meta.concrete_fields}
    fields = [by_name[name] for name in names]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(f.column or f.attname) for f in fields)
    aliases = [f"c{index}" for index in range(len(fields))]
    arrays = []
    selected = []
    params: list[list[Any]] = []
    for alias, f in zip(aliases, fields, strict=True):
        internal = f.get_internal_type()
        arrays.append(f"%s::{_ARRAY_TYPES[internal]}")
        if internal == "JSONField":
            selected.append(f"{alias}::jsonb")
            params.append([None if r[f.name] is None else json.dumps(r[f.name]) for r in rows])
        else:
            selected.append(alias)
            params.append([r[f.name] for r in rows])
    conflict = ", ".join(quote(name) for name in mapping.conflict_fields)
    updates = ", ".join(
        f"{quote(name)} = EXCLUDED.{quote(name)}"
        for name in names
        if name not in mapping.conflict_fields
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS t ({columns}) "  # noqa: S608 - names from _meta
            f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) "
            f"AS u({', '.join(aliases)}) "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates} "
            "WHERE t.source_observed_at IS NULL "
            "OR t.source_observed_at <= EXCLUDED.source_observed_at "
            "RETURNING oura_id, day",
            params,
        )
        return [(str(oura_id), day) for oura_id, day in cursor.fetchall()]


def normalize_documents(
    *,
    user_id: str,
    collection: str,
    documents: Sequence[Mapping[str, Any]],
    raw_object_key: str | Sequence[str],
    observed_at: datetime | Sequence[datetime] | None = None,
) -> NormalizeResult:
    """Validate `documents` of one collection and upsert the valid ones in one transaction.

    `raw_object_key` and `observed_at` are one value for all documents (a backfill page) or
    one per document (webhook documents normalized together, each from its own fetch).
    Invalid documents are reported in `violations` and `invalid` (locations and error types,
    no values) and the valid ones are still written: a page with one broken document must not
    hold back the other 999. The caller decides what a violation means (the consumer
    dead-letters). Raises ContractViolation for an unknown collection.
    """
    if collection not in contracts.DOCUMENT_MODELS:
        raise contracts.ContractViolation(collection, "<collection>: unknown_collection")
    count = len(documents)
    object_keys = [raw_object_key] * count if isinstance(raw_object_key, str) else raw_object_key
    if observed_at is None or isinstance(observed_at, datetime):
        observed: Sequence[datetime] = [observed_at or timezone.now()] * count
    else:
        observed = observed_at
    if len(object_keys) != count or len(observed) != count:
        raise ValueError("raw_object_key and observed_at need one value per document")
    result = NormalizeResult(collection=collection, user_id=user_id)
    parsed: list[tuple[int, Any]] = []
    for index, raw in enumerate(documents):
        try:
            parsed.append((index, contracts.parse_document(collection, raw)))
        except contracts.ContractViolation as exc:
            result.invalid[index] = exc.errors_summary
    result.valid = len(parsed)
    if collection == timeseries.COLLECTION and parsed:
        # Heart rate samples have no id: their own table and upsert (normalized/timeseries.py).
        samples = timeseries.samples_write(
            user_id=user_id, documents=parsed, object_keys=object_keys, observed=observed,
            now=timezone.now(),
        )  # fmt: skip
        result.invalid |= samples.unmappable
        result.samples_written = samples.written
        result.skipped_stale = samples.stale
        result.skipped_erased = samples.erased
        result.days = samples.days
    mapping = mappers.TABLES.get(collection)
    if mapping is not None and parsed:
        now = timezone.now()
        by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
        for index, document in parsed:
            try:
                values = mapping.row(document)
            except mappers.UnmappableDocument as exc:
                result.invalid[index] = str(exc)
                continue
            values |= {
                "user_id": user_id,
                "raw_object_key": object_keys[index],
                "normalizer_version": mapping.version,
                "updated_at": now,
                "source_observed_at": observed[index],
            }
            # One statement cannot update a row twice: of several documents for one key, the
            # one observed last wins (the last in order on a tie), as it would have had they
            # come one by one.
            key = tuple(values[name] for name in mapping.conflict_fields)
            earlier = by_key.get(key)
            if earlier is None or earlier["source_observed_at"] <= values["source_observed_at"]:
                by_key[key] = values
        _write_rows(mapping, user_id, collection, list(by_key.values()), result)
    result.violations = [
        f"[{index}] {summary}" for index, summary in sorted(result.invalid.items())
    ]
    return result


def _write_rows(
    mapping: mappers.TableMapping,
    user_id: str,
    collection: str,
    candidates: list[dict[str, Any]],
    result: NormalizeResult,
) -> None:
    """Upsert the mapped rows of one user under the user's lock, skipping tombstoned ones."""
    # savepoint=False: inside the consumer's transaction a savepoint would cost two round
    # trips and buy nothing, since any error here fails the whole message anyway.
    with transaction.atomic(savepoint=False):
        if not _lock_user(user_id):
            result.skipped_erased = len(candidates)
            return
        deleted = set(
            DeletedDocument.objects.filter(
                user_id=user_id,
                collection=collection,
                oura_id__in=[values["oura_id"] for values in candidates],
            ).values_list("oura_id", flat=True)
        )
        rows = [values for values in candidates if values["oura_id"] not in deleted]
        result.skipped_deleted = len(candidates) - len(rows)
        written = _upsert(mapping, rows) if rows else []
    result.skipped_stale = len(rows) - len(written)
    result.written_ids = [oura_id for oura_id, _ in written]
    result.days = {day for _, day in written}


@dataclass(frozen=True)
class DeleteResult:
    collection: str
    user_id: str
    oura_id: str
    removed_days: list[date]


def delete_document(
    *,
    user_id: str,
    provider_user_id: str,
    collection: str,
    oura_id: str,
    event_id: str = "",
    event_time: datetime | None = None,
) -> DeleteResult:
    """Remove the row of a deleted document, keep a tombstone, index the deletion. Idempotent."""
    days: list[date] = []
    with transaction.atomic():
        if not _lock_user(user_id):
            return DeleteResult(collection, user_id, oura_id, [])
        DeletedDocument.objects.get_or_create(
            user_id=user_id,
            collection=collection,
            oura_id=oura_id,
            defaults={"event_id": event_id},
        )
        mapping = mappers.TABLES.get(collection)
        if mapping is not None:
            table = connection.ops.quote_name(mapping.model._meta.db_table)
            sql = f"DELETE FROM {table} WHERE user_id = %s AND oura_id = %s"  # noqa: S608 - name from _meta
            params = [user_id, oura_id]
            if mapping.kind:
                sql += " AND kind = %s"
                params.append(mapping.kind)
            with connection.cursor() as cursor:
                cursor.execute(sql + " RETURNING day", params)
                days = sorted({row[0] for row in cursor.fetchall()})
        now = timezone.now()
        dedupe_key = hashlib.sha256(
            "|".join([PROVIDER, "tombstone", collection, provider_user_id, oura_id]).encode()
        ).hexdigest()
        _insert_raw_events(
            [
                RawEvent(
                    event_id=uuid.uuid5(DOCUMENT_EVENT_NAMESPACE, dedupe_key),
                    provider=PROVIDER,
                    kind=RawEvent.Kind.DOCUMENT,
                    status=RawEvent.Status.TOMBSTONE,
                    dedupe_key=dedupe_key,
                    user_id=user_id,
                    provider_user_id=provider_user_id,
                    data_type=collection,
                    event_type="delete",
                    object_id=oura_id,
                    event_time=event_time,
                    received_at=now,
                    # Nothing to archive: the delete notification's own envelope is archived
                    # under its webhook event by the relay.
                    archived_at=now,
                    publish_subject="",
                )
            ]
        )
    return DeleteResult(collection=collection, user_id=user_id, oura_id=oura_id, removed_days=days)


def normalized_publish(
    *,
    user_id: str,
    collection: str,
    change: Literal["upsert", "delete"],
    ids: Iterable[str],
    days: Iterable[date],
    source_event_id: str,
) -> bool:
    """Announce committed changes on health.normalized.user.{userId}.metrics.

    Ids and days only, never values. The msg id is derived from the source event, so a
    redelivered message that republishes inside the duplicate window is dropped by JetStream.
    Returns False when there was nothing to say. Raises BusUnavailable.
    """
    ids, days = sorted(set(ids)), sorted(set(days))
    # Time series samples have no ids: their announcement names the days alone.
    series = collection == timeseries.COLLECTION
    named = ids or ([day.isoformat() for day in days] if series else [])
    if not named:
        return False
    mapping = mappers.TABLES.get(collection)
    message = NormalizedMetricsMessage(
        user_id=user_id,
        provider="oura",
        data_type=collection,
        change=change,
        days=days,
        ids=ids,
        normalizer_version=mapping.version if mapping is not None else mappers.NORMALIZER_VERSION,
        occurred_at=timezone.now(),
    )
    digest = hashlib.sha256("|".join(named).encode()).hexdigest()[:16]
    bus.get_bus().publish(
        normalized_metrics_subject(user_id),
        message.to_bytes(),
        msg_id=f"norm-{source_event_id}-{collection}-{change}-{digest}",
    )
    return True


def raw_objects_forget(*, object_keys: Sequence[str]) -> int:
    """Retention purged these raw objects: rows normalized from them say so (a blank
    `raw_object_key` means "its raw document was purged"), rather than pointing at nothing."""
    if not object_keys:
        return 0
    changed = 0
    changed += timeseries.samples_forget_raw(object_keys=object_keys)
    for model in {mapping.model for mapping in mappers.TABLES.values()}:
        changed += model._default_manager.filter(raw_object_key__in=list(object_keys)).update(
            raw_object_key=""
        )
    return changed
