"""The WSGI entry serves Oura's deliveries and the health reads through a lean middleware chain
and everything else through the whole one (health_project/wsgi.py), and the two answer alike
where it matters."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver

from access.authentication import ApiKeyAuthentication
from access.models import Scope
from access.services import api_key_create
from health_project.wsgi import application
from ingestion.models import RawEvent
from ingestion.tests.webhook_helpers import URL, connect, notification, signed
from normalized.tests.factories import DailyReadinessFactory

pytestmark = pytest.mark.django_db(transaction=True)


def call(
    path: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
) -> tuple[int, dict[str, list[str]], bytes]:
    """One request through `application`, as a WSGI server makes it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
    }  # fmt: skip
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answer: dict[str, Any] = {}

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None, /
    ) -> Callable[[bytes], object]:
        answer["status"] = int(status.split()[0])
        answer["headers"] = {}
        for name, value in response_headers:
            answer["headers"].setdefault(name.lower(), []).append(value)
        return lambda _chunk: None

    content = b"".join(application(environ, start_response))
    return answer["status"], answer["headers"], content


def test_a_delivery_is_answered_on_the_lean_chain_with_the_same_headers_that_matter() -> None:
    connect()
    raw, headers = signed(notification())
    status, response_headers, content = call(
        URL, method="POST", body=raw,
        headers=headers | {"cookie": "sessionid=abc; csrftoken=def", "x-request-id": "req-7"},
    )  # fmt: skip

    assert status == 202
    assert json.loads(content)["eventId"] == str(RawEvent.objects.get().event_id)
    assert response_headers["x-request-id"] == ["req-7"]
    assert response_headers["x-content-type-options"] == ["nosniff"]
    assert response_headers["content-length"] == [str(len(content))]
    # Nothing of the browser half ran: no session or CSRF cookie, no CSP or frame header.
    assert "set-cookie" not in response_headers
    assert "content-security-policy" not in response_headers
    assert "x-frame-options" not in response_headers
    assert "vary" not in response_headers


def test_a_bad_delivery_gets_the_error_shape_on_the_lean_chain() -> None:
    status, response_headers, content = call(URL, method="POST", body=b"{", headers={})
    assert status == 400
    assert json.loads(content)["error"] == "invalid_signature"
    assert response_headers["x-request-id"]


def test_every_other_path_goes_through_the_whole_chain() -> None:
    status, response_headers, _ = call("/admin/login/")
    assert status == 200
    # The browser half ran: CSRF cookie, CSP and frame headers.
    assert any(c.strip().startswith("csrftoken=") for c in response_headers["set-cookie"])
    assert "content-security-policy" in response_headers
    assert response_headers["x-frame-options"] == ["DENY"]


def test_a_health_read_is_answered_on_the_lean_chain() -> None:
    DailyReadinessFactory(user_id="user-a", day=date(2024, 3, 1))
    key = api_key_create(name="t", scopes=[Scope.READ], all_users=True).secret
    path = "/v1/health/user-a/oura/daily"
    query = "start=2024-01-01&end=2024-12-31"

    status, response_headers, content = call(
        path, query=query, headers={"authorization": f"Bearer {key}", "x-request-id": "req-8"}
    )
    refused, refused_headers, refusal = call(path, query=query)

    assert status == 200
    assert [entry["day"] for entry in json.loads(content)["data"]] == ["2024-03-01"]
    assert response_headers["x-request-id"] == ["req-8"]
    assert response_headers["x-content-type-options"] == ["nosniff"]
    for name in ("set-cookie", "content-security-policy", "x-frame-options", "vary"):
        assert name not in response_headers, name
    assert refused == 401
    assert json.loads(refusal)["error"] == "unauthenticated"
    assert refused_headers["x-request-id"]


@pytest.mark.parametrize("debug", [False, True])
def test_a_malformed_person_id_or_unknown_path_gets_the_error_shape_even_under_debug(
    settings: Any, debug: bool
) -> None:
    """With DEBUG on (`make run`) Django would answer these with its HTML debug page."""
    settings.DEBUG = debug
    key = api_key_create(name="t", scopes=[Scope.READ], all_users=True).secret
    auth = {"authorization": f"Bearer {key}"}

    bad_id, bad_headers, bad_body = call("/v1/health/%00x/oura/daily", headers=auth)
    unknown, _, unknown_body = call("/v1/health/user-a/oura/nothing-here", headers=auth)
    unknown_full, _, unknown_full_body = call("/v1/nothing-here")  # the whole chain's path
    static, static_headers, _ = call("/static/nothing-here.css")

    assert bad_id == 400
    assert bad_headers["content-type"] == ["application/json"]
    assert json.loads(bad_body)["error"] == "invalid_user_id"
    assert "%00x" not in bad_body.decode()  # the id is never quoted back
    assert unknown == unknown_full == 404
    assert json.loads(unknown_body) == {"error": "not_found", "detail": "Not found."}
    assert json.loads(unknown_full_body) == {"error": "not_found", "detail": "Not found."}
    # Static files and the admin's pages are read by browsers: Django's own 404 page (its
    # debug page under DEBUG).
    assert static == 404
    assert static_headers["content-type"][0].startswith("text/html")


def test_only_machine_paths_are_lean() -> None:
    # A lean path must not need a session, user, CSRF token or page: the webhook (signed)
    # and the health reads, every one of which authenticates by API key alone.
    assert tuple(settings.LEAN_PATHS) == (URL,)
    assert tuple(settings.LEAN_PREFIXES) == ("/v1/health/",)
    lean_views = [
        pattern
        for pattern in _patterns(get_resolver().url_patterns)
        if ("/" + pattern[0]).startswith(settings.LEAN_PREFIXES)
    ]
    assert len(lean_views) >= 8
    for route, view in lean_views:
        classes = view.cls().get_authenticators() if hasattr(view, "cls") else None
        assert [type(c) for c in classes or []] == [ApiKeyAuthentication], route


def _patterns(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def test_every_browser_middleware_named_is_one_the_whole_chain_has() -> None:
    # A renamed or removed entry would silently stay in the lean chain's filter list.
    assert set(settings.MIDDLEWARE) >= settings.BROWSER_MIDDLEWARE
