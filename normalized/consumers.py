"""The normalizer's handlers: raw messages on HEALTH_RAW → rows in the normalized tables.

Registered in core/consumers.py as `normalizer` (`python manage.py run_consumer normalizer`).
`handle_raw_message(data, meta)` routes by subject:

- `health.raw.oura.webhook`: create/update → fetch the document with the user's connection,
  store it raw (S3 + raw_events_index), validate, upsert, publish; delete (or a 404 on the
  fetch) → remove the row and keep a tombstone.
- `health.raw.oura.{collection}`: a backfill page; its bytes are in S3 under `object_key`.
  Every document is validated and the page is upserted in one transaction.

`handle_raw_batch(messages, executor)` is what the runner calls with a whole fetched batch:
the webhook creates/updates of the batch are fetched in parallel (several of one user and type
with one range request, normalized/coalesce.py) and then stored and upserted in one
transaction (one commit instead of one per message); every other message goes through
`handle_raw_message` unchanged.

Failures are mapped to Retriable / Poison in `_classified`, the one place that knows which
exceptions of Oura, S3, NATS and the contracts mean what. See docs/phase-3/consumers.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.db import transaction
from django.utils import timezone
from opentelemetry.context import Context
from pydantic import ValidationError

from core import bus, raw_store, tracing
from core.consumers import MessageMeta, Poison, Retriable, run_on_workers
from core.messages import (
    PAGE_SUBJECT_PREFIX,
    WEBHOOK_SUBJECT,
    BusMessage,
    PageEnvelope,
    RawWebhookEnvelope,
    WebhookNotification,
)
from core.metrics import (
    normalize_duration_ms,
    oura_webhook_documents_total,
    webhook_to_row_seconds,
)
from core.pseudonyms import person_hash
from ingestion.data_types import WEBHOOK_TYPES
from ingestion.models import OuraConnection
from ingestion.oura_client import (
    NeedsReauth,
    OuraCircuitOpen,
    OuraRateLimited,
    OuraRequestError,
    OuraUnavailable,
    get_client,
)
from ingestion.rate_budget import BudgetExhausted, Prepaid
from ingestion.selectors import connections_by_user
from normalized import coalesce, contracts, services

logger = logging.getLogger(__name__)

EnvelopeT = TypeVar("EnvelopeT", bound=BusMessage)


def _parse_envelope(model: type[EnvelopeT], data: bytes) -> EnvelopeT:
    """The envelope as the bus contract's model (core/messages.py), which producers build."""
    try:
        return model.from_bytes(data)
    except ValidationError as exc:
        raise Poison(
            f"bad envelope: {contracts.summarize_validation_errors(exc)}", error_type="BadEnvelope"
        ) from None


# --- Error classification, once ------------------------------------------------------------


def _after_breaker(retry_after_s: float) -> float:
    """A nak delay that ends after the breaker's open time, spread a little so the messages
    do not all come back in the same instant."""
    return max(1.0, retry_after_s) * random.uniform(1.0, 1.2)


@contextmanager
def _classified() -> Iterator[None]:
    try:
        yield
    except OuraRateLimited as exc:
        raise Retriable(
            "Oura rate limited", delay_s=max(1.0, exc.retry_after_s), error_type="OuraRateLimited"
        ) from None
    except BudgetExhausted as exc:
        raise Retriable(
            "Oura budget exhausted",
            delay_s=max(1.0, exc.retry_after_s),
            error_type="BudgetExhausted",
        ) from None
    except OuraCircuitOpen as exc:
        # Oura was not called. The runner stops fetching while the breaker is open; this
        # message comes back once it may close (docs/phase-3/consumers.md, "Oura outages").
        raise Retriable(
            "Oura circuit open", delay_s=_after_breaker(exc.retry_after_s or 0.0),
            error_type="OuraCircuitOpen",
        ) from None  # fmt: skip
    except OuraUnavailable as exc:
        delay = None if exc.retry_after_s is None else _after_breaker(exc.retry_after_s)
        raise Retriable("Oura unavailable", delay_s=delay, error_type="OuraUnavailable") from None
    except raw_store.RawStoreUnavailable:
        raise Retriable("S3 unavailable", error_type="RawStoreUnavailable") from None
    except bus.BusUnavailable:
        raise Retriable("NATS unavailable", error_type="BusUnavailable") from None
    except OuraRequestError as exc:
        # 403 (membership lapsed), 400, 422: asking again will not change Oura's mind. A
        # person can replay the dead letter once the cause is gone.
        raise Poison(f"Oura answered {exc.status}", error_type="OuraRequestError") from None
    except contracts.ContractViolation as exc:
        raise Poison(str(exc), error_type="ContractViolation") from None


def _as_handler_error(exc: Exception) -> Exception:
    """What `_classified` makes of `exc`, for a batch result that is returned, not raised."""
    try:
        with _classified():
            raise exc
    except Exception as classified:
        return classified
    return exc  # not reached: _classified lets every exception out


# --- Entry point ---------------------------------------------------------------------------


def handle_raw_message(data: bytes, meta: MessageMeta) -> None:
    started = time.perf_counter()
    if meta.subject == WEBHOOK_SUBJECT:
        kind = "webhook"
        handler = handle_webhook
    elif meta.subject.startswith(PAGE_SUBJECT_PREFIX):
        kind = "page"
        handler = handle_page
    else:
        raise Poison("no handler for this subject", error_type="UnknownSubject")
    try:
        with _classified():
            handler(data, meta)
    finally:
        normalize_duration_ms.labels(kind=kind).observe((time.perf_counter() - started) * 1000)


def handle_raw_batch(
    messages: Sequence[tuple[bytes, MessageMeta]], executor: Executor
) -> list[Exception | None]:
    """The runner's batch entry point: one result per message (None or its exception).

    Per message and in parallel on `executor`: webhook creates/updates are parsed, looked up
    and fetched (`fetch_webhook`); every other message (backfill pages, deletes, unknown
    subjects) is handled whole by `handle_raw_message`, exactly as without batching. Several
    webhooks of one user and type are read with one range request (normalized/coalesce.py),
    made alongside the other messages' fetches; their own first passes follow, taking their
    documents from it. Then the fetched documents are written together
    (`write_webhook_documents`).
    """

    shared = WebhookBatch.prepare(messages)
    grouped = shared.grouped_indexes if shared is not None else []
    grouped_set = set(grouped)
    others = [index for index in range(len(messages)) if index not in grouped_set]

    def first_pass(item: tuple[bytes, MessageMeta]) -> FetchedWebhook | None:
        # On a worker thread: this message's work belongs to its own trace.
        with tracing.attached(item[1].trace_context):
            return first_pass_traced(item)

    def first_pass_traced(item: tuple[bytes, MessageMeta]) -> FetchedWebhook | None:
        data, meta = item
        if meta.subject != WEBHOOK_SUBJECT:
            handle_raw_message(data, meta)
            return None
        started = time.perf_counter()
        fetched: FetchedWebhook | None = None
        try:
            with _classified():
                fetched = fetch_webhook(data, meta, shared)
        finally:
            if fetched is None:  # done or failed here; otherwise timed with its batch
                normalize_duration_ms.labels(kind="webhook").observe(
                    (time.perf_counter() - started) * 1000
                )
        return fetched

    def range_or_first_pass(task: coalesce.GroupKey | int) -> object:
        if isinstance(task, coalesce.GroupKey):
            assert shared is not None  # only a batch with groups has range tasks
            return shared.fetch_range(task)
        return first_pass(messages[task])

    # The range requests alongside the other messages' first passes (one round trip to Oura
    # for both), then the first passes of the messages they stand for.
    range_keys: list[coalesce.GroupKey | int] = list(shared.groups) if shared is not None else []
    done = run_on_workers(executor, range_or_first_pass, range_keys + list(others))
    if shared is not None:
        shared.keep_ranges(range_keys, done[: len(range_keys)])
    firsts: list[object] = [None] * len(messages)
    for index, result in zip(others, done[len(range_keys) :], strict=True):
        firsts[index] = result
    served = run_on_workers(executor, first_pass, [messages[index] for index in grouped])
    for index, result in zip(grouped, served, strict=True):
        firsts[index] = result
    results: list[Exception | None] = [
        result if isinstance(result, Exception) else None for result in firsts
    ]
    fetched = [(i, result) for i, result in enumerate(firsts) if isinstance(result, FetchedWebhook)]
    if fetched:
        written = write_webhook_documents([result for _, result in fetched], executor)
        finished = time.perf_counter()
        for (index, result), error in zip(fetched, written, strict=True):
            results[index] = error
            normalize_duration_ms.labels(kind="webhook").observe((finished - result.started) * 1000)
    return results


# --- Webhooks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookBatch:
    """What the webhook messages of one fetched batch share, looked up once before their
    parallel fetches: the connections (one query), the Oura budget units (one statement) and
    the coalesced range requests of several webhooks of one user and type (`fetch_ranges`).
    """

    by_user: dict[str, OuraConnection]
    by_provider_user: dict[str, OuraConnection]
    prepaid: Prepaid
    groups: dict[coalesce.GroupKey, list[coalesce.Member]] = field(default_factory=dict)
    ranges: dict[coalesce.GroupKey, coalesce.RangeFetch] = field(default_factory=dict)
    # A group's first message's consume span: its range request is traced there.
    trace_contexts: dict[str, Context | None] = field(default_factory=dict)
    # The batch's messages (by index) whose first pass waits for their group's range
    # request, in order: known once the groups are planned, so the envelopes are not parsed
    # again for it.
    grouped_indexes: list[int] = field(default_factory=list)

    @classmethod
    def prepare(cls, messages: Sequence[tuple[bytes, MessageMeta]]) -> WebhookBatch | None:
        envelopes: list[RawWebhookEnvelope] = []
        indexes: list[int] = []  # each envelope's index in `messages`
        trace_contexts: dict[str, Context | None] = {}
        for index, (data, meta) in enumerate(messages):
            if meta.subject != WEBHOOK_SUBJECT:
                continue
            try:
                envelope = RawWebhookEnvelope.from_bytes(data)
            except ValidationError:
                continue  # poison: fetch_webhook parses it again and says why
            envelopes.append(envelope)
            indexes.append(index)
            trace_contexts.setdefault(str(envelope.event_id), meta.trace_context)
        if not envelopes:
            return None
        return cls.of(
            envelopes, coalesced=coalesce.enabled(), trace_contexts=trace_contexts,
            indexes=indexes,
        )  # fmt: skip

    @classmethod
    def of(
        cls,
        envelopes: Sequence[RawWebhookEnvelope],
        *,
        coalesced: bool = False,
        trace_contexts: dict[str, Context | None] | None = None,
        indexes: Sequence[int] | None = None,
    ) -> WebhookBatch:
        """The batch of `envelopes`; `indexes` are their messages' indexes in the fetched
        batch (by default their positions in `envelopes`), for `grouped_indexes`."""
        by_user, by_provider_user = connections_by_user(
            user_ids={envelope.user_id for envelope in envelopes if envelope.user_id},
            provider_user_ids={envelope.notification.user_id for envelope in envelopes},
        )
        fetches = 0
        candidates: list[tuple[str, coalesce.Member]] = []
        candidate_indexes: list[int] = []  # each candidate's message index
        positions = range(len(envelopes)) if indexes is None else indexes
        for index, envelope in zip(positions, envelopes, strict=True):
            conn = _find_connection(by_user, by_provider_user, envelope)
            notification = envelope.notification
            collection = WEBHOOK_TYPES.get(notification.data_type)
            if (
                notification.event_type != "delete"
                and collection is not None
                and conn is not None
                and conn.status == OuraConnection.Status.ACTIVE
            ):
                fetches += 1
                event_time = _event_time(notification.event_time)
                if event_time is not None:
                    candidates.append(
                        (collection, coalesce.Member(
                            event_id=str(envelope.event_id), object_id=notification.object_id,
                            event_time=event_time, connection=conn,
                        ))
                    )  # fmt: skip
                    candidate_indexes.append(index)
        groups = coalesce.plan(candidates) if coalesced else {}
        # One request per group instead of one per member; the members a range does not
        # hold are fetched by id with units of the shared budget.
        fetches -= sum(len(members) - 1 for members in groups.values())
        # The members of a planned group (a connection is one per user, so every candidate
        # with a group's key is one of its members): `group_of` is not None for just these.
        grouped = [
            index
            for index, (collection, member) in zip(candidate_indexes, candidates, strict=True)
            if groups and coalesce.group_key(collection, member) in groups
        ]
        return cls(
            by_user, by_provider_user, Prepaid.take(fetches), groups,
            trace_contexts=trace_contexts or {}, grouped_indexes=grouped,
        )  # fmt: skip

    def connection(self, envelope: RawWebhookEnvelope) -> OuraConnection | None:
        # Each message its own instance: a token refresh updates the one it was given.
        return copy.copy(_find_connection(self.by_user, self.by_provider_user, envelope))

    def group_of(self, envelope: RawWebhookEnvelope) -> coalesce.GroupKey | None:
        """The group whose range request stands for this webhook's fetch, if it has one."""
        if not self.groups or envelope.notification.event_type == "delete":
            return None
        conn = _find_connection(self.by_user, self.by_provider_user, envelope)
        collection = WEBHOOK_TYPES.get(envelope.notification.data_type)
        event_time = _event_time(envelope.notification.event_time)
        if conn is None or collection is None or event_time is None:
            return None
        member = coalesce.Member(event_id="", object_id="", event_time=event_time, connection=conn)
        key = coalesce.group_key(collection, member)
        return key if key in self.groups else None

    def fetch_range(self, key: coalesce.GroupKey) -> coalesce.RangeFetch:
        """One group's range request, on a worker thread, in its first message's trace."""
        first = self.groups[key][0]
        with tracing.attached(self.trace_contexts.get(first.event_id)):
            # Its own copy of the connection, like each message (a refresh updates it).
            return coalesce.fetch_range(key, copy.copy(first.connection), self.prepaid)

    def keep_ranges(self, keys: Sequence[object], results: Sequence[object]) -> None:
        """What the range requests came to, for the members' `fetch_webhook`."""
        for key, result in zip(keys, results, strict=True):
            if isinstance(key, coalesce.GroupKey) and isinstance(result, coalesce.RangeFetch):
                self.ranges[key] = result
            elif isinstance(key, coalesce.GroupKey):
                # Not Oura's answer (e.g. Postgres away while taking a budget unit): no range,
                # so each member fetches by id and fails or succeeds as it would have.
                logger.warning(
                    "oura_range_fetch_error",
                    extra={"collection": key.collection, "error_type": type(result).__name__},
                )

    def range_for(self, envelope: RawWebhookEnvelope) -> coalesce.RangeFetch | None:
        """The range request that stands for this webhook's fetch, if its group had one."""
        key = self.group_of(envelope) if self.ranges else None
        return self.ranges.get(key) if key is not None else None


def _find_connection(
    by_user: dict[str, OuraConnection],
    by_provider_user: dict[str, OuraConnection],
    envelope: RawWebhookEnvelope,
) -> OuraConnection | None:
    """By our `user_id`, else by Oura's; None when it is now linked to another Oura account."""
    conn = by_user.get(envelope.user_id) if envelope.user_id else None
    if conn is None:
        conn = by_provider_user.get(envelope.notification.user_id)
    if conn is not None and conn.provider_user_id != envelope.notification.user_id:
        # Our user reconnected with another Oura account: this event is not theirs any more.
        return None
    return conn


def _event_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class FetchedWebhook:
    """A webhook create/update whose document is fetched and not yet stored."""

    event_id: str
    observed_at: datetime  # before the fetch: the state we got is at least this new
    document: services.FetchedDocument
    started: float  # perf_counter at the start of the message, for the duration metric
    received_at: datetime | None = None  # when the webhook reached us, for webhook_to_row
    trace_context: Context | None = None  # the message's consume span, for the write's span


def fetch_webhook(
    data: bytes, meta: MessageMeta, batch: WebhookBatch | None = None
) -> FetchedWebhook | None:
    """Everything of a webhook message before its database writes: parse, look up, fetch.

    Returns None when the message is done here: dropped (no connection, revoked, needs
    reauth) or a delete (or a 404 on the fetch), which is written at once. The connection and
    the budget unit come from `batch`, what the message's batch looked up and took together;
    without one, the message is looked up as a batch of one.
    """
    started = time.perf_counter()
    envelope: RawWebhookEnvelope = _parse_envelope(RawWebhookEnvelope, data)
    notification = envelope.notification
    collection = WEBHOOK_TYPES.get(notification.data_type)
    if collection is None:
        raise Poison("unsupported webhook data_type", error_type="UnknownCollection")
    event_id = str(envelope.event_id)
    log = {"event_id": event_id, "collection": collection,
           "event_type": notification.event_type}  # fmt: skip

    # A batch looks its connections up before its fetches; a single message is a batch of one.
    batch = batch or WebhookBatch.of([envelope])
    conn = batch.connection(envelope)
    if conn is None or conn.status == OuraConnection.Status.REVOKED:
        # Revoked or gone: the person withdrew consent; their data must not be fetched.
        logger.info("normalizer_dropped_no_connection", extra=log)
        return None

    if notification.event_type == "delete":
        _delete(conn, collection, notification, event_id)
        return None

    observed_at = timezone.now()  # before the fetch: the state we get is at least this new
    event_time = _event_time(notification.event_time)
    ranged = batch.range_for(envelope)
    document: Mapping[str, Any] | None = None
    try:
        if ranged is not None:
            if ranged.needs_reauth:  # the user's token, which this message's fetch needs too
                raise NeedsReauth("refused on the group's range request")
            document = ranged.documents.get(notification.object_id)
            if not ranged.failed:
                coalesce.note(collection, hit=document is not None)
            if document is not None:
                observed_at = ranged.observed_at  # the range was read before this instant
                started = min(started, ranged.started)
        oura_webhook_documents_total.labels(via="by_id" if document is None else "range").inc()
        if document is None:
            # Not coalesced, not in the range (older, deleted meanwhile) or the range request
            # failed: by id, as ever, so it fails or succeeds as it would have.
            document = get_client().get_document(
                conn, collection, notification.object_id, prepaid=batch.prepaid
            )
    except NeedsReauth:
        # The client already marked the connection needs_reauth and audited it once. Only the
        # person can fix this; retrying would loop and dead letters would fill with one
        # user's events. The backfill that follows their reconnect recovers the gap.
        logger.warning(
            "normalizer_dropped_needs_reauth", extra=log | {"person": person_hash(conn.user_id)}
        )
        return None
    if document is None:
        # Gone at Oura by the time we asked: the delete notification may still be on its way.
        _delete(conn, collection, notification, event_id)
        return None
    return FetchedWebhook(
        event_id=event_id,
        observed_at=observed_at,
        document=services.FetchedDocument(
            user_id=conn.user_id,
            provider_user_id=conn.provider_user_id,
            collection=collection,
            object_id=notification.object_id,
            event_type=notification.event_type,
            event_time=event_time,
            document=document,
        ),
        started=started,
        received_at=envelope.received_at,
        trace_context=meta.trace_context,
    )


def handle_webhook(data: bytes, meta: MessageMeta) -> None:
    fetched = fetch_webhook(data, meta)
    if fetched is None:
        return
    (error,) = write_webhook_documents([fetched])
    if error is not None:
        raise error


def write_webhook_documents(
    batch: Sequence[FetchedWebhook], executor: Executor | None = None
) -> list[Exception | None]:
    """Store, upsert and announce fetched webhook documents: one transaction for them all.

    Returns one result per document: None (done) or the exception its message would have
    raised (already classified). In the transaction: the raw index rows and the S3 PUTs
    (`documents_store_raw`; a failed PUT makes only its own message retriable), then one
    upsert per (user, collection). After the commit, one metrics message per (user,
    collection). If the transaction fails, nothing of it is committed and every message gets
    the same error, so the whole batch is retried.
    """
    results: list[Exception | None] = [None] * len(batch)
    groups: dict[tuple[str, str], list[int]] = {}
    normalized: dict[tuple[str, str], services.NormalizeResult] = {}
    # One span for the batch's one transaction: in the trace of its first message, linked
    # from the others (a batch of one, the quiet case, is wholly in its webhook's trace).
    batch_span = tracing.batch_span(
        "normalize write", [fetched.trace_context for fetched in batch],
        attributes={"health.documents": len(batch)},
    )  # fmt: skip
    try:
        # One commit for the raw index rows and the upserts: each commit waits for a WAL flush.
        with batch_span, transaction.atomic():
            stored = services.documents_store_raw(
                documents=[fetched.document for fetched in batch], executor=executor
            )
            object_keys: list[str] = []
            for index, outcome in enumerate(stored):
                if isinstance(outcome, services.StoredDocument):
                    document = batch[index].document
                    groups.setdefault((document.user_id, document.collection), []).append(index)
                    object_keys.append(outcome.object_key)
                else:
                    results[index] = _as_handler_error(outcome)
                    object_keys.append("")
            # Sorted by user: each upsert takes its user's advisory lock until the commit, and
            # taking them in one order everywhere means two batches can never deadlock.
            for group in sorted(groups):
                user_id, collection = group
                members = groups[group]
                normalized[group] = services.normalize_documents(
                    user_id=user_id,
                    collection=collection,
                    documents=[batch[index].document.document for index in members],
                    raw_object_key=[object_keys[index] for index in members],
                    observed_at=[batch[index].observed_at for index in members],
                )
    except Exception as exc:
        error = _as_handler_error(exc)
        return [error] * len(batch)

    for group in sorted(groups):
        user_id, collection = group
        members, result = groups[group], normalized[group]
        done = []
        for position, index in enumerate(members):
            if position in result.invalid:
                # Kept raw in S3 (above); the dead letter is replayed once the contract is
                # fixed. The other documents of the batch are committed all the same.
                results[index] = Poison(
                    f"{collection} document violates the Oura contract: "
                    f"[0] {result.invalid[position]}",
                    error_type="ContractViolation",
                )
            else:
                done.append(index)
        event_ids = sorted({batch[index].event_id for index in done})
        committed = timezone.now()
        for index in done:
            received_at = batch[index].received_at
            if received_at is not None:
                webhook_to_row_seconds.observe(max(0.0, (committed - received_at).total_seconds()))
        try:
            with tracing.attached(batch[members[0]].trace_context):
                services.normalized_publish(
                    user_id=user_id, collection=collection, change="upsert",
                    ids=result.written_ids, days=result.days,
                    source_event_id=_source_event_id(event_ids),
                )  # fmt: skip
        except Exception as exc:
            # The rows are committed but not announced: the redelivery rewrites them (same
            # values) and announces them.
            error = _as_handler_error(exc)
            for index in done:
                results[index] = error
            continue
        logger.info(
            "normalized_webhook",
            extra={"event_ids": event_ids, "collection": collection,
                   "written": len(result.written_ids), "stale": result.skipped_stale,
                   "deleted": result.skipped_deleted, "stored_as_rows": result.stored_as_rows},
        )  # fmt: skip
    return results


def _source_event_id(event_ids: list[str]) -> str:
    """The announcement's source for its Nats-Msg-Id: the event itself, or a digest of a
    batch's events (a redelivery of the same batch is then deduplicated too)."""
    if len(event_ids) == 1:
        return event_ids[0]
    return "batch-" + hashlib.sha256("|".join(event_ids).encode()).hexdigest()[:32]


def _delete(
    conn: OuraConnection, collection: str, notification: WebhookNotification, event_id: str
) -> None:
    result = services.delete_document(
        user_id=conn.user_id,
        provider_user_id=conn.provider_user_id,
        collection=collection,
        oura_id=notification.object_id,
        event_id=event_id,
        event_time=_event_time(notification.event_time),
    )
    if result.removed_days:
        services.normalized_publish(
            user_id=conn.user_id, collection=collection, change="delete",
            ids=[notification.object_id], days=result.removed_days, source_event_id=event_id,
        )  # fmt: skip
    logger.info(
        "normalized_delete",
        extra={"event_id": event_id, "collection": collection,
               "removed": bool(result.removed_days)},
    )  # fmt: skip


# --- Backfill pages ------------------------------------------------------------------------


def _page_bytes(object_key: str) -> bytes:
    try:
        return raw_store.get(object_key)
    except raw_store.RawStoreUnavailable:
        # Distinguish "S3 is away" (retry) from "the object is not there" (never will be).
        if raw_store.head(object_key) is None:
            raise Poison("page object not found in S3", error_type="PageMissing") from None
        raise


def handle_page(data: bytes, meta: MessageMeta) -> None:
    envelope: PageEnvelope = _parse_envelope(PageEnvelope, data)
    if meta.subject != PAGE_SUBJECT_PREFIX + envelope.collection:
        raise Poison("subject and envelope collection differ", error_type="BadEnvelope")
    if envelope.collection not in contracts.DOCUMENT_MODELS:
        raise Poison("unknown collection", error_type="UnknownCollection")
    page = _page_bytes(envelope.object_key)
    if hashlib.sha256(page).hexdigest() != envelope.sha256:
        raise Poison("page bytes do not match the envelope sha256", error_type="ChecksumMismatch")
    try:
        body = json.loads(page)
        documents = body["data"]
        if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise Poison("page is not an Oura collection response", error_type="BadPage") from None

    result = services.normalize_documents(
        user_id=envelope.user_id,
        collection=envelope.collection,
        documents=documents,
        raw_object_key=envelope.object_key,
        observed_at=envelope.received_at,
    )
    services.normalized_publish(
        user_id=envelope.user_id, collection=envelope.collection, change="upsert",
        ids=result.written_ids, days=result.days, source_event_id=str(envelope.event_id),
    )  # fmt: skip
    logger.info(
        "normalized_page",
        extra={"event_id": str(envelope.event_id), "collection": envelope.collection,
               "documents": len(documents),
               "written": len(result.written_ids) or result.samples_written,
               "stale": result.skipped_stale, "deleted": result.skipped_deleted,
               "violations": len(result.violations)},
    )  # fmt: skip
    if result.violations:
        # The valid documents are committed above; the dead letter brings the page back
        # once the contract is fixed, and the upserts make that replay harmless.
        raise Poison(
            f"{len(result.violations)} of {len(documents)} documents violate the contract; "
            f"first: {result.violations[0]}",
            error_type="ContractViolation",
        )
