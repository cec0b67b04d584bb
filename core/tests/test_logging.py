"""Every log line carries the request id and the trace id, and every record is one line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client
from django.urls import path
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from core.observability import annotate_access_log, current_request_id
from core.request_id import accepted_request_id

logger = logging.getLogger(__name__)


def _logs_an_event(request: HttpRequest) -> HttpResponse:
    logger.info("view_event", extra={"answer": 42})
    return JsonResponse({"request_id": current_request_id()})


def _fails(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def _annotates(request: HttpRequest) -> HttpResponse:
    annotate_access_log(event_id="e-1", rows=3)
    return JsonResponse({})


urlpatterns = [path("v1/logs-an-event", _logs_an_event), path("v1/fails", _fails),
               path("v1/annotates", _annotates)]  # fmt: skip

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

# A local SDK provider: its spans are valid (real trace ids) whatever the global one is.
tracer = TracerProvider().get_tracer(__name__)


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """What the project's console handler (settings.LOGGING) writes, for the test's length."""
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    assert len(handlers) == 1, "one console handler on the root logger"
    stream = io.StringIO()
    previous = handlers[0].setStream(stream)
    try:
        yield stream
    finally:
        handlers[0].setStream(previous)


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    "offered", ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "web.1:req_9", "x" * 128]
)
def test_a_safe_incoming_request_id_is_kept_and_echoed(client: Client, offered: str) -> None:
    response = client.get("/v1/logs-an-event", headers={"X-Request-ID": offered})
    assert response["X-Request-ID"] == offered
    assert response.json() == {"request_id": offered}


@pytest.mark.parametrize(
    "offered",
    ["x" * 129, "has space", 'quote"d', "new\tline", "caf\u00e9", "\u0661\u0662", "{}", ""],
)
def test_an_unsafe_or_oversized_request_id_is_replaced_by_a_fresh_one(
    client: Client, offered: str
) -> None:
    response = client.get("/v1/logs-an-event", headers={"X-Request-ID": offered})
    replaced = response["X-Request-ID"]
    assert replaced != offered
    assert len(replaced) == 32
    assert int(replaced, 16) >= 0
    assert response.json() == {"request_id": replaced}


def test_a_request_without_an_id_gets_a_new_one_each_time(client: Client) -> None:
    first = client.get("/v1/logs-an-event")["X-Request-ID"]
    second = client.get("/v1/logs-an-event")["X-Request-ID"]
    assert first != second
    assert accepted_request_id(None) != accepted_request_id(None)


@pytest.mark.parametrize(("url", "status"), [("/v1/logs-an-event", 200), ("/v1/nothing-here", 404),
                                             ("/v1/fails", 500)])  # fmt: skip
def test_every_response_carries_the_request_id_errors_included(
    client: Client, console: io.StringIO, url: str, status: int
) -> None:
    response = client.get(url, headers={"X-Request-ID": "req-1"})
    assert response.status_code == status
    assert response["X-Request-ID"] == "req-1"
    access = [r for r in _records(console) if r["message"] == "http_request"]
    assert [(r["status"], r["request_id"]) for r in access] == [(status, "req-1")]
    assert current_request_id() is None


def test_a_line_logged_in_a_view_carries_the_request_id_and_the_trace_id(
    client: Client, console: io.StringIO
) -> None:
    with tracer.start_as_current_span("test request") as span:
        client.get("/v1/logs-an-event", headers={"X-Request-ID": "req-2"})
    trace_id = trace.format_trace_id(span.get_span_context().trace_id)
    (event,) = [r for r in _records(console) if r["message"] == "view_event"]
    assert event["request_id"] == "req-2"
    assert event["trace_id"] == trace_id
    assert isinstance(event["span_id"], str)
    assert len(event["span_id"]) == 16
    assert event["answer"] == 42


def test_a_record_outside_requests_and_spans_has_no_stale_ids(
    client: Client, console: io.StringIO
) -> None:
    client.get("/v1/logs-an-event", headers={"X-Request-ID": "req-3"})
    client.get("/v1/fails", headers={"X-Request-ID": "req-4"})
    logger.info("between_requests")
    (between,) = [r for r in _records(console) if r["message"] == "between_requests"]
    assert "request_id" not in between
    assert "trace_id" not in between
    assert "span_id" not in between


def test_one_record_is_exactly_one_line_on_the_console(console: io.StringIO) -> None:
    # Django's own loggers and granian's are routed through the root handler only.
    for name in ("core.tests.test_logging", "django.request", "_granian", "py.warnings"):
        logging.getLogger(name).warning("one_line_%s", name.replace(".", "_"))
    lines = console.getvalue().splitlines()
    assert len(lines) == 4
    assert [json.loads(line)["name"] for line in lines] == [
        "core.tests.test_logging", "django.request", "_granian", "py.warnings"
    ]  # fmt: skip


def test_what_a_view_annotates_is_in_its_access_line_and_not_in_the_next_request(
    client: Client, console: io.StringIO
) -> None:
    client.get("/v1/annotates", headers={"X-Request-ID": "req-5"})
    client.get("/v1/logs-an-event", headers={"X-Request-ID": "req-6"})
    first, second = [r for r in _records(console) if r["message"] == "http_request"]
    assert (first["request_id"], first["event_id"], first["rows"]) == ("req-5", "e-1", 3)
    assert second["request_id"] == "req-6"
    assert "event_id" not in second
    # Outside a request there is no access line to add to: the caller is told.
    assert annotate_access_log(event_id="e-2") is False
