"""The ASGI entry of `make run`, the Dockerfile and compose: `health_project.asgi:application`.

Oura's webhook deliveries (POST /v1/webhooks/oura) are answered on the worker's event loop
(ingestion/webhook_asgi.py); every other request goes to the WSGI application of
health_project/wsgi.py, run by a2wsgi on a pool of WEB_BLOCKING_THREADS threads per worker,
exactly as granian's WSGI interface ran it before. Issue #19: the delivery path is the
hottest in the system, and off the WSGI threads it costs a fraction of the CPU
(bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast
from wsgiref.types import WSGIApplication as WSGIApp

from a2wsgi.wsgi import Body, build_environ
from django.db import connections

from health_project.serving import WEB_BLOCKING_THREADS
from health_project.wsgi import application as wsgi_application  # sets Django up
from ingestion.webhook_asgi import PATH, ASGIApp, Receive, Scope, Send, WebhookEndpoint
from ingestion.webhook_commit import stop_async_group_committer

# A response larger than this is streamed as it is produced (a message at a time, as a2wsgi
# does) instead of handed to the loop whole.
STREAM_AFTER_BYTES = 1 << 20


class DjangoOnThreads:
    """The WSGI application on a pool of threads, for the event loop.

    a2wsgi's WSGIMiddleware, but its responder hands every message (the status, each chunk,
    the end) to the loop and waits for it, three or more round trips between threads per
    request; on a year's daily page that made the ASGI front door a few milliseconds slower
    than granian's WSGI interface (bench/README.md). Here the response is collected on the
    request's thread and sent from the loop at once, unless it grows past
    STREAM_AFTER_BYTES, when it is streamed from then on. The environ and the request body
    are a2wsgi's (the body is read through the loop as the application reads it).
    """

    def __init__(self, wsgi: WSGIApp, *, threads: int) -> None:
        self._wsgi = wsgi
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="django")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        loop = asyncio.get_running_loop()
        body = Body(loop, as_coroutine(receive))  # type: ignore[arg-type]  # a2wsgi's TypedDicts
        environ = cast(dict[str, Any], build_environ(scope, body))  # type: ignore[arg-type]  # a2wsgi's HTTPScope TypedDict

        async def send_coroutine(message: MutableMapping[str, Any]) -> None:
            await send(message)  # granian's send is an awaitable, not a coroutine

        def run() -> list[MutableMapping[str, Any]]:
            return self._run(environ, loop, send_coroutine)

        context = contextvars.copy_context()
        for message in await loop.run_in_executor(self.executor, context.run, run):
            await send(message)

    def _run(
        self,
        environ: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        send: Callable[[MutableMapping[str, Any]], Coroutine[Any, Any, None]],
    ) -> list[MutableMapping[str, Any]]:
        """On a pool thread: run the application; what is left to send, in order."""
        held: list[MutableMapping[str, Any]] = []
        size = 0
        streaming = False

        def deliver(message: MutableMapping[str, Any]) -> None:
            nonlocal size, streaming
            held.append(message)
            size += len(message.get("body", b""))
            if streaming or size > STREAM_AFTER_BYTES:
                streaming = True
                for waiting in held:
                    asyncio.run_coroutine_threadsafe(send(waiting), loop).result()
                held.clear()

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            if exc_info is not None and streaming:
                raise exc_info[1].with_traceback(exc_info[2])  # too late for another status
            held[:] = [m for m in held if m["type"] != "http.response.start"]
            start = {
                "type": "http.response.start",
                "status": int(status.split(" ", 1)[0]),
                "headers": [(k.strip().lower().encode("latin-1"), v.strip().encode("latin-1"))
                            for k, v in headers],
            }  # fmt: skip
            held.insert(0, start)

            def write(chunk: bytes) -> None:
                deliver({"type": "http.response.body", "body": chunk, "more_body": True})

            return write

        iterable = self._wsgi(environ, start_response)
        try:
            for chunk in iterable:
                if chunk:
                    deliver({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        deliver({"type": "http.response.body", "body": b"", "more_body": False})
        return held


class FrontDoor:
    """The ASGI application over `wsgi` (the project's WSGI application; the bench passes
    its own, which adds a route)."""

    def __init__(self, wsgi: object, *, threads: int = WEB_BLOCKING_THREADS) -> None:
        self._adapter = DjangoOnThreads(cast(WSGIApp, wsgi), threads=threads)
        self._threads = threads
        self._django: ASGIApp = self._adapter
        self._webhook = WebhookEndpoint(self._django)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == PATH and scope["method"] == "POST" and not scope.get("root_path"):
                return await self._webhook(scope, receive, send)
            return await self._django(scope, as_coroutine(receive), send)
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        await self._django(scope, receive, send)  # a websocket: a2wsgi closes it

    def close_django_connections(self) -> None:
        """Close the database connections Django holds in the pool's threads (tests: the
        test database is dropped at the end of the run). A server's threads keep theirs
        for CONN_MAX_AGE, as granian's own WSGI threads did."""
        everyone = threading.Barrier(self._threads)

        def close() -> None:
            everyone.wait(10)  # so that each thread of the pool runs one of these
            connections.close_all()

        for done in [self._adapter.executor.submit(close) for _ in range(self._threads)]:
            done.result(15)


def make_application(wsgi: object) -> FrontDoor:
    return FrontDoor(wsgi)


def as_coroutine(receive: Receive) -> Receive:
    """`receive` as a coroutine function. granian's returns an awaitable that is not a
    coroutine, and a2wsgi hands the body's reads to the loop with
    asyncio.run_coroutine_threadsafe, which takes coroutines only (a TypeError: the 500 of
    every request with a body)."""

    async def receive_coroutine() -> MutableMapping[str, Any]:
        return await receive()

    return receive_coroutine


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # Finish the deliveries in flight, then close the loop's connections.
            await stop_async_group_committer()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = make_application(wsgi_application)
