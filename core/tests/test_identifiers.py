"""User ids: one pattern, checked at every entry point, answered 400 in the error shape."""

from __future__ import annotations

from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from access.admin import ApiKeyCreationForm
from access.models import ApiKey
from core.identifiers import (
    USER_ID_PATTERN,
    InvalidUserId,
    is_valid_user_id,
    validate_user_id,
)
from ingestion.connection_services import connection_start
from ingestion.models import OAuthState
from jobs.models import IngestionJob
from jobs.services import job_start
from normalized.dtos import normalized_metrics_subject

BAD_IDS = ["x" * 65, "*", ">", "a.b", "a b", "é", "a\n", "", "a*b", "user.>"]
BAD_IN_PATH = [bad for bad in BAD_IDS if bad and bad != "a\n"] + ["a%0A", "%2A", "a%2Eb"]


@pytest.mark.parametrize("value", ["a", "A-z_0-9", "x" * 64, "demo-user", "0"])
def test_ids_of_the_pattern_are_accepted(value: str) -> None:
    assert is_valid_user_id(value)
    assert validate_user_id(value) == value


@pytest.mark.parametrize("value", [*BAD_IDS, None, 5])
def test_ids_outside_the_pattern_are_refused_without_quoting_them(value: object) -> None:
    assert not is_valid_user_id(value)
    with pytest.raises(InvalidUserId) as raised:
        validate_user_id(value)
    assert str(raised.value) == f"The user id must match {USER_ID_PATTERN}."


@pytest.mark.django_db
@pytest.mark.parametrize("bad", BAD_IN_PATH)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/health/{}/oura/connection"),
        ("delete", "/v1/health/{}/oura/connection"),
        ("get", "/v1/health/{}/oura/daily"),
        ("get", "/v1/health/{}/oura/activities"),
        ("get", "/v1/health/{}/oura/sleep"),
    ],
)
def test_every_api_path_answers_a_bad_user_id_with_400_in_the_error_shape(
    api_client: APIClient, make_api_key, method: str, path: str, bad: str
) -> None:
    key = make_api_key(scopes=("health:read", "health:connect"))
    api_client.raise_request_exception = False
    response = getattr(api_client, method)(path.format(bad), HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 400, response.content
    assert response.json() == {
        "error": "invalid_user_id",
        "detail": f"The user id must match {USER_ID_PATTERN}.",
    }
    assert not OAuthState.objects.exists()


@pytest.mark.django_db
def test_a_64_character_id_is_a_user_like_any_other(api_client: APIClient, make_api_key) -> None:
    key = make_api_key(scopes=("health:connect",))
    response = api_client.post(
        f"/v1/health/{'x' * 64}/oura/connection", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 200
    assert OAuthState.objects.get().user_id == "x" * 64


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["*", "x" * 65, "a.b", "a\n"])
def test_the_sync_body_refuses_a_bad_user_id(api_client: APIClient, make_api_key, bad) -> None:
    key = make_api_key(scopes=("health:sync",))
    response = api_client.post(
        "/v1/health/oura/sync",
        {"userId": bad, "range": {"start": "2024-01-01", "end": "2024-01-02"}},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "userId" in body["fields"]
    assert not IngestionJob.objects.exists()


@pytest.mark.django_db
def test_services_and_subject_builders_refuse_bad_ids_too() -> None:
    with pytest.raises(InvalidUserId):
        connection_start(user_id="a.*")
    with pytest.raises(InvalidUserId):
        job_start(
            user_id=">",
            start=date(2024, 1, 1),
            end=date(2024, 1, 2),
            data_types=None,
            requested_by="test",
        )
    with pytest.raises(InvalidUserId):
        normalized_metrics_subject("a.b")
    assert not OAuthState.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("users", ["a.b", "ok,*", "x" * 65])
def test_create_api_key_refuses_bad_user_ids(users: str) -> None:
    with pytest.raises(CommandError, match="user id must match"):
        call_command(
            "create_api_key", "--name", "x", "--scopes", "health:read", "--users", users,
            stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_the_api_key_admin_form_refuses_bad_user_ids() -> None:
    form = ApiKeyCreationForm(
        data={"name": "x", "scopes": ["health:read"], "allowed_users": "ok, a.b"}
    )
    assert not form.is_valid()
    assert "allowed_users" in form.errors
