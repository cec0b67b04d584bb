"""One id per HTTP request: honoured from `X-Request-ID` when it is safe, made up otherwise.

The id lives in a context variable (core.observability.request_id_var) for the request's
duration, so that every log record the request causes carries it (LogContextFilter, same
module), and goes back to the client in the response's `X-Request-ID`, error responses
included. A client's id is taken only when it is 1-128 characters of `[A-Za-z0-9._:-]`:
anything else (spaces, quotes, control or non-ASCII characters, a JSON fragment) is
replaced, so the logs never quote what a caller chose to inject.

The same middleware writes the access log: one `http_request` record per request, with the
path's user id replaced by its keyed hash and no query string (it may carry an OAuth code),
and whatever ids or outcomes the view added with core.observability.annotate_access_log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.http import HttpRequest, HttpResponseBase

from core.observability import access_log_fields_var, redact, request_id_var

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes and scrapes come every few seconds; their access lines would bury the rest at INFO.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def accepted_request_id(offered: str | None) -> str:
    """The client's id if it is safe to log, else a fresh uuid4 hex."""
    if offered is not None and _SAFE_REQUEST_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


@contextmanager
def request_context(offered: str | None) -> Iterator[tuple[str, dict[str, object]]]:
    """The request's id (accepted_request_id) and the access line's extra fields, set in
    their context variables for the request's duration (the middleware below, and the
    webhook's ASGI path, ingestion/webhook_asgi.py)."""
    request_id = accepted_request_id(offered)
    token = request_id_var.set(request_id)
    fields: dict[str, object] = {}
    fields_token = access_log_fields_var.set(fields)
    try:
        yield request_id, fields
    finally:
        # Also when an exception gets through: the thread's next request, or a record
        # logged between requests, must not inherit this id.
        request_id_var.reset(token)
        access_log_fields_var.reset(fields_token)


def log_access(
    *, method: str, path: str, status: int, started: float, fields: dict[str, object]
) -> None:
    """The request's one access line. `started` is its time.perf_counter() at arrival."""
    log = logger.debug if path in _QUIET_PATHS else logger.info
    log(
        "http_request",
        extra={
            "method": method,
            "path": redact(path),
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            # What the view added (core.observability.annotate_access_log).
            **fields,
        },
    )


class RequestIdMiddleware:
    """First in MIDDLEWARE, so that every response below it (a view's, Django's 404 or
    400, UnhandledErrorMiddleware's 500) passes back through here and gets the header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        with request_context(request.headers.get(REQUEST_ID_HEADER)) as (request_id, fields):
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            log_access(method=request.method or "", path=request.path,
                       status=response.status_code, started=started, fields=fields)  # fmt: skip
            return response
