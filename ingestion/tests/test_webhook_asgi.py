"""The ASGI front door (health_project/asgi.py, ingestion/webhook_asgi.py): what only it does.

test_webhooks.py runs every delivery case against it and against the Django view; here: it
answers as the view does to the byte, routes everything else to Django, hands Django what
Django must answer (a bad Host, plain HTTP under SECURE_SSL_REDIRECT), many copies at once
on one loop, chunked and abandoned bodies, an unexpected error, and its shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from a2wsgi import WSGIMiddleware
from django.core.cache import cache
from django.db import connections
from django.test import override_settings

from access.services import api_key_create
from core.metrics import http_responses_total
from health_project.asgi import as_coroutine, make_application
from health_project.wsgi import application as wsgi_application
from health_project.wsgi import make_application as make_wsgi_application
from ingestion import webhook_asgi, webhook_commit
from ingestion.models import RawEvent
from ingestion.tests.asgi_client import AsgiClient
from ingestion.tests.webhook_helpers import (
    URL,
    assert_stored_audited_published,
    connect,
    notification,
    signed,
)
from ingestion.webhook_services import reset_publish_breaker

pytestmark = pytest.mark.django_db(transaction=True)

# Headers that differ between any two answers whatever the path.
_PER_REQUEST = {"x-request-id", "date", "server"}


@pytest.fixture(autouse=True)
def _fresh_limits(clean_streams: None) -> Iterator[None]:
    cache.clear()
    reset_publish_breaker()
    yield
    reset_publish_breaker()


@pytest.fixture
def asgi() -> Iterator[AsgiClient]:
    client = AsgiClient()
    yield client
    client.close()


@pytest.fixture
def view() -> Iterator[AsgiClient]:
    """The same requests through the Django view only: the WSGI application `make run`
    served before, behind the same adapter."""
    adapter = WSGIMiddleware(wsgi_application, workers=1)  # type: ignore[arg-type]  # a2wsgi's Environ TypedDict

    async def django_only(scope: Any, receive: Any, send: Any) -> None:
        await adapter(scope, as_coroutine(receive), send)  # type: ignore[arg-type]  # a2wsgi's event TypedDicts

    client = AsgiClient(django_only)
    yield client
    client.close()
    adapter.executor.submit(connections.close_all).result(15)


def _post(client: AsgiClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def _same_answer(a: Any, b: Any) -> None:
    assert a.status_code == b.status_code
    assert a.content == b.content
    assert {k: v for k, v in a.headers.items() if k not in _PER_REQUEST} == {
        k: v for k, v in b.headers.items() if k not in _PER_REQUEST
    }


def test_every_answer_is_the_views_to_the_byte(asgi: AsgiClient, view: AsgiClient) -> None:
    connect()
    oversized = json.dumps(notification(object_id="x" * 70_000)).encode()
    cases: list[tuple[bytes, dict[str, str]]] = [
        (b"{}", {"x-oura-signature": "AB", "x-oura-timestamp": "1"}),  # bad signature
        signed(notification(event_type="explode")),  # invalid notification
        (b"[1,2", signed(notification())[1]),  # signed over something else
        (oversized, {}),
    ]
    for body, headers in cases:
        _same_answer(_post(asgi, body, headers), _post(view, body, headers))
    # A new delivery (202 with its own id) and a redelivery of it to the other path (409).
    raw, headers = signed(notification())
    accepted = _post(asgi, raw, headers)
    duplicate_by_view = _post(view, raw, headers)
    duplicate_by_asgi = _post(asgi, raw, headers)
    assert accepted.status_code == 202
    _same_answer(duplicate_by_asgi, duplicate_by_view)
    assert duplicate_by_asgi.json()["eventId"] == accepted.json()["eventId"]
    by_view = _post(view, *signed(notification(object_id="another")))
    assert by_view.status_code == 202
    assert set(accepted.headers) == set(by_view.headers)
    assert {
        k: v for k, v in accepted.headers.items() if k not in _PER_REQUEST | {"content-length"}
    } == {k: v for k, v in by_view.headers.items() if k not in _PER_REQUEST | {"content-length"}}
    assert accepted.headers["x-content-type-options"] == "nosniff"


def test_a_rate_limited_source_gets_the_views_429(asgi: AsgiClient, view: AsgiClient) -> None:
    with override_settings(WEBHOOK_RATE_LIMIT_PER_MINUTE=0):
        by_asgi = _post(asgi, *signed(notification()))
        cache.clear()
        by_view = _post(view, *signed(notification()))
    assert by_asgi.status_code == 429
    assert by_asgi["retry-after"].isdigit()
    assert by_asgi.json() == by_view.json()
    assert RawEvent.objects.count() == 0


def test_other_requests_reach_django(asgi: AsgiClient) -> None:
    assert asgi.get("/healthz").json() == {"status": "ok"}
    assert asgi.get(URL, {"verification_token": "wrong", "challenge": "c"}).status_code == 401
    put = asgi.put(URL, data=b"{}")
    assert (put.status_code, put.json()["error"]) == (405, "method_not_allowed")
    missing = asgi.get("/v1/webhooks/oura/")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


def test_django_reads_request_bodies_through_the_front_door(asgi: AsgiClient) -> None:
    """a2wsgi reads a body by handing `receive` to the loop as a coroutine; granian's is not
    one (AsgiClient's is not either): every POST with a body to Django was a 500."""
    key = api_key_create(name="asgi", scopes=["health:sync"], all_users=True).secret
    body = json.dumps({"userId": "nobody", "range": {"start": "2026-11-01", "end": "2026-11-02"}})
    response = asgi.post(
        "/v1/health/oura/sync",
        data=body.encode(),
        content_type="application/json",
        headers={"authorization": f"Bearer {key}"},
    )
    assert (response.status_code, response.json()["error"]) == (409, "not_connected")


def test_a_host_outside_allowed_hosts_is_djangos_400_and_stores_nothing(asgi: AsgiClient) -> None:
    connect()
    raw, headers = signed(notification())
    response = _post(asgi, raw, {**headers, "host": "evil.example"})
    assert (response.status_code, response.json()["error"]) == (400, "bad_request")
    assert RawEvent.objects.count() == 0


def test_remembered_host_checks_are_bounded_and_follow_the_settings(asgi: AsgiClient) -> None:
    """The loop remembers Django's Host verdict per header combination: a client inventing
    Host headers cannot grow that memory, and a settings change is not answered from it."""
    from ingestion import webhook_asgi

    connect()
    invented = [{"method": "POST", "path": URL, "body": b"{}",
                 "headers": {"host": f"evil-{n}.example"}} for n in range(100)]  # fmt: skip
    assert {answer.status_code for answer in asgi.at_once(invented)} == {400}
    assert len(webhook_asgi._origins) <= webhook_asgi._MAX_ORIGINS
    with override_settings(ALLOWED_HOSTS=["ours.example"]):
        raw, headers = signed(notification())
        assert _post(asgi, raw, {**headers, "host": "ours.example"}).status_code == 202
    # Allowed a moment ago, remembered as such: no longer allowed now.
    raw, headers = signed(notification())
    assert _post(asgi, raw, {**headers, "host": "ours.example"}).status_code == 400
    assert RawEvent.objects.count() == 1


def test_plain_http_is_redirected_when_https_is_required_and_https_is_served() -> None:
    connect()
    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=3600):
        # Django's middleware reads its settings once, as the server starts.
        client = AsgiClient(make_application(make_wsgi_application()))
        try:
            plain = _post(client, *signed(notification()))
            raw, headers = signed(notification())
            https = _post(client, raw, {**headers, "x-forwarded-proto": "https"})
        finally:
            client.close()
    assert plain.status_code == 301
    assert plain["location"] == "https://testserver/v1/webhooks/oura"
    assert https.status_code == 202
    assert https["strict-transport-security"] == "max-age=3600"
    assert RawEvent.objects.count() == 1


def test_twenty_copies_at_once_on_one_loop_give_one_202_and_nineteen_409(
    asgi: AsgiClient,
) -> None:
    connect()
    raw, headers = signed(notification())
    answers = asgi.at_once(
        [dict(method="POST", path=URL, body=raw, headers=headers) for _ in range(20)]
    )
    assert sorted(a.status_code for a in answers) == [202] + [409] * 19
    assert len({a.json()["eventId"] for a in answers}) == 1
    assert_stored_audited_published(1)


def test_many_different_deliveries_at_once_are_each_stored_once(asgi: AsgiClient) -> None:
    connect()
    deliveries = [signed(notification(object_id=f"doc-{i}")) for i in range(40)]
    answers = asgi.at_once(
        [dict(method="POST", path=URL, body=raw, headers=headers) for raw, headers in deliveries]
    )
    assert [a.status_code for a in answers] == [202] * 40
    assert_stored_audited_published(40)


def test_a_chunked_body_is_read_whole_and_a_long_one_is_refused_unread(asgi: AsgiClient) -> None:
    connect()
    raw, headers = signed(notification())
    pieces = [raw[:10], raw[10:50], raw[50:]]
    sent = {**headers, "content-type": "application/json"}
    assert asgi.request("POST", URL, chunks=pieces, headers=sent).status_code == 202
    endless = [b"x" * 4096] * 64  # 256 KiB with no Content-Length
    response = asgi.request("POST", URL, chunks=endless, headers=sent)
    assert (response.status_code, response.json()["error"]) == (413, "payload_too_large")
    assert RawEvent.objects.count() == 1


def test_a_client_gone_before_its_body_ends_gets_nothing_and_nothing_is_stored() -> None:
    connect()
    raw, headers = signed(notification())
    scope = {"type": "http", "method": "POST", "path": URL, "root_path": "", "scheme": "http",
             "query_string": b"", "client": ("127.0.0.1", 1), "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), *((k.encode(), v.encode())
                                                    for k, v in headers.items())]}  # fmt: skip
    incoming: list[MutableMapping[str, Any]] = [
                {"type": "http.request", "body": raw[:20], "more_body": True},
                {"type": "http.disconnect"}]  # fmt: skip
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def deliver() -> None:
        await webhook_asgi.WebhookEndpoint(django=_unused)(scope, receive, send)
        await webhook_commit.stop_async_group_committer()

    asyncio.run(deliver())
    assert sent == []
    assert RawEvent.objects.count() == 0


async def _unused(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("Django was asked to answer a delivery")


def test_an_unexpected_error_is_a_500_in_the_shape_that_names_nothing(
    asgi: AsgiClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(**_: Any) -> Any:
        raise RuntimeError("hrv 42 for oura-user-1")

    monkeypatch.setattr(webhook_asgi, "webhook_accept_async", broken)
    errors = http_responses_total.labels(route="oura-webhook", status_class="5xx")
    before = errors._value.get()
    with caplog.at_level(logging.INFO):
        response = _post(asgi, *signed(notification()))
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "detail": "Internal server error."}
    assert errors._value.get() == before + 1
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "unhandled_error" in logged
    assert "hrv 42" not in logged
    assert "oura-user-1" not in logged


def test_shutdown_finishes_the_committer_and_closes_its_connection() -> None:
    connect()
    app = make_application(wsgi_application)
    client = AsgiClient(app)
    try:
        assert _post(client, *signed(notification())).status_code == 202
        committer = webhook_commit._async_committer
        assert committer is not None
        messages: list[MutableMapping[str, Any]] = [
            {"type": "lifespan.startup"},
            {"type": "lifespan.shutdown"},
        ]
        answers: list[str] = []

        async def lifespan() -> None:
            async def receive() -> MutableMapping[str, Any]:
                return messages.pop(0)

            async def send(message: MutableMapping[str, Any]) -> None:
                answers.append(message["type"])

            await app({"type": "lifespan"}, receive, send)

        asyncio.run_coroutine_threadsafe(lifespan(), client.loop).result(30)
    finally:
        client.close()
    assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert webhook_commit._async_committer is None
    assert committer._db is None
