"""Storing and publishing accepted webhook deliveries, many requests to one statement.

`webhook_record_batch` writes verified deliveries in ONE statement (so one transaction, one
commit): per delivery it looks up the owner and the erasure tombstone, inserts the raw event
with its envelope and, for each row really inserted, one audit entry. A batch of one is the
single-delivery case; the request path hands its delivery to the `GroupCommitter` instead,
whose thread writes every delivery that arrived while the previous batch was being written,
then publishes the batch's envelopes to JetStream with one hand-off to the bus's event loop
and answers each waiting request once its ack (or failure) is known.

Why (issue #19): per accepted webhook the request path cost one statement with its parse,
plan and commit (a WAL flush, and the audit chain's lock is held across it), the ORM's and
the driver's per-statement Python, and a publish round trip with two thread hand-offs. On a
2-core machine that was most of the CPU per webhook. Concurrent requests of one process now
share them: batches form by themselves under load (a batch is whatever queued while the
last one ran) and add no wait when idle (a lone delivery is written at once).

What a 202 promises is unchanged: the request waits for its batch's commit and for its
message's publish attempt, exactly as it waited for its own before.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from audit.models import AuditEntry
from core import bus, tracing
from core.metrics import webhook_commit_batch_size
from ingestion.models import OuraConnection, RawEvent
from privacy.models import ErasureTombstone

logger = logging.getLogger(__name__)

# After a failed publish, skip publishing on the request path for this long: during a NATS
# outage every request would otherwise wait for the full publish timeout. The relay
# publishes what was skipped.
PUBLISH_TIMEOUT_S = 1.0
PUBLISH_BREAKER_S = 5.0
# A batch larger than this waits for the next statement: bounds one statement's size and the
# time the audit chain's lock is held by one commit.
MAX_BATCH = 64
# The committer's own database connection is closed after this long without deliveries, so
# an idle process holds none (and a test database can be dropped at the end of a run).
IDLE_CLOSE_S = 2.0
# A request never waits longer than this for its batch: the database and publish timeouts
# end a batch well before; this only guards against a committer thread that died.
RESULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RecordRequest:
    """One verified delivery, as the statement needs it (webhook_services builds these)."""

    event_id: uuid.UUID
    dedupe_key: str
    provider_user_id: str
    data_type: str
    event_type: str
    object_id: str
    event_time: datetime | None
    received_at: datetime
    # The envelope's JSON up to the key "status", whose value and "user_id" only the
    # statement knows (the owner's).
    envelope_head: bytes
    # The Oura account's keyed hash: the audit entry's person_ref and the tombstone's key.
    person_ref: str
    trace_parent: str


@dataclass(frozen=True)
class RecordedEvent:
    pk: int
    event_id: uuid.UUID
    status: str
    data_type: str
    publish_subject: str
    envelope: bytes


# What became of one delivery: stored, already known (a redelivery), or not kept because its
# account's person was erased.
Outcome = RecordedEvent | Literal["duplicate", "erased"]


# --- the statement ----------------------------------------------------------------------

# db_table is `health"."name` (core/db.py): quoting it as a whole gives "health"."name".
_RAW = f'"{RawEvent._meta.db_table}"'
_AUDIT = f'"{AuditEntry._meta.db_table}"'
_CONNECTIONS = f'"{OuraConnection._meta.db_table}"'
_TOMBSTONES = f'"{ErasureTombstone._meta.db_table}"'


def _sql_literal(value: str) -> str:
    # Only for our own enum values below, which never contain a quote; checked anyway.
    if not value.replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"not a plain enum value: {value!r}")
    return f"'{value}'"


_ACCEPTED, _ORPHAN, _DROPPED = (
    _sql_literal(RawEvent.Status.ACCEPTED), _sql_literal(RawEvent.Status.ORPHAN),
    _sql_literal(RawEvent.Status.DROPPED),
)  # fmt: skip

# One statement, one implicit transaction (autocommit), for any number of deliveries with
# distinct event ids (the caller folds repeats of one id into one):
#
# - Status by owner: no connection -> orphan; revoked -> dropped (not published); anything
#   else (active, needs_reauth) -> accepted, published: the normalizer decides what a stale
#   token means. An erasure tombstone for the account -> nothing is written at all.
# - The envelope's last two keys, "status" and "user_id" (sort_keys order), depend on the
#   owner, so Python sends the rest and Postgres appends them with to_json(), whose escaping
#   of a string is the same as json.dumps(ensure_ascii=False). A test re-serialises stored
#   envelopes to check the bytes are exactly envelope_bytes() of the same dict.
# - ON CONFLICT DO NOTHING: a concurrent duplicate waits on the unique index until the
#   first copy commits, then conflicts, returns no row, and gets no audit entry (the audit
#   CTE selects FROM ins). A data-modifying CTE always runs, referenced or not.
# - Audit entries are inserted in raw event id order, so a batch's entries take their places
#   in the audit chain (health.audit_log_chain) in the order their events were stored.
# - The last SELECT answers for every input row, in input order: its stored row, or none,
#   with whether the account is erased (none and not erased means a duplicate).
# - Parameters (%(...)b) and rows go in Postgres' binary format: dumping eleven arrays as
#   text, and parsing the envelopes back from bytea's hex, was most of the client's work
#   for the statement (issue #19).
_RECORD_SQL = f"""
WITH input AS (
    SELECT * FROM unnest(
        %(event_id)b::uuid[], %(dedupe_key)b::text[], %(provider_user_id)b::text[],
        %(data_type)b::text[], %(event_type)b::text[], %(object_id)b::text[],
        %(event_time)b::timestamptz[], %(received_at)b::timestamptz[],
        %(envelope_head)b::bytea[], %(person_ref)b::text[], %(trace_parent)b::text[]
    ) WITH ORDINALITY AS i(event_id, dedupe_key, provider_user_id, data_type, event_type,
        object_id, event_time, received_at, envelope_head, person_ref, trace_parent, ord)
), owned AS (
    SELECT input.*,
           CASE WHEN c.status IS NULL THEN {_ORPHAN}
                WHEN c.status = {_sql_literal(OuraConnection.Status.REVOKED)} THEN {_DROPPED}
                ELSE {_ACCEPTED} END AS status,
           coalesce(c.user_id, '') AS user_id,
           t.ref IS NOT NULL AS erased
    FROM input
    LEFT JOIN {_CONNECTIONS} AS c ON c.provider_user_id = input.provider_user_id
    LEFT JOIN {_TOMBSTONES} AS t ON t.ref = input.person_ref
), ins AS (
    INSERT INTO {_RAW} (
        event_id, provider, kind, status, dedupe_key, user_id, provider_user_id, data_type,
        event_type, object_id, event_time, received_at, envelope, object_key, sha256,
        publish_subject, trace_parent)
    SELECT event_id, %(provider)b, %(kind)b, status, dedupe_key, user_id, provider_user_id,
        data_type, event_type, object_id, event_time, received_at,
        envelope_head || convert_to(
            to_json(status)::text || ',"user_id":' || to_json(user_id)::text || '}}', 'UTF8'),
        '', '', CASE WHEN status = {_ACCEPTED} THEN %(subject)b ELSE '' END, trace_parent
    FROM owned
    WHERE NOT erased
    ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING id, event_id, status, envelope, publish_subject
), audit AS (
    INSERT INTO {_AUDIT} (
        occurred_at, action, actor, user_id, person_ref, provider, event_id, details)
    SELECT owned.received_at,
        CASE ins.status
            WHEN {_ACCEPTED} THEN {_sql_literal(AuditEntry.Action.WEBHOOK_RECEIVED)}
            WHEN {_ORPHAN} THEN {_sql_literal(AuditEntry.Action.WEBHOOK_ORPHANED)}
            ELSE {_sql_literal(AuditEntry.Action.WEBHOOK_DROPPED)} END,
        'webhook:oura', '', owned.person_ref, %(provider)b, ins.event_id,
        jsonb_build_object('data_type', owned.data_type, 'event_type', owned.event_type,
                           'status', ins.status)
    FROM ins JOIN owned USING (event_id)
    ORDER BY ins.id
)
SELECT ins.id, ins.status, ins.envelope, ins.publish_subject, owned.erased
FROM owned LEFT JOIN ins USING (event_id)
ORDER BY owned.ord
"""  # noqa: S608 - table names from _meta, literals are our own enum values


def record_params(
    requests: Sequence[RecordRequest], *, provider: str, subject: str
) -> dict[str, object]:
    """_RECORD_SQL's parameters for `requests`: one array per column, in request order."""
    return {
        "event_id": [r.event_id for r in requests],
        "dedupe_key": [r.dedupe_key for r in requests],
        "provider_user_id": [r.provider_user_id for r in requests],
        "data_type": [r.data_type for r in requests],
        "event_type": [r.event_type for r in requests],
        "object_id": [r.object_id for r in requests],
        "event_time": [r.event_time for r in requests],
        "received_at": [r.received_at for r in requests],
        "envelope_head": [r.envelope_head for r in requests],
        "person_ref": [r.person_ref for r in requests],
        "trace_parent": [r.trace_parent for r in requests],
        "provider": provider,
        "kind": RawEvent.Kind.WEBHOOK.value,
        "subject": subject,
    }


def webhook_record_batch(
    requests: Sequence[RecordRequest], *, provider: str, subject: str
) -> list[Outcome]:
    """Write `requests` (distinct event ids) in one statement on this thread's connection.

    Returns one outcome per request, in order. Database errors propagate: then nothing of the
    batch was written.
    """
    if not requests:
        return []
    if len({r.event_id for r in requests}) != len(requests):
        raise ValueError("a batch holds each event id once")
    params = record_params(requests, provider=provider, subject=subject)
    connection.ensure_connection()
    # A server-side binding cursor on Django's own connection (so inside a caller's
    # transaction it is that transaction), with the statement prepared once per connection:
    # Django's cursors bind client-side, which sends this statement's text with every value
    # quoted into it and has Postgres parse and plan it on every call.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_RECORD_SQL, params, prepare=True, binary=True)
        rows = cursor.fetchall()
    return _outcomes(requests, rows)


def _outcomes(requests: Sequence[RecordRequest], rows: Sequence[tuple[Any, ...]]) -> list[Outcome]:
    """_RECORD_SQL's rows, one per request in order, as outcomes."""
    outcomes: list[Outcome] = []
    for request, (pk, status, envelope, publish_subject, erased) in zip(
        requests, rows, strict=True
    ):
        if pk is not None:
            outcomes.append(
                RecordedEvent(
                    pk=int(pk),
                    event_id=request.event_id,
                    status=str(status),
                    data_type=request.data_type,
                    publish_subject=str(publish_subject),
                    envelope=bytes(envelope),
                )
            )
        else:
            outcomes.append("erased" if erased else "duplicate")
    return outcomes


# --- the publish breaker ----------------------------------------------------------------

_breaker_lock = threading.Lock()
_publish_skipped_until = 0.0


def reset_publish_breaker() -> None:
    """Publish on the next request again (tests that restart NATS call this)."""
    global _publish_skipped_until
    with _breaker_lock:
        _publish_skipped_until = 0.0


def publish_breaker_open() -> bool:
    return time.monotonic() < _publish_skipped_until


def publish_failed() -> None:
    """Skip publishing for PUBLISH_BREAKER_S: the relay publishes what is skipped."""
    global _publish_skipped_until
    with _breaker_lock:
        _publish_skipped_until = time.monotonic() + PUBLISH_BREAKER_S


# --- group commit -----------------------------------------------------------------------


@dataclass
class _Pending:
    request: RecordRequest
    # The request's trace context (with the person's baggage): the publish span's parent.
    trace_context: Context
    # A thread's (GroupCommitter) or the event loop's (AsyncGroupCommitter): both are
    # completed by the committer alone, through answer() and fail().
    future: Future[tuple[Outcome, bool]] | asyncio.Future[tuple[Outcome, bool]]

    def answer(self, outcome: Outcome, published: bool) -> None:
        # A request that gave up waiting (RESULT_TIMEOUT_S) cancelled its future: the
        # others of the batch are answered all the same.
        if not self.future.done():
            self.future.set_result((outcome, published))

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


def _leaders(batch: list[_Pending]) -> dict[uuid.UUID, _Pending]:
    """Repeats of one notification inside a batch: the first is written, the others are its
    duplicates (or erased with it)."""
    leaders: dict[uuid.UUID, _Pending] = {}
    for pending in batch:
        leaders.setdefault(pending.request.event_id, pending)
    webhook_commit_batch_size.observe(len(leaders))
    return leaders


def _batch(
    batch: list[_Pending],
) -> tuple[dict[uuid.UUID, _Pending], list[RecordRequest], AbstractContextManager[object]]:
    """The batch's leaders (_leaders), the requests to write and the span that covers it."""
    leaders = _leaders(batch)
    requests = [p.request for p in leaders.values()]
    span = tracing.batch_span(
        "webhook group commit",
        [p.trace_context for p in leaders.values()],
        {"messaging.batch.message_count": len(requests)},
    )
    return leaders, requests, span


def _settle(
    batch: list[_Pending],
    leaders: dict[uuid.UUID, _Pending],
    outcomes: Sequence[Outcome | BaseException],
) -> list[tuple[_Pending, RecordedEvent]]:
    """Answer every request of `batch` that has nothing to publish; return the others."""
    by_id = dict(zip(leaders, outcomes, strict=True))
    to_publish: list[tuple[_Pending, RecordedEvent]] = []
    for pending in batch:
        outcome = by_id[pending.request.event_id]
        if isinstance(outcome, BaseException):
            pending.fail(outcome)
        elif pending is not leaders[pending.request.event_id]:
            pending.answer("duplicate" if isinstance(outcome, RecordedEvent) else outcome, False)
        elif (
            isinstance(outcome, RecordedEvent)
            and outcome.publish_subject
            and not publish_breaker_open()
        ):
            to_publish.append((pending, outcome))
        else:
            pending.answer(outcome, False)
    return to_publish


def _producer_spans(
    items: list[tuple[_Pending, RecordedEvent]],
) -> tuple[list[trace.Span], list[tuple[str, bytes, str]], list[dict[str, str]]]:
    """Each message's PRODUCER span, the message and its headers.

    The publish span is the request's child, as when the request published itself; the
    message's headers carry it (and the person's baggage) to the consumer."""
    spans = []
    messages = []
    headers = []
    for pending, event in items:
        span, carrier = tracing.start_producer_span(
            subject=event.publish_subject,
            msg_id=str(event.event_id),
            parent=pending.trace_context,
        )
        spans.append(span)
        messages.append((event.publish_subject, event.envelope, str(event.event_id)))
        headers.append(carrier)
    return spans, messages, headers


def _published(
    items: list[tuple[_Pending, RecordedEvent]],
    spans: list[trace.Span],
    published: list[bool],
    error_type: str,
) -> None:
    """Answer the requests of `items` once their publish is decided."""
    if not all(published):
        publish_failed()
    for (pending, event), span, ok in zip(items, spans, published, strict=True):
        if not ok:
            logger.warning(
                "webhook_publish_deferred",
                extra={"event_id": str(event.event_id), "error_type": error_type or "nack"},
            )
        tracing.end_with(span, None if ok else bus.BusUnavailable("not acknowledged"))
        pending.answer(event, ok)


class GroupCommitter:
    """One thread per process that writes and publishes what the request threads hand in."""

    def __init__(self, *, provider: str, subject: str) -> None:
        self._provider = provider
        self._subject = subject
        # None in the queue: finish what came before it, then stop.
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True, name="webhook-commit")
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, request: RecordRequest) -> Future[tuple[Outcome, bool]]:
        """Queue one delivery. The future gives its outcome and whether it was published."""
        future: Future[tuple[Outcome, bool]] = Future()
        self._queue.put(_Pending(request, otel_context.get_current(), future))
        return future

    def stop(self) -> None:
        """Finish what is queued, close the connection and end the thread (tests, shutdown)."""
        self._queue.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_CLOSE_S)
            except queue.Empty:
                connection.close()  # idle: hold no connection (a no-op when none is open)
                continue
            batch = [first]
            # Whatever queued while the last batch was written: no added wait, ever.
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            pending = [p for p in batch if p is not None]
            try:
                # As Django does before each request: drop a connection that errored or
                # outlived CONN_MAX_AGE, and health-check the next one before its first use
                # (after a Postgres restart the old socket is dead).
                connection.close_if_unusable_or_obsolete()
                self._commit(pending)
            except BaseException as exc:  # never leave a request waiting on a dead batch
                for waiting in pending:
                    waiting.fail(exc)
                logger.exception("webhook_commit_failed")
            if stop:
                connection.close()
                return

    def _commit(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        leaders, requests, span = _batch(batch)
        outcomes: list[Outcome | BaseException]
        with span:
            try:
                outcomes = list(
                    webhook_record_batch(requests, provider=self._provider, subject=self._subject)
                )
            except (OperationalError, InterfaceError) as exc:
                # The connection is gone or going: answer 503 to all, reconnect next batch.
                connection.close()
                for pending in batch:
                    pending.fail(exc)
                return
            except DatabaseError:
                # Something in one delivery that Postgres refused: write the others alone,
                # so one bad row fails only its own request.
                outcomes = self._one_by_one(requests)
        to_publish = _settle(batch, leaders, outcomes)
        if to_publish:
            self._publish(to_publish)

    def _one_by_one(self, requests: list[RecordRequest]) -> list[Outcome | BaseException]:
        outcomes: list[Outcome | BaseException] = []
        for request in requests:
            try:
                outcomes.extend(
                    webhook_record_batch([request], provider=self._provider, subject=self._subject)
                )
            except DatabaseError as exc:
                outcomes.append(exc)
        return outcomes

    def _publish(self, items: list[tuple[_Pending, RecordedEvent]]) -> None:
        """Publish without waiting here: the next batch is written while JetStream acks this
        one; each request is answered from the bus's loop when its ack (or failure) is in."""
        spans, messages, headers = _producer_spans(items)
        try:
            acks = bus.get_bus().publish_many_nowait(
                messages, headers=headers, timeout=PUBLISH_TIMEOUT_S
            )
        except Exception as exc:  # no bus at all: the events are committed, the relay publishes
            _published(items, spans, [False] * len(items), type(exc).__name__)
            return

        def done(result: Future[list[bool]]) -> None:
            try:
                published = result.result()
            except BaseException as exc:  # timed out or cancelled: not published
                _published(items, spans, [False] * len(items), type(exc).__name__)
                return
            _published(items, spans, published, "")

        acks.add_done_callback(done)


_committer: GroupCommitter | None = None
_committer_lock = threading.Lock()


def group_committer(*, provider: str, subject: str) -> GroupCommitter:
    """This process's committer, started on first use (so after any fork)."""
    global _committer
    with _committer_lock:
        if _committer is None or not _committer.alive():
            _committer = GroupCommitter(provider=provider, subject=subject)
        return _committer


def stop_group_committer() -> None:
    """Stop this process's committer, if any (the test session's end; a later use restarts)."""
    global _committer
    with _committer_lock:
        committer, _committer = _committer, None
    if committer is not None:
        committer.stop()


# --- group commit on an event loop (the webhook's ASGI path) -------------------------------


class AsyncGroupCommitter:
    """GroupCommitter's twin for a web worker's event loop: the same batches, statement and
    answers, with no thread in between (health_project/asgi.py, issue #19).

    Requests queue on the loop; one task writes whatever queued while the last batch was
    written in one execution of _RECORD_SQL on its own async psycopg connection (autocommit,
    so one statement is one transaction), then publishes the stored envelopes with its own
    JetStream connection on the same loop while it writes the next batch. Handing every
    delivery from a loop to the thread committer and back measured a quarter slower
    (bench/async_floor.py, "threaded committer").
    """

    def __init__(self, *, provider: str, subject: str) -> None:
        self._provider = provider
        self._subject = subject
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._publisher = bus.JetStreamPublisher()
        self._publishing: set[asyncio.Task[None]] = set()
        self._task = self._loop.create_task(self._run(), name="webhook-commit")

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        return loop is self._loop and not self._task.done()

    def submit(self, request: RecordRequest) -> asyncio.Future[tuple[Outcome, bool]]:
        """Queue one delivery (on the committer's loop). The future gives its outcome and
        whether it was published."""
        future: asyncio.Future[tuple[Outcome, bool]] = self._loop.create_future()
        self._queue.put_nowait(_Pending(request, otel_context.get_current(), future))
        return future

    async def stop(self) -> None:
        """Finish what is queued and published, then close both connections."""
        if not self._task.done():
            self._queue.put_nowait(None)
            await asyncio.wait([self._task], timeout=10)
        if self._publishing:
            await asyncio.wait(self._publishing, timeout=PUBLISH_TIMEOUT_S + 2)
        await self._close_db()
        await self._publisher.close()

    async def _run(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), IDLE_CLOSE_S)
            except TimeoutError:
                await self._close_db()  # idle: hold no connection
                continue
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            pending = [p for p in batch if p is not None]
            try:
                await self._commit(pending)
            except Exception as exc:  # never leave a request waiting on a dead batch
                for waiting in pending:
                    waiting.fail(exc)
                logger.exception("webhook_commit_failed")
            if None in batch:
                return

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._db is None or self._db.closed:
            # Django's own parameters (database, credentials, connect_timeout), without the
            # parts that belong to its synchronous cursors.
            params = connection.get_connection_params()
            for key in ("context", "cursor_factory", "prepare_threshold"):
                params.pop(key, None)
            self._db = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        return self._db

    async def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None and not db.closed:
            await db.close()

    async def _record(self, requests: list[RecordRequest]) -> list[Outcome]:
        params = record_params(requests, provider=self._provider, subject=self._subject)
        db = await self._connection()
        async with db.cursor() as cursor:
            await cursor.execute(_RECORD_SQL, params, prepare=True, binary=True)
            return _outcomes(requests, await cursor.fetchall())

    async def _commit(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        leaders, requests, span = _batch(batch)
        outcomes: list[Outcome | BaseException]
        with span:
            try:
                outcomes = list(await self._record(requests))
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # The connection is gone or going: answer 503 to all, reconnect next batch.
                # Raised as Django's error, the one the views answer 503 for.
                await self._close_db()
                for pending in batch:
                    pending.fail(OperationalError(type(exc).__name__))
                return
            except psycopg.DatabaseError:
                # Something in one delivery that Postgres refused: write the others alone,
                # so one bad row fails only its own request.
                outcomes = await self._one_by_one(requests)
        to_publish = _settle(batch, leaders, outcomes)
        if to_publish:
            # Not awaited here: the next batch is written while JetStream acks this one.
            task = self._loop.create_task(self._publish(to_publish))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    async def _one_by_one(self, requests: list[RecordRequest]) -> list[Outcome | BaseException]:
        outcomes: list[Outcome | BaseException] = []
        for request in requests:
            try:
                outcomes.extend(await self._record([request]))
            except psycopg.DatabaseError as exc:
                outcomes.append(DatabaseError(type(exc).__name__))
        return outcomes

    async def _publish(self, items: list[tuple[_Pending, RecordedEvent]]) -> None:
        spans, messages, headers = _producer_spans(items)
        try:
            published = await self._publisher.publish_many(
                messages, headers=headers, timeout=PUBLISH_TIMEOUT_S
            )
        except Exception as exc:  # the events are committed; the relay publishes them
            _published(items, spans, [False] * len(items), type(exc).__name__)
            return
        _published(items, spans, published, "")


_async_committer: AsyncGroupCommitter | None = None


def async_group_committer(*, provider: str, subject: str) -> AsyncGroupCommitter:
    """The running loop's committer, started on first use. Call it on that loop."""
    global _async_committer
    loop = asyncio.get_running_loop()
    if _async_committer is None or not _async_committer.serves(loop):
        _async_committer = AsyncGroupCommitter(provider=provider, subject=subject)
    return _async_committer


async def stop_async_group_committer() -> None:
    """Stop the running loop's committer, if any (the server's shutdown; tests)."""
    global _async_committer
    committer, _async_committer = _async_committer, None
    if committer is not None and committer.serves(asyncio.get_running_loop()):
        await committer.stop()
