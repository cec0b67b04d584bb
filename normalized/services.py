"""Writes of the normalized domain: raw documents in, typed rows out.

- `document_store_raw`: a document fetched from Oura goes to S3 and into raw_events_index,
  idempotently (same bytes, same key, one index row).
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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from django.db import connection, transaction
from django.utils import timezone

from core import bus, raw_store
from ingestion.models import RawEvent
from normalized import contracts, mappers
from normalized.dtos import NormalizedMetricsMessage, normalized_metrics_subject
from normalized.models import DeletedDocument

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


@dataclass
class NormalizeResult:
    collection: str
    user_id: str
    valid: int = 0
    written_ids: list[str] = field(default_factory=list)
    days: set[date] = field(default_factory=set)
    skipped_deleted: int = 0
    skipped_stale: int = 0
    violations: list[str] = field(default_factory=list)  # "index: loc: type", no values

    @property
    def stored_as_rows(self) -> bool:
        return self.collection in mappers.TABLES


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """Deterministic JSON, so a re-fetch of an unchanged document has the same sha256."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_dedupe_key(*, collection: str, object_id: str, sha256: str) -> str:
    parts = [PROVIDER, "document", collection, object_id, sha256]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _insert_raw_event(event: RawEvent) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; False when the row was already there.

    A concurrent insert of the same key waits for the first one's transaction to end, then
    finds the conflict (or, if that transaction rolled back, inserts after all).
    """
    fields = [f for f in RawEvent._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(getattr(event, f.attname), connection) for f in fields]
    table = connection.ops.quote_name(RawEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column or f.attname) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "  # noqa: S608 - names from _meta
            "ON CONFLICT DO NOTHING RETURNING 1",
            values,
        )
        return cursor.fetchone() is not None


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
    """Archive one fetched document (S3, SSE) and index it as a raw event of kind document.

    The index row goes in first, in the caller's transaction (or its own): the unique dedupe
    key (the document's sha256) decides in that one statement whether these exact bytes are
    stored already, in which case there is no PUT. Otherwise the PUT follows, and if it fails
    the row goes with the rolled-back transaction, so no row ever points at a missing object.

    Raises RawStoreUnavailable when S3 refuses the PUT (the caller retries).
    """
    data = document_bytes(document)
    sha256 = hashlib.sha256(data).hexdigest()
    dedupe_key = document_dedupe_key(collection=collection, object_id=object_id, sha256=sha256)
    event_id = uuid.uuid5(DOCUMENT_EVENT_NAMESPACE, dedupe_key)
    now = timezone.now()
    key = raw_store.object_key(
        provider=PROVIDER, day=now.astimezone(UTC).date(), user_id=user_id, event_id=str(event_id)
    )
    with transaction.atomic(savepoint=False):
        inserted = _insert_raw_event(
            RawEvent(
                event_id=event_id,
                provider=PROVIDER,
                kind=RawEvent.Kind.DOCUMENT,
                status=RawEvent.Status.ACCEPTED,
                dedupe_key=dedupe_key,
                user_id=user_id,
                provider_user_id=provider_user_id,
                data_type=collection,
                event_type=event_type,
                object_id=object_id,
                event_time=event_time,
                received_at=now,
                object_key=key,
                sha256=sha256,
                size_bytes=len(data),
                # Stored in S3 below and never published: nothing for the relay to do.
                archived_at=now,
                publish_subject="",
            )
        )
        if not inserted:
            existing = (
                RawEvent.objects.filter(provider=PROVIDER, dedupe_key=dedupe_key)
                .values_list("object_key", flat=True)
                .get()
            )
            return StoredDocument(
                event_id=event_id, object_key=existing, sha256=sha256, reused=True
            )
        raw_store.put(key, data)
    return StoredDocument(event_id=event_id, object_key=key, sha256=sha256, reused=False)


def _lock_user(user_id: str) -> None:
    # Serialises every normalized write of one user across processes; other users proceed.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"norm:{user_id}"])


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
    raw_object_key: str,
    observed_at: datetime | None = None,
) -> NormalizeResult:
    """Validate `documents` of one collection and upsert the valid ones in one transaction.

    Invalid documents are reported in `violations` (locations and error types, no values)
    and the valid ones are still written: a page with one broken document must not hold back
    the other 999. The caller decides what a violation means (the consumer dead-letters).
    Raises ContractViolation for an unknown collection.
    """
    if collection not in contracts.DOCUMENT_MODELS:
        raise contracts.ContractViolation(collection, "<collection>: unknown_collection")
    observed_at = observed_at or timezone.now()
    result = NormalizeResult(collection=collection, user_id=user_id)
    parsed: list[Any] = []
    for index, raw in enumerate(documents):
        try:
            parsed.append(contracts.parse_document(collection, raw))
        except contracts.ContractViolation as exc:
            result.violations.append(f"[{index}] {exc.errors_summary}")
    result.valid = len(parsed)
    mapping = mappers.TABLES.get(collection)
    if mapping is None or not parsed:
        return result  # kept raw only (docs/phase-3/consumers.md)

    now = timezone.now()
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for index, document in enumerate(parsed):
        try:
            values = mapping.row(document)
        except mappers.UnmappableDocument as exc:
            result.violations.append(f"[{index}] {exc}")
            continue
        values |= {
            "user_id": user_id,
            "raw_object_key": raw_object_key,
            "normalizer_version": mappers.NORMALIZER_VERSION,
            "updated_at": now,
            "source_observed_at": observed_at,
        }
        # One statement cannot update a row twice: the last document of a key wins, as it
        # would have had the documents come one by one.
        by_key[tuple(values[name] for name in mapping.conflict_fields)] = values

    # savepoint=False: inside the consumer's transaction a savepoint would cost two round
    # trips and buy nothing, since any error here fails the whole message anyway.
    with transaction.atomic(savepoint=False):
        _lock_user(user_id)
        deleted = set(
            DeletedDocument.objects.filter(
                user_id=user_id,
                collection=collection,
                oura_id__in=[values["oura_id"] for values in by_key.values()],
            ).values_list("oura_id", flat=True)
        )
        rows = [values for values in by_key.values() if values["oura_id"] not in deleted]
        result.skipped_deleted = len(by_key) - len(rows)
        written = _upsert(mapping, rows) if rows else []
    result.skipped_stale = len(rows) - len(written)
    result.written_ids = [oura_id for oura_id, _ in written]
    result.days = {day for _, day in written}
    return result


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
        _lock_user(user_id)
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
        _insert_raw_event(
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
    ids = sorted(set(ids))
    if not ids:
        return False
    message = NormalizedMetricsMessage(
        user_id=user_id,
        provider="oura",
        data_type=collection,
        change=change,
        days=sorted(set(days)),
        ids=ids,
        normalizer_version=mappers.NORMALIZER_VERSION,
        occurred_at=timezone.now(),
    )
    digest = hashlib.sha256("|".join(ids).encode()).hexdigest()[:16]
    bus.get_bus().publish(
        normalized_metrics_subject(user_id),
        message.model_dump_json().encode(),
        msg_id=f"norm-{source_event_id}-{collection}-{change}-{digest}",
    )
    return True
