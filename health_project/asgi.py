"""The ASGI entry of `make run`, the Dockerfile and compose: `health_project.asgi:application`.

Oura's webhook deliveries (POST /v1/webhooks/oura) are answered on the worker's event loop
(ingestion/webhook_asgi.py); every other request goes to the WSGI application of
health_project/wsgi.py, run by a2wsgi on a pool of WEB_BLOCKING_THREADS threads per worker,
exactly as granian's WSGI interface ran it before. Issue #19: the delivery path is the
hottest in the system, and off the WSGI threads it costs a fraction of the CPU
(bench/README.md).
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import Any, cast

from a2wsgi import WSGIMiddleware
from django.db import connections

from health_project.serving import WEB_BLOCKING_THREADS
from health_project.wsgi import application as wsgi_application  # sets Django up
from ingestion.webhook_asgi import PATH, ASGIApp, Receive, Scope, Send, WebhookEndpoint
from ingestion.webhook_commit import stop_async_group_committer


class FrontDoor:
    """The ASGI application over `wsgi` (the project's WSGI application; the bench passes
    its own, which adds a route)."""

    def __init__(self, wsgi: object, *, threads: int = WEB_BLOCKING_THREADS) -> None:
        self._adapter = WSGIMiddleware(wsgi, workers=threads)  # type: ignore[arg-type]
        self._threads = threads
        # a2wsgi types the environ, each kind of scope and each event precisely
        # (TypedDicts); this module only passes them through.
        self._django = cast(ASGIApp, self._adapter)
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
