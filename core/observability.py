"""Structured logs, Sentry and OpenTelemetry, set up so that no token or health value leaks.

The rules: loggers get event ids and counts, never payloads. As a second line of defence,
`RedactFilter` scrubs anything that looks like a credential from every record, and Sentry's
`before_send` drops request bodies, headers and local variables before an event leaves.
`LogContextFilter` puts the correlation ids on every record: the HTTP request's id
(core/request_id.py) and the current OpenTelemetry trace and span.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from typing import Any, Literal

from opentelemetry import trace

SENSITIVE_KEYS = frozenset(
    {
        "access_token", "refresh_token", "id_token", "token", "code", "code_verifier",
        "client_secret", "authorization", "password", "secret", "api_key", "key",
        "x-oura-signature", "x-client-secret", "verification_token", "body", "payload",
        "document",
    }
)  # fmt: skip

_CREDENTIAL_PATTERNS = (
    # key=value in URLs, forms and reprs
    re.compile(
        r"(?i)\b(access_token|refresh_token|id_token|code|code_verifier|client_secret|"
        r"verification_token|challenge|state)=([^&\s'\"]+)"
    ),
    # "key": "value" in JSON-ish text
    re.compile(
        r"(?i)([\"'](?:access_token|refresh_token|id_token|client_secret|code)[\"']\s*:\s*)"
        r"([\"'])[^\"']*\2"
    ),
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"),
)


# Text of only these characters, without _PEOPLE_PATH, cannot hold what redact() looks for:
# each pattern needs an `=`, a quote, white space, a `%` or _PEOPLE_PATH itself
# (core/tests/test_redaction.py holds every pattern to that). Most log messages are event
# names like `http_request`, and most access lines' paths are like `/v1/webhooks/oura`: they
# skip the patterns.
_PLAIN = re.compile(r"[A-Za-z0-9_./-]*")
_PEOPLE_PATH = "/v1/health/"


def redact(text: str) -> str:
    if _PLAIN.fullmatch(text) and _PEOPLE_PATH not in text:
        return text
    text = _CREDENTIAL_PATTERNS[0].sub(r"\1=[redacted]", text)
    text = _CREDENTIAL_PATTERNS[1].sub(r"\1\2[redacted]\2", text)
    text = _CREDENTIAL_PATTERNS[2].sub(r"\1 [redacted]", text)
    # Our user id is a path segment of the API (django.request logs the path of a 4xx/5xx)
    # and of raw object keys (`user=<id>/`, URL-encoded in HTTP client logs).
    for pattern in _USER_IN_PATHS:
        text = pattern.sub(lambda m: m.group(1) + _hash_or_redact(m.group(2), "user"), text)
    return text


_USER_IN_PATHS = (
    re.compile(rf"({re.escape(_PEOPLE_PATH)})(?!oura/)([^/\s'\"?]+)"),
    re.compile(r"(user(?:=|%3D))(?!unknown\b)([A-Za-z0-9_-]{1,64})(?=/|%2F)"),
)
# `extra` fields that name a person, and the field their keyed hash goes to instead.
PERSON_KEYS: dict[str, tuple[str, Literal["user", "oura"]]] = {
    "user_id": ("person", "user"),
    "provider_user_id": ("oura_person", "oura"),
}


def _hash_or_redact(value: str, namespace: Literal["user", "oura"]) -> str:
    try:
        from core.pseudonyms import person_hash

        return person_hash(value, namespace=namespace)
    except Exception:  # settings not configured yet: say nothing rather than the id
        return "[redacted]"


class RedactFilter(logging.Filter):
    """Scrubs credentials from the message and drops sensitive `extra` fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        names = vars(record)
        # One pass in C over the record's thirty-odd attributes; the loop only when one of
        # them is sensitive (a record's own attributes never are).
        if not SENSITIVE_KEYS.isdisjoint(map(str.lower, names)):
            for key in [key for key in names if key.lower() in SENSITIVE_KEYS]:
                setattr(record, key, "[redacted]")
        # Logs name people by keyed hash (core.pseudonyms); a raw id that slips into `extra`
        # is swapped for its hash here.
        for key, (hashed_key, namespace) in PERSON_KEYS.items():
            if key in vars(record):
                value = vars(record).pop(key)
                if value and not hasattr(record, hashed_key):
                    setattr(record, hashed_key, _hash_or_redact(str(value), namespace))
        request = getattr(record, "request", None)
        if request is not None and not isinstance(request, str):
            # django.request passes the request object; its repr carries the path.
            method = getattr(request, "method", "")
            record.request = redact(f"{method} {getattr(request, 'path', '')}")
        if record.exc_info and record.exc_info[1] is not None:
            # Exception messages may quote values (pydantic, psycopg); keep the type only.
            exc = record.exc_info[1]
            record.exc_text = f"{type(exc).__module__}.{type(exc).__name__} (message redacted)"
            record.exc_info = None
        return True


# Set by core.request_id.RequestIdMiddleware for the duration of one HTTP request.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# Fields a view adds to its request's one access-log line (core/request_id.py), so that a
# hot path says what it did in that line instead of a second record of its own.
access_log_fields_var: ContextVar[dict[str, Any] | None] = ContextVar(
    "access_log_fields", default=None
)


def annotate_access_log(**fields: Any) -> bool:
    """Add ids, counts or outcomes (never payload) to the current request's access line.

    False outside an HTTP request (nothing is recorded then: log a record of your own).
    """
    current = access_log_fields_var.get()
    if current is None:
        return False
    current.update(fields)
    return True


def current_request_id() -> str | None:
    """The id of the HTTP request being served in this context; None outside one."""
    return request_id_var.get()


class LogContextFilter(logging.Filter):
    """Adds `request_id`, `trace_id` and `span_id` to every record, each only when known.

    Outside an HTTP request there is no request id, and outside a span (start-up, idle loops,
    a record from a thread of a library's own) no trace: the field is then left off the
    record rather than filled with a placeholder, so JSON lines carry only real ids (the
    text format prints `-`). Ids are the W3C forms, 32 and 16 lowercase hex digits, as the
    tracing backend shows them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        context = trace.get_current_span().get_span_context()
        if context.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True


def _scrub_sentry_event(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    request = event.get("request")
    if isinstance(request, dict):
        for field in ("data", "cookies", "headers", "query_string"):
            request.pop(field, None)
    for exception in (event.get("exception") or {}).get("values", []):
        exception["value"] = "(message redacted)"
        for frame in (exception.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    event.pop("extra", None)
    breadcrumbs = event.get("breadcrumbs")
    if isinstance(breadcrumbs, dict):
        for crumb in breadcrumbs.get("values", []):
            if isinstance(crumb.get("message"), str):
                crumb["message"] = redact(crumb["message"])
            crumb.pop("data", None)
    return event


def init_observability(*, sentry_dsn: str, environment: str, traces_sample_rate: float) -> None:
    """Sentry, when a DSN is set. Tracing is core/tracing.py (OpenTelemetry, OTEL_* vars)."""
    # Neither log format prints where a record was made (file, line, function): not looking
    # it up saves a walk up the stack per record, a quarter of the webhook's access line
    # (the logging HOWTO's "Optimization" section names this switch).
    logging._srcfile = None
    # Nor the thread, process or multiprocessing names and ids: the same section's switches.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if sentry_dsn:
        import sentry_sdk

        sentry_sdk.init(
            dsn=sentry_dsn,
            environment=environment,
            send_default_pii=False,
            include_local_variables=False,
            max_request_body_size="never",
            traces_sample_rate=traces_sample_rate,
            before_send=_scrub_sentry_event,  # type: ignore[arg-type]  # sentry's Event TypedDict
        )
