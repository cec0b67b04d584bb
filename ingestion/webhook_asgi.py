"""`POST /v1/webhooks/oura` on the web worker's event loop, with no WSGI thread (issue #19).

health_project/asgi.py sends Oura's deliveries here and every other request to Django. This
is the Django view's POST (webhook_apis.OuraWebhookApi) without Django's request handling:
the same refusals and answers (webhook_apis' WebhookAnswer functions), the same service
(webhook_services.webhook_accept_async), the delivery written and published by the loop's
AsyncGroupCommitter. What the lean middleware chain adds to the view's answers is added
here by the same functions, so that both paths answer alike to the byte (a test compares
them): the SERVER span, the request id and access line, the response counter, Django's
security headers, Content-Length, and a 500 in the error shape for anything unexpected.

Where Django would answer before reaching the view (a Host outside ALLOWED_HOSTS, an HTTP
request where SECURE_SSL_REDIRECT asks for HTTPS) the request goes to Django instead, which
answers it as it always has.

Why: on the WSGI path a delivery crossed three threads (the request's, the committer's, the
bus's loop) and paid Django's handler; on the loop it crosses none. bench/README.md has the
figures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from opentelemetry import propagate

from core import tracing
from core.errors import error_body
from core.metrics import http_responses_total
from core.request_id import REQUEST_ID_HEADER, log_access, request_context
from ingestion.webhook_apis import (
    WebhookAnswer,
    accepted,
    answer_for_error,
    too_large,
    webhook_refusal,
)
from ingestion.webhook_services import KEPT_HEADERS, webhook_accept_async

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/v1/webhooks/oura"
# The URL pattern, as Django's resolver names it for the SERVER span (core.tracing).
ROUTE = "v1/webhooks/oura"
# The view's name, as ResponseMetricsMiddleware labels its responses.
VIEW_NAME = "oura-webhook"
# What the service and the span read of a delivery's headers; the rest is never decoded.
_READ_HEADERS = frozenset({*KEPT_HEADERS, "content-length", "host", "x-forwarded-host",
                           "x-forwarded-port", "x-forwarded-proto", "x-request-id",
                           "traceparent", "tracestate", "baggage"})  # fmt: skip


class _ClientGone(Exception):
    """The client disconnected before its body was read: there is no one to answer."""


# The headers Django's Host and HTTPS checks read (with the scope's scheme and server).
_ORIGIN_HEADERS = ("host", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto")


class _Head(HttpRequest):
    """Just enough of a Django request for Django's own Host and HTTPS checks."""

    def __init__(self, scope: Scope, headers: dict[str, str]) -> None:
        super().__init__()
        server = scope.get("server") or ("", 0)
        self.META = {"SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1] or "")}
        for name in _ORIGIN_HEADERS:
            if name in headers:
                self.META["HTTP_" + name.upper().replace("-", "_")] = headers[name]
        self.path = self.path_info = PATH
        self._asgi_scheme = str(scope.get("scheme") or "http")

    def _get_scheme(self) -> str:
        return self._asgi_scheme


def _security_headers(*, secure: bool) -> list[tuple[bytes, bytes]]:
    """What Django's SecurityMiddleware adds to a JSON answer, asked of it once."""

    class Canned(HttpRequest):
        def _get_scheme(self) -> str:
            return "https" if secure else "http"

    middleware = SecurityMiddleware(lambda request: HttpResponse())
    response = middleware.process_response(Canned(), HttpResponse())
    return [(name.lower().encode(), value.encode()) for name, value in response.items()
            if name.lower() != "content-type"]  # fmt: skip


class WebhookEndpoint:
    """The ASGI app for POST /v1/webhooks/oura; `django` answers what it hands back."""

    def __init__(self, django: ASGIApp) -> None:
        self._django = django
        self._security = {secure: _security_headers(secure=secure) for secure in (False, True)}
        self._responses = {
            status_class: http_responses_total.labels(route=VIEW_NAME, status_class=status_class)
            for status_class in ("2xx", "4xx", "5xx")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = _headers(scope)
        origin = _origin(scope, headers)
        if not origin.ours:  # Django logs and answers a bad Host, and redirects to HTTPS
            return await self._django(scope, receive, send)
        secure = origin.secure

        with tracing.server_span("POST", propagate.extract(headers), origin.scheme) as span:
            if span.is_recording():  # as ServerSpanMiddleware: only for a sampled request
                span.set_attribute("http.url", origin.url)
            with request_context(headers.get("x-request-id")) as (request_id, fields):
                try:
                    answer = await self._answer(scope, receive, headers)
                except _ClientGone:
                    return
                except Exception as exc:  # as core.errors.UnhandledErrorMiddleware
                    answer = _unhandled(exc)
                tracing.server_span_answered(span, "POST", ROUTE, answer.status)
                self._responses[f"{answer.status // 100}xx"].inc()
                log_access(method="POST", path=PATH, status=answer.status, started=started,
                           fields=fields)  # fmt: skip
                await _send(send, answer, request_id, self._security[secure])

    async def _answer(
        self, scope: Scope, receive: Receive, headers: dict[str, str]
    ) -> WebhookAnswer:
        client = scope.get("client")
        refused = webhook_refusal(
            source=str(client[0]) if client else "",
            declared=headers.get("content-length") or "0",
        )
        if refused is not None:
            return refused
        body = await _read(receive, settings.WEBHOOK_MAX_BODY_BYTES)
        if body is None:
            return too_large()
        try:
            event = await webhook_accept_async(body=body, headers=headers)
        except Exception as exc:
            answer = answer_for_error(exc)
            if answer is None:
                raise
            return answer
        return accepted(event)


class _Origin(NamedTuple):
    """What Django's own checks make of a request's Host, scheme and proxy headers."""

    ours: bool  # the Host is allowed, and the scheme is HTTPS where SECURE_SSL_REDIRECT asks
    secure: bool
    scheme: str
    url: str  # PATH's absolute URL, for the SERVER span


# Deliveries come with the same few Host and proxy headers, so each combination is checked
# once (a Django request object per delivery was a twentieth of its CPU). Cleared when it
# could hold anything else: a settings change (tests) or more combinations than any real
# deployment sends (a client inventing Host headers).
_origins: dict[tuple[object, ...], _Origin] = {}
_MAX_ORIGINS = 64


@receiver(setting_changed)
def _forget_origins(**kwargs: object) -> None:
    _origins.clear()


def _origin(scope: Scope, headers: dict[str, str]) -> _Origin:
    key = (scope.get("scheme"), tuple(scope.get("server") or ()),
           *(headers.get(name) for name in _ORIGIN_HEADERS))  # fmt: skip
    found = _origins.get(key)
    if found is None:
        head = _Head(scope, headers)
        try:
            head.get_host()  # as CommonMiddleware does
        except DisallowedHost:
            found = _Origin(False, False, "", "")
        else:
            secure = head.is_secure()
            found = _Origin(
                ours=secure or not settings.SECURE_SSL_REDIRECT,
                secure=secure,
                scheme=head.scheme or "http",
                url=head.build_absolute_uri(PATH),
            )
        if len(_origins) >= _MAX_ORIGINS:
            _origins.clear()
        _origins[key] = found
    return found


def _headers(scope: Scope) -> dict[str, str]:
    """The headers this path reads, by lower-case name; repeats joined with a comma, as a
    WSGI server joins them into one environ value."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name in _READ_HEADERS:
            value = raw_value.decode("latin-1")
            found[name] = f"{found[name]},{value}" if name in found else value
    return found


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The body, or None once it is longer than `limit` (the rest is never buffered)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _unhandled(exc: Exception) -> WebhookAnswer:
    """500 in the error shape; neither the message nor the body is logged or reported
    beyond what the scrubbed error report keeps (core.observability)."""
    logger.error("unhandled_error", extra={"exception_type": type(exc).__name__})
    import sentry_sdk  # a no-op without a DSN

    sentry_sdk.capture_exception(exc)
    return WebhookAnswer(500, error_body("internal", "Internal server error."))


async def _send(
    send: Send, answer: WebhookAnswer, request_id: str, security: list[tuple[bytes, bytes]]
) -> None:
    # json.dumps' default separators: the bytes Django's JsonResponse sends.
    body = json.dumps(answer.body).encode()
    headers = [
        (b"content-type", b"application/json"),
        *((name.lower().encode(), value.encode()) for name, value in answer.headers),
        *security,
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
