"""Bus consumers: a registry of what runs, and the one runner that runs any of them.

Like sentry's `src/sentry/consumers/__init__.py`, each consumer is one registry entry (name →
stream, durable name, filter subjects, handler, batch size, AckWait, MaxDeliver, retry delays)
and `python manage.py run_consumer <process>` runs every entry of that process, each on its
own thread (a "lane": the normalizer's webhooks and backfill pages are two durables, so a
webhook never waits behind a backlog of pages). The app that owns a consumer registers it
in its AppConfig.ready() with `register()`: this module, the ground layer, names none.

The handler is a plain typed function, `handle(data, meta) -> None`, that can be tested by
calling it with bytes; it says how it failed by raising:

- `Retriable(reason, delay_s)`: a dependency is away (Oura, S3, NATS, Postgres). The message is
  nak'ed with a delay and comes back; after MaxDeliver - 1 deliveries it is dead-lettered.
- `Poison(reason)`: the message can never succeed as it is (broken contract, bad envelope). It
  is dead-lettered (a `health.dead_letters` row plus `health.dlq.{consumer}`) and acked.
- returning normally: done, or already done (handlers are idempotent), and the message is acked.

A consumer may also register a batch handler, `handle_batch(messages, executor)`, which gets
the whole fetched batch and returns one result per message (None, or the exception it would
have raised): the normalizer writes a batch of webhook documents in one transaction.

Errors are classified here, once (`classify`, for both kinds of handler); the runner only
acks, naks and dead-letters.
Every value below, and why, is in docs/phase-3/consumers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import importlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connections
from django.db import reset_queries as django_reset_queries
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry.context import Context
from opentelemetry.trace import Span, set_span_in_context

from core import bus, tracing
from core.messages import DeadLetterHeaders, dead_letter_subject
from core.metrics import dead_letters_total

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def _import(path: str) -> Any:
    """The object a "module:attribute" path names."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


# --- What a handler raises -----------------------------------------------------------------


class Retriable(Exception):
    """Try this message again later. `delay_s` None means the consumer's own schedule."""

    def __init__(self, reason: str, *, delay_s: float | None = None, error_type: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s
        self.error_type = error_type or "Retriable"


class Poison(Exception):
    """This message will never succeed as it is: dead-letter it. `reason` carries no values."""

    def __init__(self, reason: str, *, error_type: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type or "Poison"


@dataclass(frozen=True)
class MessageMeta:
    consumer: str
    subject: str
    stream: str
    stream_seq: int
    num_delivered: int
    msg_id: str = ""
    # The context of this message's consume span (a child of the span that published it).
    # The runner makes it current around a handler; a batch handler's worker threads attach
    # it themselves (core.tracing.attached) for the work they do for this message.
    trace_context: Context | None = field(default=None, compare=False, repr=False)


Handler = Callable[[bytes, MessageMeta], None]
# (data, meta) of each fetched message, and the runner's threads for per-message I/O; returns
# one result per message, in order: None (ack) or the exception a Handler would have raised.
BatchHandler = Callable[[Sequence[tuple[bytes, MessageMeta]], Executor], list[Exception | None]]


# --- The registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    stream: str
    durable: str
    filter_subject: str
    handler: str  # "module:function", imported when the consumer starts (no import cycles)
    batch_size: int
    ack_wait_s: float
    max_deliver: int
    retry_delays_s: tuple[float, ...]
    max_ack_pending: int = 1000
    concurrency: int = 1  # messages of a batch handled at once, each on its own thread
    # "module:function" taking the whole batch; when set, the runner uses it instead of
    # `handler` (which stays the per-message entry point that tests and tools call).
    batch_handler: str = ""
    # "module:function" returning how many seconds to wait before the next fetch (0: fetch
    # now), asked before every fetch: a dependency that is known to be down (the Oura circuit
    # breaker) stops the fetching, so messages wait in the stream without burning deliveries.
    pause: str = ""
    description: str = ""
    # The `run_consumer` name that runs this entry ("" : its own name). Entries of one
    # process run side by side, each on its own durable and thread.
    process: str = ""
    # Several subjects (JetStream 2.10 FilterSubjects); when set, `filter_subject` is unused.
    filter_subjects: tuple[str, ...] = ()
    # A durable that consumed this entry's subjects before it existed: on first creation this
    # one starts after that durable's ack floor instead of at the stream's first message, so
    # splitting a consumer neither loses nor replays a week of messages.
    takes_over: str = ""

    @property
    def process_name(self) -> str:
        return self.process or self.name

    @property
    def subjects(self) -> tuple[str, ...]:
        return self.filter_subjects or (self.filter_subject,)

    @property
    def dlq_subject(self) -> str:
        return dead_letter_subject(self.name)

    def load_handler(self) -> Handler:
        handler: Handler = _import(self.handler)
        return handler

    def load_batch_handler(self) -> BatchHandler | None:
        if not self.batch_handler:
            return None
        handler: BatchHandler = _import(self.batch_handler)
        return handler

    def load_pause(self) -> Callable[[], float] | None:
        if not self.pause:
            return None
        pause: Callable[[], float] = _import(self.pause)
        return pause

    def retry_delay(self, num_delivered: int) -> float:
        """Delay before delivery `num_delivered + 1`; the last value repeats."""
        index = min(max(num_delivered, 1), len(self.retry_delays_s)) - 1
        return self.retry_delays_s[index]

    def consumer_config(self, start_after: int = 0) -> ConsumerConfig:
        """The durable's config; `start_after` (a stream sequence) only for its creation."""
        many = len(self.filter_subjects) > 0
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.description or None,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_after else DeliverPolicy.ALL,
            opt_start_seq=start_after + 1 if start_after else None,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            filter_subject=None if many else self.filter_subject,
            filter_subjects=list(self.filter_subjects) if many else None,
            max_ack_pending=self.max_ack_pending,
        )


CONSUMERS: dict[str, ConsumerSpec] = {}


def register(*specs: ConsumerSpec) -> None:
    """Add consumers to the registry (from the owning app's AppConfig.ready()).

    Registering the same entry again is a no-op (ready() may run twice in tests); a second,
    different entry under one name, or a second owner of a durable, is a bug and says so.
    """
    for spec in specs:
        known = CONSUMERS.get(spec.name)
        if known is not None and known != spec:
            raise ValueError(f"consumer {spec.name!r} is registered twice, differently")
        owners = [s.name for s in CONSUMERS.values() if s.durable == spec.durable]
        if owners and owners != [spec.name]:
            raise ValueError(f"durable {spec.durable!r} already belongs to {owners[0]!r}")
        CONSUMERS[spec.name] = spec


def processes() -> dict[str, list[ConsumerSpec]]:
    """`run_consumer` names -> the entries each runs."""
    out: dict[str, list[ConsumerSpec]] = {}
    for spec in CONSUMERS.values():
        out.setdefault(spec.process_name, []).append(spec)
    return out


def get_consumer(name: str) -> ConsumerSpec:
    try:
        return CONSUMERS[name]
    except KeyError:
        known = ", ".join(sorted(CONSUMERS))
        raise KeyError(f"unknown consumer {name!r}; known: {known}") from None


# --- Classification, once ------------------------------------------------------------------


class Action(enum.Enum):
    ACK = "ack"
    NAK = "nak"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Outcome:
    action: Action
    delay_s: float = 0.0
    reason: str = ""
    error_type: str = ""


def classify(spec: ConsumerSpec, meta: MessageMeta, error: Exception | None) -> Outcome:
    """Decide ack, nak or dead-letter from what a handler raised (None: it returned)."""
    if error is None:
        return Outcome(Action.ACK)
    if isinstance(error, Poison):
        return Outcome(Action.DEAD_LETTER, reason=error.reason, error_type=error.error_type)
    if isinstance(error, Retriable):
        retry = error
    elif isinstance(error, (OperationalError, InterfaceError)):
        # Postgres went away mid-handler: the next message must not reuse the dead socket.
        connections.close_all()
        retry = Retriable("database unavailable", error_type=type(error).__name__)
    else:
        # A bug or an error nobody classified. Retrying costs little and a transient cause
        # heals; a permanent one reaches the dead letters after MaxDeliver - 1 attempts. The
        # message text may quote data, so only the type is logged.
        logger.error(
            "consumer_handler_unexpected_error",
            extra={"consumer": spec.name, "stream_seq": meta.stream_seq,
                   "error_type": type(error).__name__},
        )  # fmt: skip
        retry = Retriable("unexpected error", error_type=type(error).__name__)
    # One delivery is kept in reserve: if writing the dead letter fails on this one (Postgres
    # down), the message comes back once more instead of being dropped by JetStream.
    if meta.num_delivered >= spec.max_deliver - 1:
        return Outcome(
            Action.DEAD_LETTER,
            reason=f"still failing after {meta.num_delivered} deliveries: {retry.reason}",
            error_type=retry.error_type,
        )
    delay = retry.delay_s if retry.delay_s is not None else spec.retry_delay(meta.num_delivered)
    return Outcome(Action.NAK, delay_s=delay, reason=retry.reason, error_type=retry.error_type)


def dispatch(spec: ConsumerSpec, handler: Handler, data: bytes, meta: MessageMeta) -> Outcome:
    """Run the handler and decide ack, nak or dead-letter. Never raises."""
    try:
        handler(data, meta)
    except Exception as exc:
        return classify(spec, meta, exc)
    return classify(spec, meta, None)


@contextlib.contextmanager
def _worker_thread() -> Iterator[None]:
    """Around each task on a runner thread: worker threads keep their own Django connections,
    so drop broken or expired ones first; reset the query log after (DEBUG keeps it)."""
    close_old_connections()
    try:
        yield
    finally:
        django_reset_queries()


def run_on_workers(
    executor: Executor, function: Callable[[T], R], items: Sequence[T]
) -> list[R | Exception]:
    """`function(item)` for every item on the runner's threads, in order; an exception is
    returned in the item's place, not raised, so one failure does not hide the others."""

    def on_worker(item: T) -> R | Exception:
        with _worker_thread():
            try:
                return function(item)
            except (OperationalError, InterfaceError) as exc:
                connections.close_all()  # this thread's connections; the next task reconnects
                return exc
            except Exception as exc:
                return exc

    return list(executor.map(on_worker, items))


# --- Transport: a synchronous facade over one nats-py pull subscription ------------------


class Stopped(Exception):
    """The process is stopping: what was waiting on the bus was abandoned on purpose."""


class PullConsumer:
    """One durable pull subscription, driven from synchronous code.

    Handlers use the Django ORM, which refuses to run inside an event loop; so the loop runs in
    a daemon thread (as in core/bus.py) and the main thread fetches, acks and naks through it.
    While messages are held, a heartbeat tells JetStream they are in progress, so AckWait only
    measures how long a crashed process keeps its messages.
    """

    def __init__(self, spec: ConsumerSpec, url: str | None = None) -> None:
        self.spec = spec
        self._url = url
        self._loop_thread = bus.LoopThread(f"nats-{spec.name}")
        self._loop = self._loop_thread.loop
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._held: dict[int, Msg] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    def _run(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float,
        *,
        abandon_if: Callable[[], bool] | None = None,
    ) -> T:
        """Run `coro` on the loop and wait for it; `abandon_if` (polled) cancels it early."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    return future.result(
                        min(0.1, max(0.0, deadline - time.monotonic()))
                        if abandon_if is not None
                        else timeout
                    )
                except FutureTimeout:
                    if time.monotonic() >= deadline:
                        raise
                    if abandon_if is not None and abandon_if():
                        raise Stopped from None
        except FutureTimeout:
            future.cancel()
            raise bus.BusUnavailable("timed out waiting for JetStream") from None
        except Stopped:
            future.cancel()
            raise

    async def _start(self) -> None:
        try:
            self._nc = await bus.connect(self._url, name=f"consumer-{self.spec.name}")
            self._js = self._nc.jetstream(timeout=5)
            # Create or update: every process of this consumer converges on the registry values.
            start_after = await self._takeover_floor()
            await self._js.add_consumer(self.spec.stream, self.spec.consumer_config(start_after))
            self._sub = await self._js.pull_subscribe_bind(
                durable=self.spec.durable, stream=self.spec.stream
            )
        except BaseException:
            # Connected but JetStream said no (or we were cancelled): do not leave a client
            # reconnecting in the background of a start that is going to be tried again.
            await self._disconnect()
            raise
        self._heartbeat = asyncio.create_task(self._beat())

    async def _takeover_floor(self) -> int:
        """The stream sequence this durable starts after when it is created by taking over
        another durable's subjects (0: not a takeover, or nothing to take over)."""
        assert self._js is not None
        if not self.spec.takes_over:
            return 0
        try:
            mine = await self._js.consumer_info(self.spec.stream, self.spec.durable)
        except NotFoundError:
            pass
        else:
            # It exists: its position stands, and its start (which JetStream does not let
            # an update change) is restated as it was created.
            config = mine.config
            if config.deliver_policy == DeliverPolicy.BY_START_SEQUENCE and config.opt_start_seq:
                return int(config.opt_start_seq) - 1
            return 0
        try:
            previous = await self._js.consumer_info(self.spec.stream, self.spec.takes_over)
        except NotFoundError:
            return 0  # a fresh install: read the stream from its start
        # Everything after the old durable's ack floor may still be unhandled; a message in
        # that range that it did handle comes once more, which the handlers absorb.
        return int(previous.ack_floor.stream_seq) if previous.ack_floor else 0

    async def _beat(self) -> None:
        interval = max(0.5, self.spec.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            for msg in list(self._held.values()):
                with contextlib.suppress(Exception):  # a lost beat only risks a redelivery
                    await msg.in_progress()

    def start(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Connect and bind; BusUnavailable if NATS or JetStream does not answer in time.

        Raises Stopped as soon as `should_stop()` is true: a start that waits on a server
        that is down must not keep a SIGTERM waiting.
        """
        try:
            self._run(self._start(), 10, abandon_if=should_stop)
        except (bus.BusUnavailable, Stopped):
            raise
        except Exception as exc:
            raise bus.BusUnavailable(f"consumer start failed: {type(exc).__name__}") from None

    async def _fetch(self, batch: int, timeout: float) -> list[Msg]:
        assert self._sub is not None
        try:
            msgs = await self._sub.fetch(batch, timeout=timeout)
        except TimeoutError:
            # Nothing came. nats-py raises its own TimeoutError, or on some paths the bare
            # asyncio one (its deadline passing between its two pull requests), which `_run`
            # would report as BusUnavailable and the runner would sleep on.
            return []
        for msg in msgs:
            self._held[id(msg)] = msg
        return msgs

    def fetch(self, batch: int, timeout: float = 1.0) -> list[Msg]:
        try:
            return self._run(self._fetch(batch, timeout), timeout + 5)
        except bus.BusUnavailable:
            raise
        except Exception as exc:  # disconnected, reconnecting, consumer gone...
            raise bus.BusUnavailable(f"fetch failed: {type(exc).__name__}") from None

    async def _settle(self, msg: Msg, delay: float | None) -> None:
        self._held.pop(id(msg), None)
        if delay is None:
            await msg.ack()
        else:
            await msg.nak(delay=delay)

    def ack(self, msg: Msg) -> None:
        self._settle_quietly(msg, None)

    def nak(self, msg: Msg, delay_s: float) -> None:
        self._settle_quietly(msg, delay_s)

    def _settle_quietly(self, msg: Msg, delay: float | None) -> None:
        # An ack that does not arrive only means a redelivery, which handlers absorb.
        try:
            self._run(self._settle(msg, delay), 5)
        except Exception as exc:
            logger.warning(
                "consumer_settle_failed",
                extra={"consumer": self.spec.name, "error_type": type(exc).__name__},
            )

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        assert self._js is not None
        await self._js.publish(subject, data, headers=headers, timeout=2)

    def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        # A dead letter stays in the trace of the message it was (settle runs in its context).
        headers = dict(tracing.inject_headers(dict(headers)))
        try:
            self._run(self._publish(subject, data, headers), 4)
        except bus.BusUnavailable:
            raise
        except Exception as exc:
            raise bus.BusUnavailable(f"publish failed: {type(exc).__name__}") from None

    async def _disconnect(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._nc is not None and not self._nc.is_closed:
            if self._nc.is_connected:  # while NATS is away there is nothing to flush to
                with contextlib.suppress(Exception):
                    await self._nc.flush(timeout=2)  # the last acks leave before we go
            with contextlib.suppress(Exception):
                await self._nc.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            # Flush (2 s) and close; bounded, so a NATS that accepts and never answers
            # cannot hold the exit of a stopping process.
            self._run(self._disconnect(), 4)
        except Exception as exc:
            logger.warning("consumer_close_failed", extra={"error_type": type(exc).__name__})
        finally:
            # Also ends what nats-py's close left pending when the server was gone.
            self._loop_thread.stop()


def message_meta(spec: ConsumerSpec, msg: Msg) -> MessageMeta:
    metadata = msg.metadata
    return MessageMeta(
        consumer=spec.name,
        subject=msg.subject,
        stream=metadata.stream or spec.stream,
        stream_seq=int(metadata.sequence.stream),
        num_delivered=int(metadata.num_delivered or 1),
        msg_id=(msg.headers or {}).get("Nats-Msg-Id", ""),
    )


def _consume_span(msg: Msg, meta: MessageMeta) -> tuple[Span, MessageMeta]:
    """Start the message's consume span; the meta that carries its context."""
    span = tracing.start_consume_span(
        subject=meta.subject,
        headers=msg.headers,
        msg_id=meta.msg_id,
        stream=meta.stream,
        stream_seq=meta.stream_seq,
        consumer=meta.consumer,
        num_delivered=meta.num_delivered,
    )
    return span, dataclasses.replace(meta, trace_context=set_span_in_context(span))


def _end_consume_span(span: Span, outcome: Outcome) -> None:
    span.set_attribute("health.outcome", outcome.action.name.lower())
    if outcome.action is not Action.ACK:
        span.set_attribute("error.type", outcome.error_type or outcome.action.name)
    tracing.end_with(span, None)


# --- The runner ----------------------------------------------------------------------------


@dataclass
class RunStats:
    received: int = 0
    acked: int = 0
    naked: int = 0
    dead_lettered: int = 0


def _never() -> bool:
    return False


def _pause(seconds: float, should_stop: Callable[[], bool]) -> None:
    """Sleep `seconds`, waking early when the process is told to stop."""
    deadline = time.monotonic() + seconds
    while not should_stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))


# How long the runner sleeps at most before asking a pause hook again.
PAUSE_RECHECK_S = 1.0


def _asked_pause(spec: ConsumerSpec, pause: Callable[[], float]) -> float:
    """What the consumer's pause hook says; 0 when it cannot say (its store is away too:
    the handlers then meet and classify that failure themselves)."""
    try:
        return max(0.0, float(pause()))
    except Exception as exc:
        if isinstance(exc, (OperationalError, InterfaceError)):
            connections.close_all()
        logger.warning(
            "consumer_pause_check_failed",
            extra={"consumer": spec.name, "error_type": type(exc).__name__},
        )
        return 0.0


# Between attempts to reach JetStream at start-up: soon enough that a consumer starts within
# seconds of NATS coming back, rare enough not to flood the log while it is down.
START_RETRY_S = 2.0


def _start_until_stopped(puller: PullConsumer, should_stop: Callable[[], bool]) -> bool:
    """Start the subscription, retrying while NATS is away; False if told to stop first.

    A consumer started before the bus (a reboot, `make run` with NATS still coming up) waits
    for it instead of crashing, and a SIGTERM meanwhile ends the wait at once.
    """
    while not should_stop():
        try:
            puller.start(should_stop)
        except Stopped:
            return False
        except bus.BusUnavailable as exc:
            logger.warning(
                "consumer_start_failed", extra={"consumer": puller.spec.name, "error": str(exc)}
            )
            _pause(START_RETRY_S, should_stop)
            continue
        return True
    return False


def _dead_letter(
    spec: ConsumerSpec, puller: PullConsumer, msg: Msg, meta: MessageMeta, outcome: Outcome
) -> bool:
    """Record, announce, and report whether the message may be acked."""
    from core.services import dead_letter_record

    try:
        dead_letter = dead_letter_record(
            meta=meta, data=bytes(msg.data), reason=outcome.reason, error_type=outcome.error_type
        )
    except (OperationalError, InterfaceError):
        connections.close_all()
        return False  # not recorded anywhere yet: the message must come back
    dead_letters_total.labels(consumer=spec.name).inc()
    try:
        puller.publish(
            spec.dlq_subject,
            bytes(msg.data),
            DeadLetterHeaders.of(
                consumer=spec.name,
                stream=meta.stream,
                stream_seq=meta.stream_seq,
                original_subject=meta.subject,
                dead_letter_id=dead_letter.pk,
                error_type=outcome.error_type,
            ).as_headers(),
        )
    except bus.BusUnavailable:
        # The row is the durable copy and the replay source; the subject is a notification.
        logger.warning("dead_letter_publish_failed", extra={"dead_letter_id": dead_letter.pk})
    logger.warning(
        "message_dead_lettered",
        extra={"consumer": spec.name, "stream_seq": meta.stream_seq, "dead_letter_id":
               dead_letter.pk, "error_type": outcome.error_type, "attempts": meta.num_delivered},
    )  # fmt: skip
    return True


def settle(
    spec: ConsumerSpec, puller: PullConsumer, msg: Msg, meta: MessageMeta, outcome: Outcome
) -> Outcome:
    """Ack, nak or dead-letter one message as `outcome` says; returns what was done."""
    if outcome.action is Action.ACK:
        puller.ack(msg)
    elif outcome.action is Action.NAK:
        logger.info(
            "message_retry",
            extra={"consumer": spec.name, "stream_seq": meta.stream_seq, "delay_s":
                   outcome.delay_s, "error_type": outcome.error_type,
                   "attempt": meta.num_delivered},
        )  # fmt: skip
        puller.nak(msg, outcome.delay_s)
    elif _dead_letter(spec, puller, msg, meta, outcome):
        puller.ack(msg)
    else:
        puller.nak(msg, spec.retry_delay(meta.num_delivered))
        return Outcome(Action.NAK, reason="dead letter not recorded", error_type="DeadLetterFailed")
    return outcome


def process_message(
    spec: ConsumerSpec, handler: Handler, puller: PullConsumer, msg: Msg
) -> Outcome:
    span, meta = _consume_span(msg, message_meta(spec, msg))
    with tracing.attached(meta.trace_context):
        outcome = settle(spec, puller, msg, meta, dispatch(spec, handler, bytes(msg.data), meta))
    _end_consume_span(span, outcome)
    return outcome


def process_batch(
    spec: ConsumerSpec,
    batch_handler: BatchHandler,
    puller: PullConsumer,
    msgs: Sequence[Msg],
    executor: Executor,
) -> list[Outcome]:
    """Hand the whole batch to the batch handler, then settle each message by its own result.

    Runs on the main thread: the handler's shared transaction lives here, and its workers
    borrow `executor`.
    """
    spans, metas = zip(*(_consume_span(msg, message_meta(spec, msg)) for msg in msgs), strict=True)
    try:
        items = [(bytes(msg.data), meta) for msg, meta in zip(msgs, metas, strict=True)]
        errors = batch_handler(items, executor)
        if len(errors) != len(msgs):
            raise RuntimeError(f"batch handler gave {len(errors)} results for {len(msgs)}")
    except Exception as exc:
        # The handler itself broke (a bug): nothing says which message is at fault.
        errors = [exc] * len(msgs)
    outcomes = []
    for msg, meta, span, error in zip(msgs, metas, spans, errors, strict=True):
        with tracing.attached(meta.trace_context):
            outcome = settle(spec, puller, msg, meta, classify(spec, meta, error))
        _end_consume_span(span, outcome)
        outcomes.append(outcome)
    return outcomes


def _process_on_worker(
    spec: ConsumerSpec, handler: Handler, puller: PullConsumer, msg: Msg
) -> Outcome:
    with _worker_thread():
        return process_message(spec, handler, puller, msg)


def run_consumer(
    spec: ConsumerSpec,
    *,
    batch_size: int | None = None,
    concurrency: int | None = None,
    max_messages: int | None = None,
    idle_exit_s: float | None = None,
    should_stop: Callable[[], bool] = _never,
    url: str | None = None,
) -> RunStats:
    """Fetch batches and dispatch each message until stopped.

    `should_stop` is checked between batches, and polled while waiting for NATS (at start or
    after a failed fetch): a SIGTERM lets the batch in hand finish, with every message acked
    or nak'ed, before the loop exits, and never waits on a bus that is down.
    """
    handler = spec.load_handler()
    batch_handler = spec.load_batch_handler()
    pause = spec.load_pause()
    paused = False
    batch = batch_size or spec.batch_size
    threads = concurrency or spec.concurrency
    # A batch handler always gets worker threads: its transaction stays on the main thread.
    pool = (
        ThreadPoolExecutor(threads, thread_name_prefix=spec.name)
        if threads > 1 or batch_handler is not None
        else None
    )
    stats = RunStats()
    puller = PullConsumer(spec, url)
    last_message_at = time.monotonic()

    def stop_waiting_for_the_bus() -> bool:
        # Time spent waiting for NATS at start counts as idle for --idle-exit-s.
        idle = idle_exit_s is not None and time.monotonic() - last_message_at > idle_exit_s
        return idle or should_stop()

    try:
        started = _start_until_stopped(puller, stop_waiting_for_the_bus)
        if started:
            logger.info("consumer_started", extra={"consumer": spec.name, "durable": spec.durable})
        last_message_at = time.monotonic()
        while started and not should_stop():
            if max_messages is not None and stats.received >= max_messages:
                break
            if idle_exit_s is not None and time.monotonic() - last_message_at > idle_exit_s:
                break
            wanted = batch if max_messages is None else min(batch, max_messages - stats.received)
            if pause is not None and (wait := _asked_pause(spec, pause)) > 0:
                if not paused:
                    logger.warning("consumer_paused", extra={"consumer": spec.name, "wait_s": wait})
                paused = True
                _pause(min(wait, PAUSE_RECHECK_S), should_stop)
                last_message_at = time.monotonic()  # a pause is not idleness
                continue
            if paused:
                # Resume with one message: if the dependency is still down (the first
                # message after an Oura outage is the breaker's probe), only it goes back.
                logger.info("consumer_resumed", extra={"consumer": spec.name})
                paused = False
                wanted = 1
            try:
                msgs = puller.fetch(wanted, timeout=1.0)
            except bus.BusUnavailable as exc:
                logger.warning("consumer_fetch_failed", extra={"error": str(exc)})
                _pause(1.0, should_stop)
                continue
            if not msgs:
                continue
            close_old_connections()  # a Postgres restart must not leave us on a dead socket
            if batch_handler is not None:
                assert pool is not None
                outcomes = process_batch(spec, batch_handler, puller, msgs, pool)
                django_reset_queries()
            elif pool is not None:
                outcomes = list(
                    pool.map(lambda m: _process_on_worker(spec, handler, puller, m), msgs)
                )
            else:
                outcomes = []
                for msg in msgs:
                    outcomes.append(process_message(spec, handler, puller, msg))
                    # With DEBUG on, Django keeps every query of a long process in memory.
                    django_reset_queries()
            for outcome in outcomes:
                stats.received += 1
                if outcome.action is Action.ACK:
                    stats.acked += 1
                elif outcome.action is Action.NAK:
                    stats.naked += 1
                else:
                    stats.dead_lettered += 1
                    stats.acked += 1
            # Idle time counts from the end of the last batch, not from its fetch.
            last_message_at = time.monotonic()
    finally:
        if pool is not None:
            pool.submit(connections.close_all)  # best effort; the process is ending anyway
            pool.shutdown(wait=True)
        puller.close()
        logger.info(
            "consumer_stopped",
            extra={"consumer": spec.name, "received": stats.received, "acked": stats.acked,
                   "naked": stats.naked, "dead_lettered": stats.dead_lettered},
        )  # fmt: skip
    return stats
