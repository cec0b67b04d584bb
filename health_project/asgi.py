"""The ASGI entry of `make run`, the Dockerfile and compose: `health_project.asgi:application`.

Oura's webhook deliveries (POST /v1/webhooks/oura) are answered on the worker's event loop
(ingestion/webhook_asgi.py); every other request goes to the WSGI application of
health_project/wsgi.py, run by a2wsgi on a pool of WEB_BLOCKING_THREADS threads per worker,
exactly as granian's WSGI interface ran it before. Issue #19: the delivery path is the
hottest in the system, and off the WSGI threads it costs a fraction of the CPU
(bench/README.md).
"""

from __future__ import annotations

from typing import cast

from a2wsgi import WSGIMiddleware

from health_project.serving import WEB_BLOCKING_THREADS
from health_project.wsgi import application as wsgi_application  # sets Django up
from ingestion.webhook_asgi import PATH, ASGIApp, Receive, Scope, Send, WebhookEndpoint
from ingestion.webhook_commit import stop_async_group_committer


def make_application(wsgi: object) -> ASGIApp:
    """The front door over `wsgi` (the project's WSGI application; the bench passes its own,
    which adds a route)."""
    # a2wsgi types the environ, each kind of scope and each event precisely (TypedDicts);
    # this module only passes them through.
    django = cast(ASGIApp, WSGIMiddleware(wsgi, workers=WEB_BLOCKING_THREADS))  # type: ignore[arg-type]
    webhook = WebhookEndpoint(django)

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == PATH and scope["method"] == "POST" and not scope.get("root_path"):
                return await webhook(scope, receive, send)
            return await django(scope, receive, send)
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        await django(scope, receive, send)  # a websocket: a2wsgi closes it

    return application


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
