"""The parts of Django's test Client the webhook tests use, for the ASGI front door.

Requests go to health_project/asgi.py's application on one event loop in a thread, as a
granian worker serves them: the webhook's AsyncGroupCommitter lives on that loop for the
client's life, and `close()` stops it (its database connection included) and the loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlencode

from core.bus import LoopThread
from ingestion.webhook_asgi import ASGIApp
from ingestion.webhook_commit import stop_async_group_committer


class AsgiResponse:
    def __init__(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                        for name, value in headers}  # fmt: skip
        self.content = body

    def json(self) -> Any:
        return json.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def has_header(self, name: str) -> bool:
        return name.lower() in self.headers


class AsgiClient:
    def __init__(self, app: ASGIApp | None = None) -> None:
        if app is None:
            from health_project.asgi import application

            app = application
        self._app = app
        self._loop = LoopThread("asgi-test-client")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(stop_async_group_committer(), self._loop.loop).result(30)
        self._loop.stop()
        close_django_connections = getattr(self._app, "close_django_connections", None)
        if close_django_connections is not None:  # health_project.asgi.FrontDoor's
            close_django_connections()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the application runs on (as a granian worker's)."""
        return self._loop.loop

    def request(self, method: str, path: str, **options: Any) -> AsgiResponse:
        """One request; see `_exchange` for the options."""
        return self.at_once([{"method": method, "path": path, **options}])[0]

    def at_once(self, requests: list[dict[str, Any]]) -> list[AsgiResponse]:
        """Send `requests` (each request()'s arguments) concurrently; answers in order."""
        futures = [
            asyncio.run_coroutine_threadsafe(self._exchange(**options), self._loop.loop)
            for options in requests
        ]
        return [future.result(60) for future in futures]

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        query: str = "",
        remote_addr: str = "127.0.0.1",
        chunks: list[bytes] | None = None,
    ) -> AsgiResponse:
        """`chunks` sends the body in pieces, without Content-Length unless the caller sets
        it, as a chunked upload arrives."""
        sent_headers = {"host": "testserver"}
        if chunks is None:
            sent_headers["content-length"] = str(len(body))
        sent_headers |= {name.lower(): value for name, value in (headers or {}).items()}
        scope: MutableMapping[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in sent_headers.items()],
            "client": (remote_addr, 40000), "server": ("testserver", 80),
        }  # fmt: skip
        pieces = chunks if chunks is not None else [body]
        incoming: list[MutableMapping[str, Any]] = [
            {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
            for i, piece in enumerate(pieces)
        ]
        answered = asyncio.Event()
        start: dict[str, Any] = {}
        received: list[bytes] = []

        async def next_message() -> MutableMapping[str, Any]:
            if incoming:
                return incoming.pop(0)
            await answered.wait()  # a server listening for a disconnect hears it at the end
            return {"type": "http.disconnect"}

        def receive() -> Awaitable[MutableMapping[str, Any]]:
            # An awaitable that is not a coroutine, as granian's receive returns.
            return asyncio.ensure_future(next_message())

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                received.append(message.get("body", b""))
                if not message.get("more_body"):
                    answered.set()

        await self._app(scope, receive, send)
        answered.set()
        if not start:
            raise AssertionError("the application sent no response")
        return AsgiResponse(start["status"], start.get("headers", []), b"".join(received))

    # --- django.test.Client's signatures, as the webhook tests call them ----------------

    def post(
        self,
        path: str,
        data: bytes = b"",
        content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
        **extra: str,
    ) -> AsgiResponse:
        sent = {"content-type": content_type, **(headers or {}), **_meta_headers(extra)}
        remote = extra.get("REMOTE_ADDR", "127.0.0.1")
        return self.request("POST", path, body=data, headers=sent, remote_addr=remote)

    def get(self, path: str, data: dict[str, str] | None = None, **extra: str) -> AsgiResponse:
        return self.request("GET", path, query=urlencode(data or {}), headers=_meta_headers(extra))

    def put(self, path: str, data: bytes = b"", **extra: str) -> AsgiResponse:
        return self.request("PUT", path, body=data, headers=_meta_headers(extra))


def _meta_headers(extra: dict[str, str]) -> dict[str, str]:
    """Django's test-client style `HTTP_X_NAME="..."` keywords as headers."""
    return {key[5:].lower().replace("_", "-"): value
            for key, value in extra.items() if key.startswith("HTTP_")}  # fmt: skip
