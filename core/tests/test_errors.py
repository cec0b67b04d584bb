"""Every view, DRF's or not, answers an unexpected error in the one error shape."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, RequestFactory

from core import errors

pytestmark = pytest.mark.django_db

SECRET = "user-7f3a leaked-in-a-message"
INTERNAL = {"error": "internal", "detail": "Internal server error."}


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(SECRET)


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


@pytest.mark.parametrize(
    ("target", "method", "path"),
    [
        ("ingestion.webhook_apis.webhook_accept", "post", "/v1/webhooks/oura"),
        ("ingestion.connection_apis.connection_complete", "get", "/v1/oauth/oura/callback"),
        ("core.apis.JsonResponse", "get", "/healthz"),
        ("core.apis._run", "get", "/readyz"),
        ("core.metrics_view.process_registry", "get", "/metrics"),
    ],
)
def test_an_unexpected_error_in_a_plain_django_view_is_a_500_in_the_error_shape(
    client: Client, monkeypatch: pytest.MonkeyPatch, target: str, method: str, path: str
) -> None:
    monkeypatch.setattr(target, _boom)
    if method == "post":
        response = client.post(path, data=b"{}", content_type="application/json")
    else:
        response = client.get(path)
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == INTERNAL
    assert SECRET not in response.content.decode()


def test_an_unknown_api_path_is_a_404_in_the_error_shape(client: Client) -> None:
    response = client.get("/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not found."}


def test_handler500_answers_api_paths_in_the_error_shape_and_admin_in_html() -> None:
    factory = RequestFactory()
    api = errors.server_error(factory.get("/v1/health/a/oura/daily"))
    assert api.status_code == 500
    assert api["Content-Type"] == "application/json"
    admin = errors.server_error(factory.get("/admin/"))
    assert admin.status_code == 500
    assert admin["Content-Type"].startswith("text/html")


def test_the_handlers_are_the_urlconfs() -> None:
    from health_project import urls

    assert urls.handler400 == "core.errors.bad_request"
    assert urls.handler404 == "core.errors.page_not_found"
    assert urls.handler500 == "core.errors.server_error"


@pytest.mark.django_db
@pytest.mark.parametrize("user_id", ["x" * 65, "a.b", "caf%C3%A9"])
def test_under_debug_a_bad_user_id_in_the_path_is_still_400_not_500(
    settings: Any, user_id: str
) -> None:
    # make run serves with DEBUG on; Django's debug page resolved the path again and failed.
    settings.DEBUG = True
    response = Client(raise_request_exception=False).get(f"/v1/health/{user_id}/oura/daily")
    assert response.status_code == 400
