"""NATS JetStream access for synchronous Django code.

nats-py is asyncio-only while Django views, the relay and dramatiq actors are synchronous.
`Bus` runs one event loop in a daemon thread per process and keeps one connection open on
it, so a publish costs a round trip, not a connect. It is created lazily, after any fork
(gunicorn workers each get their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar
from urllib.parse import ParseResult

import nats.errors
from django.conf import settings
from nats.aio.client import Client as NatsClient
from nats.js.api import PubAck
from nats.js.client import JetStreamContext
from opentelemetry.trace import SpanKind

from core import tracing

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BusUnavailable(RuntimeError):
    """JetStream did not acknowledge in time, or could not be reached."""


# How long a first connection may take, all attempts together. nats-py retries a first
# connect as often as a reconnect; with max_reconnect_attempts=-1 that is forever, so a
# process started while NATS is down (or a server that accepts and never answers) would
# hang inside connect, deaf to SIGTERM. Callers retry on BusUnavailable on their own terms.
FIRST_CONNECT_TIMEOUT_S = 4.0


async def connect(
    url: str | None = None,
    *,
    name: str = "health",
    first_connect_timeout: float = FIRST_CONNECT_TIMEOUT_S,
    **options: Any,
) -> NatsClient:
    """One place that knows how we connect: short timeouts, no endless reconnect storm.

    The first connection fails with BusUnavailable after `first_connect_timeout` seconds;
    once connected, a dropped connection reconnects in the background without limit.
    """

    async def on_error(exc: Exception) -> None:
        # nats-py's default logs the exception with its message at ERROR on every retry.
        logger.warning("nats_connection_error", extra={"error_type": type(exc).__name__})

    defaults: dict[str, Any] = {
        "error_cb": on_error,
        "connect_timeout": 2,
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
    }
    servers = [url] if url else list(settings.NATS_SERVERS)
    if not servers:
        raise BusUnavailable("NATS_URL is not set")
    nc = NatsClient()
    try:
        await asyncio.wait_for(
            nc.connect(
                servers=servers,
                name=name,
                **(defaults | options),
            ),
            first_connect_timeout,
        )
    except BaseException as exc:  # timed out, or the caller gave up on us (cancelled)
        # Release whatever the abandoned attempt opened (a socket to a silent server).
        with contextlib.suppress(Exception):
            await nc.close()
        if isinstance(exc, TimeoutError):
            raise BusUnavailable(f"NATS not reachable within {first_connect_timeout:g} s") from None
        raise
    return nc


class LoopThread:
    """An asyncio event loop running in a daemon thread, for synchronous callers.

    Django code (the ORM refuses to run inside a loop) hands coroutines to `loop` with
    `asyncio.run_coroutine_threadsafe` and waits on the futures.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop, end the tasks still on it, and close it. Safe to call twice.

        Why end the tasks: nats-py's close gives up part-way when the server is gone and
        leaves its subscriptions' readers pending. A stopped loop with tasks on it is closed
        by its finalizer whenever the garbage collector reaches it, and the tasks then fail
        inside the collector ("Event loop is closed"), in the middle of whatever code
        happened to allocate. The hook that reports such failures formats a traceback,
        which on Python 3.11.7 corrupts an `ast.parse` that the interrupted code may be in
        (SystemError "AST constructor recursion depth mismatch", CPython gh-106905, fixed in
        3.11.8): a test failed on CI that way.
        """
        if self.loop.is_closed():
            return
        if threading.current_thread() is self._thread:
            self.loop.stop()  # from a callback on the loop: the owner closes it later
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            # A coroutine blocks the loop's thread: closing a running loop is an error, and
            # the daemon thread ends with the process.
            logger.warning("event_loop_stop_timed_out", extra={"loop_thread": self._thread.name})
            return
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending, timeout=timeout))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class JetStreamPublisher:
    """Publishing on one event loop, over one lazily made connection: the bus's loop thread
    (Bus, below) and a web worker's own loop (the webhook's ASGI path) each hold one."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()

    async def jetstream(self) -> JetStreamContext:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                # Fail fast on first connect; later drops reconnect in the background.
                self._nc = await connect(self._url)
                self._js = self._nc.jetstream(timeout=5)
            assert self._js is not None
            return self._js

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float
    ) -> PubAck:
        try:
            js = await self.jetstream()
            return await js.publish(subject, payload, timeout=timeout, headers=headers)
        except Exception as exc:  # nats raises a zoo of types; all mean "not published"
            raise BusUnavailable(f"publish to {subject} failed: {type(exc).__name__}") from None

    async def publish_many(
        self,
        messages: list[tuple[str, bytes, str]],
        *,
        timeout: float,
        headers: list[dict[str, str]] | None = None,
    ) -> list[bool]:
        """(subject, payload, msg_id) messages at once, every ack awaited together, within
        `timeout` + 1 s. Element i says whether message i was acknowledged (a duplicate
        Nats-Msg-Id is acknowledged too); nothing is raised.

        nats-py's publish_async: every message goes out with its reply subject under one
        subscription, and the acks are awaited as a group. A request per message (`publish`)
        made a subscription entry and a timer for each, a tenth of the webhook's CPU on the
        event loop (issue #19).
        """
        if not messages:
            return []
        extra = headers or [{} for _ in messages]
        acks: list[asyncio.Future[PubAck]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout + 1
        try:
            async with asyncio.timeout_at(deadline):  # first connect, or a stalled connection
                js = await self.jetstream()
                for (subject, payload, msg_id), more in zip(messages, extra, strict=True):
                    headers_out = {"Nats-Msg-Id": msg_id} | more
                    acks.append(await js.publish_async(subject, payload, headers=headers_out))
        except Exception:  # nats raises a zoo of types; all mean "not published"
            for ack in acks:
                ack.cancel()  # its reply, if it comes, is dropped; the relay publishes again
            return [False] * len(messages)
        done, pending = await asyncio.wait(acks, timeout=max(0.0, deadline - loop.time()))
        for ack in pending:
            ack.cancel()  # releases nats-py's slot for it
        return [ack in done and not ack.cancelled() and ack.exception() is None for ack in acks]

    @property
    def connected_url(self) -> ParseResult | None:
        """The server this connection is on now (a cluster has several), if connected."""
        return self._nc.connected_url if self._nc is not None else None

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            # The server may have gone first; then there is nothing left to flush.
            with contextlib.suppress(OSError, nats.errors.Error):
                await self._nc.close()


class Bus:
    def __init__(self, url: str | None = None) -> None:
        self._loop_thread = LoopThread("nats")
        self._loop = self._loop_thread.loop
        self._publisher = JetStreamPublisher(url)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise BusUnavailable("timed out waiting for JetStream") from None

    def publish(
        self,
        subject: str,
        payload: bytes | dict[str, Any],
        *,
        msg_id: str | None = None,
        timeout: float = 2.0,
    ) -> PubAck:
        """Publish and wait for the JetStream ack. `msg_id` de-duplicates server side.

        The message carries the current trace context (a publish span's) in its headers, so
        its consumer's spans join the trace that produced it.
        """
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        with tracing.tracer().start_as_current_span(
            f"{tracing.subject_template(subject)} publish",
            kind=SpanKind.PRODUCER,
            attributes=tracing.message_span_attributes(subject=subject, msg_id=msg_id or ""),
        ) as span:
            headers = dict(tracing.inject_headers({"Nats-Msg-Id": msg_id} if msg_id else {}))
            ack = self._run(
                self._publisher.publish(subject, data, headers or None, timeout), timeout + 1
            )
            span.set_attribute("messaging.nats.stream", ack.stream)
            span.set_attribute("messaging.nats.stream_sequence", ack.seq)
            return ack

    def publish_many(
        self,
        messages: list[tuple[str, bytes, str]],
        *,
        timeout: float = 2.0,
        headers: list[dict[str, str]] | None = None,
    ) -> list[bool]:
        """Publish (subject, payload, msg_id) messages at once and wait for every ack.

        One hand-off to the loop and concurrent acks instead of one round trip each: for the
        relay's catch-up batches. Element i is True when message i was acknowledged (a
        duplicate Nats-Msg-Id is acknowledged too), False when it was not; which ones
        failed is reported, never raised, so the caller records the rest. `headers[i]`, when
        given, are message i's own extra headers (its trace context: a batch spans traces).
        """
        if not messages:
            return []
        future = self.publish_many_nowait(messages, timeout=timeout, headers=headers)
        try:
            return future.result(timeout + 2)
        except (FutureTimeout, FutureCancelled):
            future.cancel()
            return [False] * len(messages)

    def publish_many_nowait(
        self,
        messages: list[tuple[str, bytes, str]],
        *,
        timeout: float = 2.0,
        headers: list[dict[str, str]] | None = None,
    ) -> ConcurrentFuture[list[bool]]:
        """publish_many without waiting: the future completes on the bus's loop once every
        ack (or failure) is in, within `timeout` + 1 s. For callers that do other work, or
        answer many waiters, while JetStream acknowledges."""
        return asyncio.run_coroutine_threadsafe(
            self._publisher.publish_many(messages, timeout=timeout, headers=headers), self._loop
        )

    @property
    def connected_url(self) -> ParseResult | None:
        return self._publisher.connected_url

    def ping(self, timeout: float = 2.0) -> None:
        async def _ping() -> None:
            try:
                js = await self._publisher.jetstream()
                await js.account_info()
            except Exception as exc:
                raise BusUnavailable(type(exc).__name__) from None

        self._run(asyncio.wait_for(_ping(), timeout), timeout + 1)

    def close(self) -> None:
        if self._loop.is_closed():
            return

        try:
            self._run(self._publisher.close(), 5)
        finally:
            self._loop_thread.stop()


_bus: Bus | None = None
_bus_lock = threading.Lock()


def get_bus() -> Bus:
    global _bus
    with _bus_lock:
        if _bus is None:
            _bus = Bus()
        return _bus


def reset_bus() -> None:
    """Drop the process-wide connection (tests that restart NATS call this)."""
    global _bus
    with _bus_lock:
        if _bus is not None:
            with contextlib.suppress(BusUnavailable):
                _bus.close()
        _bus = None
