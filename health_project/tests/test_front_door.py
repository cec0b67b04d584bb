"""health_project/asgi.py below the webhook: Django on its threads, and the error shape.

ingestion/tests/test_webhook_asgi.py covers the deliveries the front door answers itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

import pytest

from health_project.asgi import STREAM_AFTER_BYTES, DjangoOnThreads
from ingestion.tests.asgi_client import AsgiClient


def _app(chunks: list[bytes], seen: list[MutableMapping[str, Any]] | None = None) -> Any:
    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if seen is not None:
            seen.append({"body": environ["wsgi.input"].read(), **environ})
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first;")
        return iter(chunks)

    return wsgi


@pytest.fixture
def threads() -> Iterator[list[DjangoOnThreads]]:
    made: list[DjangoOnThreads] = []
    yield made
    for adapter in made:
        adapter.executor.shutdown(wait=True)


def _serve(adapter: DjangoOnThreads, **options: Any) -> tuple[Any, list[MutableMapping[str, Any]]]:
    """One request; the answer, and the messages the application sent, in order."""
    sent: list[MutableMapping[str, Any]] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def send_and_record(message: MutableMapping[str, Any]) -> None:
            sent.append(message)
            await send(message)

        await adapter(scope, receive, send_and_record)

    client = AsgiClient(recording)
    try:
        return client.request("POST", "/anything", **options), sent
    finally:
        client.close()


def test_a_response_is_sent_whole_and_in_order(threads: list[DjangoOnThreads]) -> None:
    adapter = DjangoOnThreads(_app([b"a", b"", b"b"]), threads=2)
    threads.append(adapter)
    response, sent = _serve(adapter)
    assert (response.status_code, response.content) == (200, b"first;ab")
    assert response["content-type"] == "text/plain"
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 4
    assert sent[-1]["more_body"] is False


def test_a_response_past_the_threshold_is_streamed_whole(threads: list[DjangoOnThreads]) -> None:
    piece = b"x" * (STREAM_AFTER_BYTES // 3 + 1)
    adapter = DjangoOnThreads(_app([piece] * 6), threads=2)
    threads.append(adapter)
    response, sent = _serve(adapter)
    assert response.content == b"first;" + piece * 6
    assert sum(len(m.get("body", b"")) for m in sent) == len(response.content)


def test_the_request_body_reaches_the_application_chunked_or_not(
    threads: list[DjangoOnThreads],
) -> None:
    seen: list[MutableMapping[str, Any]] = []
    adapter = DjangoOnThreads(_app([], seen), threads=1)
    threads.append(adapter)
    _serve(adapter, body=b"hello world", headers={"x-thing": "1"})
    _serve(adapter, chunks=[b"hel", b"lo ", b"world"])
    assert [s["body"] for s in seen] == [b"hello world", b"hello world"]
    assert seen[0]["HTTP_X_THING"] == "1"
    assert seen[0]["CONTENT_LENGTH"] == "11"


def test_a_later_start_response_with_exc_info_replaces_the_status(
    threads: list[DjangoOnThreads],
) -> None:
    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        try:
            raise ValueError("late")
        except ValueError as exc:
            start_response("500 Internal Server Error", [("X-Late", "1")], (type(exc), exc, None))
        return [b"error"]

    adapter = DjangoOnThreads(wsgi, threads=1)
    threads.append(adapter)
    response, _ = _serve(adapter)
    assert (response.status_code, response.content, response["x-late"]) == (500, b"error", "1")


def test_a_websocket_is_closed() -> None:
    adapter = DjangoOnThreads(_app([]), threads=1)
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"}

    asyncio.run(adapter({"type": "websocket"}, receive, send))
    adapter.executor.shutdown()
    assert sent == [{"type": "websocket.close", "code": 1000}]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/v1/no-such-thing", 404, "not_found"),
     ("/v1/health/bad%20id/oura/connection", 400, "invalid_user_id")],
)  # fmt: skip
def test_a_post_to_a_path_without_a_view_is_answered_in_the_error_shape(
    path: str, status: int, code: str
) -> None:
    """It was CSRF's 403 HTML page: the error handler stood in for the view, unexempted."""
    client = AsgiClient()
    try:
        response = client.post(path, data=b"{}", content_type="application/json")
    finally:
        client.close()
    assert (response.status_code, response.json()["error"]) == (status, code)
