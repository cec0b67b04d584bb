"""OpenTelemetry tracing: one trace per event, from the webhook request to the normalized row.

Configured only by the standard variables (https://opentelemetry.io/docs/specs/otel/
configuration/sdk-environment-variables/), read here once at start-up:

- `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (+ `_HEADERS`,
  `_TIMEOUT`, `_COMPRESSION`): where spans go, over OTLP/HTTP. Unset: spans are not exported.
- `OTEL_TRACES_EXPORTER`: `otlp` (the default once an endpoint is set), `console` or `none`.
- `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`: the SDK's samplers. Our default is
  `parentbased_traceidratio` at `DEFAULT_SAMPLE_RATIO`; a downstream process follows the
  decision carried in the message's `traceparent`, so a trace is kept or dropped whole.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: which process this is (`make run` names
  each child: health-web, health-relay, health-normalizer, health-worker, health-scheduler).
- `OTEL_SDK_DISABLED=true`: no provider at all.

A provider is installed even with no exporter: trace ids then still exist for log lines and
still travel in message headers, and no span is recorded (the sampler says no), which costs
little. With an exporter, what leaves the process goes through `SanitizingExporter`: no query
string, credential, raw user id, SQL literal or exception message reaches a collector,
whatever an instrumentation put on a span.

Context crosses processes in NATS message headers (`inject_headers` / `extract_headers`,
W3C `traceparent`, `tracestate` and `baggage`). Baggage carries one entry, the keyed hash of
the person (`person_baggage`), never an id.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from core.observability import redact

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATIO = 0.1
PERSON_BAGGAGE_KEY = "health.person"
TRACER_NAME = "health"

# The URLs that are polled, not used: a span each would drown the traces that matter.
EXCLUDED_URLS = "healthz,readyz,metrics"

_installed = False


@functools.cache
def tracer() -> trace.Tracer:
    # One per process: get_tracer builds a new Tracer on every call (~6 us, and the webhook
    # path asks several times per delivery). Keeping it is safe: the provider is set once
    # per process (the API refuses a second), and a tracer taken before that is the API's
    # proxy, which follows the provider once it is set.
    return trace.get_tracer(TRACER_NAME)


# --- Set-up ------------------------------------------------------------------------------


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def exporter_from_env() -> SpanExporter | None:
    """The exporter the OTEL_* variables ask for; None means spans are not exported."""
    endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    choice = _env("OTEL_TRACES_EXPORTER").lower() or ("otlp" if endpoint else "none")
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    if choice == "otlp":
        if not endpoint:
            raise ValueError("OTEL_TRACES_EXPORTER=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # reads the endpoint, headers, timeout from OTEL_*
    raise ValueError("OTEL_TRACES_EXPORTER must be otlp, console or none")


class NoOrphanClientSpans(Sampler):
    """Drops client spans that start a trace; everything else as `inner` decides.

    A query or HTTP call outside any request or message (the worker's queue polling, the
    relay's and scheduler's bookkeeping) would otherwise be a trace of its own, one span
    long, many times a second: noise that buries the traces an operator looks for.
    """

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanClientSpans{{{self._inner.get_description()}}}"


def sampler_from_env(exporting: bool) -> Sampler:
    """OTEL_TRACES_SAMPLER when set, else ours; never a trace for nothing to receive."""
    if not exporting:
        # Nothing would receive the spans: record none, but keep ids for logs and headers.
        return ALWAYS_OFF
    if _env("OTEL_TRACES_SAMPLER"):
        # The SDK's own reading of OTEL_TRACES_SAMPLER(_ARG); private, but it is the parser
        # the SDK applies when given no sampler, so the variables mean what they document.
        inner: Sampler = _get_from_env_or_default()
    else:
        inner = ParentBased(TraceIdRatioBased(DEFAULT_SAMPLE_RATIO))
    return NoOrphanClientSpans(inner)


def init_tracing() -> None:
    """Install the provider and the ecosystem's instrumentations, once per process."""
    global _installed
    if _installed or _env("OTEL_SDK_DISABLED").lower() == "true":
        return
    _installed = True
    exporter = exporter_from_env()
    resource = Resource.create({"service.name": _env("OTEL_SERVICE_NAME") or "health"})
    provider = TracerProvider(resource=resource, sampler=sampler_from_env(exporter is not None))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(SanitizingExporter(exporter)))
    trace.set_tracer_provider(provider)

    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    DjangoInstrumentor().instrument(excluded_urls=EXCLUDED_URLS)
    # Statements only: parameters are health values and ids (capture_parameters stays off).
    PsycopgInstrumentor().instrument(enable_commenter=False, capture_parameters=False)
    HTTPXClientInstrumentor().instrument()


def django_middleware() -> str | None:
    """The dotted path of the ecosystem's Django middleware, when init_tracing installed it."""
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    path: str = DjangoInstrumentor._opentelemetry_middleware
    return path if _installed else None


class ServerSpanMiddleware:
    """The SERVER span of a lean path (health_project/wsgi.py), in place of the ecosystem's
    Django middleware there.

    That middleware is general: it collects a dozen attributes and wraps the WSGI environ
    for every request, sampled or not; on the webhook path that was an eighth of the
    server's CPU. Here the span is
    named by method and the URL pattern Django resolved anyway (never the path, which may
    hold a person's id), the caller's trace context honoured, method, route and status as
    attributes (the same names the ecosystem's spans use, so both look alike in the backend).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        from opentelemetry.instrumentation.wsgi import wsgi_getter

        self.get_response = get_response
        self._getter = wsgi_getter

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        method = request.method or ""
        context = propagate.extract(request.META, getter=self._getter)
        with server_span(method, context, request.scheme or "http") as span:
            if span.is_recording():  # unsampled requests skip building the URI (get_host)
                # As the ecosystem's middleware records it; the exporter keeps the path with
                # a person's id as its keyed hash, like a log line, and drops the query.
                span.set_attribute("http.url", request.build_absolute_uri())
            response = self.get_response(request)
            # Named by the URL pattern exactly as the ecosystem's middleware names it
            # (`GET v1/health/<user_id:user_id>/oura/daily`), never by the path.
            match = request.resolver_match
            server_span_answered(span, method, match.route if match else "", response.status_code)
            return response


def server_span(method: str, context: Context, scheme: str) -> AbstractContextManager[trace.Span]:
    """A SERVER span for one request, current until the block ends; `context` is what the
    caller's headers carry (propagate.extract). ServerSpanMiddleware's, and the webhook's
    ASGI path's (ingestion/webhook_asgi.py), so both look alike."""
    return tracer().start_as_current_span(
        method,
        context=context,
        kind=SpanKind.SERVER,
        attributes={"http.method": method, "http.scheme": scheme},
    )


def server_span_answered(span: trace.Span, method: str, route: str, status: int) -> None:
    """Name `span` by its URL pattern (never the path) and record the answer's status."""
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


# --- Context across processes ---------------------------------------------------------------


def inject_headers(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current trace context (and baggage) to a message's headers."""
    propagate.inject(headers)
    return headers


def extract_headers(headers: Mapping[str, str] | None) -> Context:
    """The context a message's headers carry (an empty one when they carry none)."""
    return propagate.extract(dict(headers or {}))


def current_traceparent() -> str:
    """The W3C traceparent of the current span, to store beside work done later elsewhere;
    "" outside a span. Written as TraceContextTextMapPropagator writes it (a test holds the
    two equal), without the propagators' carrier and baggage: every webhook stores one."""
    return _traceparent(trace.get_current_span().get_span_context())


def _traceparent(span_context: trace.SpanContext) -> str:
    if not span_context.is_valid:
        return ""
    return (
        f"00-{trace.format_trace_id(span_context.trace_id)}-"
        f"{trace.format_span_id(span_context.span_id)}-{span_context.trace_flags:02x}"
    )


def context_from_traceparent(traceparent: str) -> Context:
    return propagate.extract({"traceparent": traceparent} if traceparent else {})


@contextlib.contextmanager
def attached(ctx: Context | None) -> Iterator[None]:
    """Make `ctx` current in this thread for the block (worker threads start with none)."""
    if ctx is None:
        yield
        return
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


@contextlib.contextmanager
def batch_span(
    name: str, contexts: Sequence[Context | None], attributes: Mapping[str, Any] | None = None
) -> Iterator[trace.Span]:
    """A span for work shared by several messages: a child of the first message's span and
    linked from the others, so each message's trace shows it or points to it."""
    present = [ctx for ctx in contexts if ctx is not None]
    links = [Link(trace.get_current_span(ctx).get_span_context()) for ctx in present[1:]]
    with tracer().start_as_current_span(
        name,
        context=present[0] if present else None,
        links=links,
        attributes=dict(attributes or {}),
    ) as span:
        yield span


def set_span(span: trace.Span) -> Context:
    """A context whose current span is `span` (to attach, or to inject into headers)."""
    return trace.set_span_in_context(span)


def person_baggage(person: str, ctx: Context | None = None) -> Context:
    """A context whose baggage names the person by keyed hash (core.pseudonyms), only."""
    return baggage.set_baggage(PERSON_BAGGAGE_KEY, person, context=ctx)


@contextlib.contextmanager
def person_in_baggage(person: str) -> Iterator[None]:
    with attached(person_baggage(person)):
        yield


def subject_template(subject: str) -> str:
    """A subject without its ids, for span names (low cardinality, no user id)."""
    if subject.startswith("health.normalized.user."):
        return "health.normalized.user.*"
    if subject.startswith("health.sync.oura.job."):
        return "health.sync.oura.job.*.status"
    return subject


def message_span_attributes(
    *, subject: str, msg_id: str = "", stream: str = "", stream_seq: int = 0, consumer: str = ""
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.destination.name": subject_template(subject),
    }
    if msg_id:
        attributes["messaging.message.id"] = msg_id
    if stream:
        attributes["messaging.nats.stream"] = stream
    if stream_seq:
        attributes["messaging.nats.stream_sequence"] = stream_seq
    if consumer:
        attributes["messaging.consumer.group.name"] = consumer
    return attributes


def start_consume_span(
    *,
    subject: str,
    headers: Mapping[str, str] | None,
    msg_id: str,
    stream: str,
    stream_seq: int,
    consumer: str,
    num_delivered: int,
) -> trace.Span:
    """The span of one delivered message, a child of the span that published it."""
    attributes = message_span_attributes(
        subject=subject, msg_id=msg_id, stream=stream, stream_seq=stream_seq, consumer=consumer
    )
    attributes["messaging.nats.num_delivered"] = num_delivered
    return tracer().start_span(
        f"{subject_template(subject)} process",
        context=extract_headers(headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


_BAGGAGE = W3CBaggagePropagator()


def start_producer_span(
    *, subject: str, msg_id: str, parent: Context | None, operation: str = "publish"
) -> tuple[trace.Span, dict[str, str]]:
    """A PRODUCER span for one message published outside its parent's thread (a batch), a
    child of `parent`, and the message's headers carrying it and `parent`'s baggage. The
    caller ends it (end_with) once the ack is in."""
    span = tracer().start_span(
        f"{subject_template(subject)} {operation}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=message_span_attributes(subject=subject, msg_id=msg_id),
    )
    # The bus contract's W3C headers (core.messages.TRACE_HEADERS), written as the
    # propagators write them (a test holds the two equal) without building a context for
    # them: every webhook publishes one message.
    headers: dict[str, str] = {}
    span_context = span.get_span_context()
    if span_context.is_valid:
        headers["traceparent"] = _traceparent(span_context)
        if span_context.trace_state:
            headers["tracestate"] = span_context.trace_state.to_header()
    _BAGGAGE.inject(headers, context=parent)
    return span, headers


def end_with(span: trace.Span, error: BaseException | None) -> None:
    """End a span, marking it failed by the error's type (never its message)."""
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.set_attribute("error.type", type(error).__name__)
    span.end()


# --- What leaves the process ----------------------------------------------------------------

# Attributes that hold a URL or its query: the query is dropped whole (OAuth `code`/`state`,
# Oura's `next_token`, dates), the path is redacted like a log line.
_URL_KEYS = frozenset({"http.url", "url.full", "http.target", "url.path", "http.route"})
_QUERY_KEYS = frozenset({"url.query", "http.query"})
_STATEMENT_KEYS = frozenset({"db.statement", "db.query.text"})
_SQL_LITERAL = re.compile(r"(?:[EeBbXxUu]&?)?'(?:[^']|'')*'")
# Exception events keep their type: messages quote values (pydantic, psycopg), and the
# stack trace's last line repeats the message.
_EXCEPTION_DROPPED = frozenset({"exception.message", "exception.stacktrace"})


def _clean_url(value: str) -> str:
    path, sep, _ = value.partition("?")
    return redact(path) + ("?[redacted]" if sep else "")


def _clean_value(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        if isinstance(value, Sequence) and not isinstance(value, bytes):
            return tuple(_clean_value(key, item) for item in value)
        return value
    if key in _QUERY_KEYS:
        return "[redacted]"
    if key in _URL_KEYS:
        return _clean_url(value)
    if key in _STATEMENT_KEYS:
        return _SQL_LITERAL.sub("'?'", value)
    if key.startswith(("http.request.header.", "http.response.header.")):
        return "[redacted]"
    return redact(value)


def clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        key: _clean_value(key, value)
        for key, value in (attributes or {}).items()
        if key not in _EXCEPTION_DROPPED
    }


def clean_span(span: ReadableSpan) -> ReadableSpan:
    events = [
        Event(event.name, clean_attributes(event.attributes), event.timestamp)
        for event in span.events
    ]
    links = [Link(link.context, clean_attributes(link.attributes)) for link in span.links]
    status = span.status
    if status.description:
        status = Status(status.status_code, redact(status.description.split(":", 1)[0]))
    return ReadableSpan(
        name=_clean_url(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=clean_attributes(span.attributes),
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class SanitizingExporter(SpanExporter):
    """Cleans every span on its way out; whatever an instrumentation recorded, this decides."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([clean_span(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def force_flush(timeout_s: float = 5.0) -> None:
    """Send what is buffered (before a process exits on its own terms)."""
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush(int(timeout_s * 1000))
