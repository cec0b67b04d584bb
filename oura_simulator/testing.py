"""Test helpers that do not need pytest: a real HTTP webhook receiver."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .webhooks import sign

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int

    def json(self) -> Any:
        return json.loads(self.body)

    def signature_valid(self, secret: str) -> bool:
        """Raw-body verification, the way most receivers do it (CONTRACT 5.5)."""
        expected = sign(secret, self.headers.get("x-oura-timestamp", ""), self.body)
        return hmac.compare_digest(expected, self.headers.get("x-oura-signature", "").upper())


@dataclass
class WebhookReceiver:
    """A threaded werkzeug server standing in for our webhook endpoint.

    Answers GET challenges when the verification token matches, and POSTs with the next
    status from ``statuses`` (then 200). Set ``hang_s`` to simulate a slow receiver.
    """

    verification_token: str = "verify-me"  # noqa: S105  test value
    statuses: list[int] = field(default_factory=list)
    hang_s: float = 0.0
    challenge_ok: bool = True
    received: list[Received] = field(default_factory=list)
    challenges: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    _server: BaseWSGIServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, host: str = "127.0.0.1") -> str:
        self._server = make_server(host, 0, self._app, threaded=True, request_handler=_QuietHandler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://{host}:{self._server.server_port}/oura/webhook"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        req = Request(environ)
        if req.method == "GET":
            with self._lock:
                self.challenges.append(dict(req.args))
            if (
                not self.challenge_ok
                or req.args.get("verification_token") != self.verification_token
            ):
                resp = Response('{"detail":"bad token"}', 401, content_type="application/json")
            else:
                body = json.dumps({"challenge": req.args.get("challenge")})
                resp = Response(body, 200, content_type="application/json")
            return resp(environ, start_response)
        body_bytes = req.get_data()
        if self.hang_s:
            time.sleep(self.hang_s)
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 200
            self.received.append(Received(dict(req.headers.items()), body_bytes, status))
        headers = {k.lower(): v for k, v in req.headers.items()}
        self.received[-1].headers = headers
        return Response("", status)(environ, start_response)

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.01)
        raise TimeoutError(f"expected {count} deliveries, got {len(self.received)}")
