"""What core.tracing decides: what leaves a process, what is sampled, what rides in headers."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from core import bus, tracing
from core.pseudonyms import person_hash


@pytest.fixture
def recorded() -> tuple[trace.Tracer, InMemorySpanExporter]:
    """A provider of our own (the process-wide one records nothing without an exporter),
    exporting through SanitizingExporter as init_tracing wires it."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(tracing.SanitizingExporter(memory)))
    return provider.get_tracer("test"), memory


def test_exported_spans_carry_no_query_string_raw_user_id_sql_literal_or_exception_message(
    recorded,
) -> None:
    tracer, memory = recorded
    with tracer.start_as_current_span("GET /v1/oauth/oura/callback?code=abc&state=xyz") as span:
        span.set_attribute("http.url", "http://h/v1/oauth/oura/callback?code=abc&state=xyz")
        span.set_attribute("url.full", "https://api.ouraring.com/v2/x?next_token=tok123")
        span.set_attribute("url.query", "code=abc&state=xyz")
        span.set_attribute("http.target", "/v1/health/person-42/oura/daily?start_date=2026")
        span.set_attribute("db.statement", "SELECT 1 FROM t WHERE u = 'person-42' AND v = E'x'")
        span.set_attribute("http.request.header.authorization", ("Bearer secret-key",))
        span.set_attribute("note", "access_token=tok-9")
        try:
            raise ValueError("hrv qq-91-value for person-42")
        except ValueError as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, "ValueError: hrv qq-91-value"))

    (exported,) = memory.get_finished_spans()
    text = repr(exported.to_json())
    for secret in ("abc", "xyz", "tok123", "person-42", "secret-key", "tok-9", "qq-91-value"):
        assert secret not in text, secret
    attributes = exported.attributes or {}
    assert attributes["http.target"] == (
        f"/v1/health/{person_hash('person-42')}/oura/daily?[redacted]"
    )
    assert attributes["db.statement"] == "SELECT 1 FROM t WHERE u = '?' AND v = '?'"
    assert exported.name == "GET /v1/oauth/oura/callback?[redacted]"
    (event,) = exported.events
    assert (event.attributes or {})["exception.type"] == "ValueError"
    assert "exception.message" not in (event.attributes or {})
    assert exported.status.description == "ValueError"


def test_a_client_span_that_would_start_a_trace_is_dropped_and_a_child_one_is_kept() -> None:
    sampler = tracing.NoOrphanClientSpans(ALWAYS_ON)
    orphan = sampler.should_sample(None, 1, "SELECT", SpanKind.CLIENT)
    assert orphan.decision is Decision.DROP
    root_server = sampler.should_sample(None, 1, "GET", SpanKind.SERVER)
    assert root_server.decision is Decision.RECORD_AND_SAMPLE
    parent = NonRecordingSpan(SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(1)))
    child = sampler.should_sample(trace.set_span_in_context(parent), 1, "SELECT", SpanKind.CLIENT)
    assert child.decision is Decision.RECORD_AND_SAMPLE


def test_sampling_is_off_without_an_exporter_and_follows_otel_traces_sampler_with_one(
    monkeypatch,
) -> None:
    assert tracing.sampler_from_env(exporting=False).get_description() == "AlwaysOffSampler"
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    default = tracing.sampler_from_env(exporting=True).get_description()
    assert "TraceIdRatioBased{0.1}" in default
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert "TraceIdRatioBased{0.25}" in tracing.sampler_from_env(exporting=True).get_description()


def test_the_exporter_follows_the_standard_variables(monkeypatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert tracing.exporter_from_env() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert type(tracing.exporter_from_env()).__name__ == "OTLPSpanExporter"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.exporter_from_env() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="otlp, console or none"):
        tracing.exporter_from_env()


def test_subjects_with_a_user_id_are_named_by_template() -> None:
    assert (
        tracing.subject_template("health.normalized.user.person-42.metrics")
        == "health.normalized.user.*"
    )
    attributes = tracing.message_span_attributes(subject="health.normalized.user.p-1.metrics")
    assert "p-1" not in repr(attributes)


def test_a_published_message_carries_the_publishers_trace_context_and_person_baggage(
    clean_streams,
) -> None:
    span_context = SpanContext(
        0x1234ABCD, 0x42, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    ctx: Context = trace.set_span_in_context(NonRecordingSpan(span_context))
    ctx = tracing.person_baggage(person_hash("person-42"), ctx)
    with tracing.attached(ctx):
        bus.get_bus().publish("health.raw.oura.webhook", b"{}", msg_id="trace-header-test")

    async def read() -> dict[str, str]:
        nc = await bus.connect(name="tests")
        try:
            js = nc.jetstream()
            msg = await js.get_last_msg("HEALTH_RAW", "health.raw.oura.webhook")
            return dict(msg.headers or {})
        finally:
            await nc.close()

    headers = asyncio.run(read())
    assert headers["Nats-Msg-Id"] == "trace-header-test"
    received = tracing.extract_headers(headers)
    parent = trace.get_current_span(received).get_span_context()
    # The message's parent is the publish span, in the publisher's trace.
    assert parent.trace_id == 0x1234ABCD
    assert parent.span_id != 0x42
    assert baggage.get_baggage(tracing.PERSON_BAGGAGE_KEY, received) == person_hash("person-42")
    assert "person-42" not in repr(headers)


def test_the_tracer_is_made_once_and_records_through_the_process_provider() -> None:
    """tracer() is cached (issue #19): the same object every call, and its spans go through
    the provider installed for the process, as a fresh get_tracer's would."""
    assert tracing.tracer() is tracing.tracer()
    provider = trace.get_tracer_provider()
    with tracing.tracer().start_as_current_span("cached") as span:
        fresh = provider.get_tracer(tracing.TRACER_NAME).start_span("fresh")
        fresh.end()
    assert span.is_recording() == fresh.is_recording()
    assert type(span) is type(fresh)


@pytest.mark.parametrize("flags", [TraceFlags.SAMPLED, TraceFlags.DEFAULT])
def test_the_stored_traceparent_is_what_the_w3c_propagator_writes(flags: TraceFlags) -> None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    assert tracing.current_traceparent() == ""  # outside any span
    parent = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C,
                         span_id=0x00F067AA0BA902B7, is_remote=True, trace_flags=flags)  # fmt: skip
    with trace.use_span(NonRecordingSpan(parent)):
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        assert tracing.current_traceparent() == carrier["traceparent"]
        assert carrier["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


def test_a_producer_spans_headers_are_what_the_propagators_write() -> None:
    """start_producer_span writes the W3C headers itself; they must be the propagators'."""
    from opentelemetry import propagate
    from opentelemetry.trace import TraceState

    parent_context = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C,
                                 span_id=0x00F067AA0BA902B7, is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED),
                                 trace_state=TraceState([("vendor", "v1")]))  # fmt: skip
    parent = tracing.person_baggage(
        person_hash("person-42"), trace.set_span_in_context(NonRecordingSpan(parent_context))
    )
    span, headers = tracing.start_producer_span(
        subject="health.raw.oura.webhook", msg_id="m-1", parent=parent
    )
    expected: dict[str, str] = {}
    propagate.inject(expected, context=trace.set_span_in_context(span, parent))
    span.end()
    assert headers == expected
    assert set(headers) == {"traceparent", "tracestate", "baggage"}
    # Without a parent: a trace of its own, and no baggage to carry.
    span, headers = tracing.start_producer_span(subject="s", msg_id="m-2", parent=Context())
    expected = {}
    propagate.inject(expected, context=trace.set_span_in_context(span, Context()))
    span.end()
    assert headers == expected
    assert set(headers) == {"traceparent"}
