"""API keys: hashed at rest, scoped, user-restricted, revocable, expiring."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from access.models import ApiKey
from access.selectors import api_key_by_hash
from access.services import api_key_create, api_key_revoke, hash_key

pytestmark = pytest.mark.django_db

URL = "/v1/health/{user}/oura/connection"


def post_connect(client: APIClient, key: str | None, user: str = "user-a"):
    if key is None:
        return client.post(URL.format(user=user))
    return client.post(URL.format(user=user), HTTP_AUTHORIZATION=f"Bearer {key}")


def test_a_missing_key_gets_401(api_client: APIClient) -> None:
    response = post_connect(api_client, None)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_a_wrong_key_gets_401(api_client: APIClient) -> None:
    response = post_connect(api_client, "hk_this-is-not-a-key")
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthenticated",
        "detail": "Invalid, revoked or expired API key.",
    }


def test_a_revoked_key_gets_401(api_client: APIClient, make_api_key) -> None:
    secret = make_api_key(scopes=("health:connect",))
    api_key_revoke(api_key=ApiKey.objects.get(key_hash=hash_key(secret)))
    assert post_connect(api_client, secret).status_code == 401


def test_an_expired_key_gets_401(api_client: APIClient, make_api_key) -> None:
    secret = make_api_key(
        scopes=("health:connect",), expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert post_connect(api_client, secret).status_code == 401


def test_a_key_without_the_scope_gets_403(api_client: APIClient, make_api_key) -> None:
    secret = make_api_key(scopes=("health:read",))
    response = post_connect(api_client, secret)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_a_key_for_another_user_gets_404_like_a_missing_user(
    api_client: APIClient, make_api_key
) -> None:
    secret = make_api_key(scopes=("health:connect",), users=("user-a",))
    other = post_connect(api_client, secret, user="user-b")
    assert other.status_code == 404
    assert other.json() == {"error": "not_found", "detail": "Not found."}
    assert post_connect(api_client, secret, user="user-a").status_code == 200


def test_use_records_last_used_time(api_client: APIClient, make_api_key) -> None:
    secret = make_api_key(scopes=("health:connect",))
    post_connect(api_client, secret)
    assert ApiKey.objects.get(key_hash=hash_key(secret)).last_used_at is not None


def test_create_api_key_command_prints_the_key_once_and_stores_only_its_hash() -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "create_api_key", "--name", "ops", "--scopes", "health:read,health:sync",
        "--users", "u1,u2", stdout=out, stderr=err,
    )  # fmt: skip
    secret = out.getvalue().strip()
    assert secret.startswith("hk_")
    assert secret not in err.getvalue()
    key = ApiKey.objects.get(name="ops")
    assert key.scopes == ["health:read", "health:sync"]
    assert key.allowed_user_ids == ["u1", "u2"]
    assert not key.all_users
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM health.api_keys")
        stored = " ".join(str(v) for row in cursor.fetchall() for v in row)
    assert secret not in stored
    assert secret[3:] not in stored


def test_create_api_key_command_rejects_unknown_scopes() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="unknown scope"):
        call_command(
            "create_api_key", "--name", "x", "--scopes", "health:everything", "--all-users"
        )


def test_a_key_naming_no_users_is_refused_all_users_is_an_explicit_choice() -> None:
    from access.services import api_key_create

    with pytest.raises(ValueError, match="all_users chosen explicitly"):
        api_key_create(name="x", scopes=["health:read"])
    with pytest.raises(ValueError, match="not both"):
        api_key_create(name="x", scopes=["health:read"], user_ids=["a"], all_users=True)
    every = api_key_create(name="x", scopes=["health:read"], all_users=True).api_key
    assert every.all_users
    assert every.may_access_user("anyone")
    listed = api_key_create(name="y", scopes=["health:read"], user_ids=["a"]).api_key
    assert not listed.all_users
    assert not listed.may_access_user("b")


def test_create_api_key_without_users_or_all_users_is_refused() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--all-users"):
        call_command("create_api_key", "--name", "x", "--scopes", "health:read")
    assert not ApiKey.objects.exists()
    call_command(
        "create_api_key", "--name", "x", "--scopes", "health:read", "--all-users",
        stdout=StringIO(), stderr=StringIO(),
    )  # fmt: skip
    assert ApiKey.objects.get().all_users


def test_keys_expire_after_the_default_unless_told_otherwise(settings) -> None:
    from access.services import api_key_create

    settings.API_KEY_DEFAULT_EXPIRY_DAYS = 90
    before = timezone.now()
    key = api_key_create(name="x", scopes=["health:read"], user_ids=["a"]).api_key
    assert key.expires_at is not None
    assert timedelta(days=90) <= key.expires_at - before < timedelta(days=90, minutes=1)
    call_command(
        "create_api_key", "--name", "seven", "--scopes", "health:read", "--users", "a",
        "--expires-days", "7", stdout=StringIO(), stderr=StringIO(),
    )  # fmt: skip
    seven = ApiKey.objects.get(name="seven")
    assert seven.expires_at is not None
    assert timedelta(days=7) <= seven.expires_at - before < timedelta(days=7, minutes=1)


def test_the_admin_form_offers_all_users_as_a_checkbox_and_needs_one_choice() -> None:
    from access.admin import ApiKeyCreationForm

    neither = ApiKeyCreationForm(data={"name": "x", "scopes": ["health:read"]})
    assert not neither.is_valid()
    both = ApiKeyCreationForm(
        data={"name": "x", "scopes": ["health:read"], "allowed_users": "a", "all_users": "on"}
    )
    assert not both.is_valid()
    every = ApiKeyCreationForm(data={"name": "x", "scopes": ["health:read"], "all_users": "on"})
    assert every.is_valid(), every.errors
    listed = ApiKeyCreationForm(
        data={"name": "x", "scopes": ["health:read"], "allowed_users": "a, b"}
    )
    assert listed.is_valid(), listed.errors
    assert listed.cleaned_data["allowed_users"] == ["a", "b"]


def test_the_lookup_by_hash_builds_the_same_key_as_the_orm() -> None:
    """access.selectors reads the key with a fixed statement: every field, arrays and
    times included, must come back as the ORM gives it."""
    issued = api_key_create(
        name="reader", scopes=["health:read", "health:sync"], user_ids=["user-a", "user-b"]
    )
    ApiKey.objects.filter(pk=issued.api_key.pk).update(
        last_used_at=timezone.now(), revoked_at=timezone.now() + timedelta(days=1)
    )
    expected = ApiKey.objects.get(pk=issued.api_key.pk)

    found = api_key_by_hash(hash_key(issued.secret))

    assert found is not None
    fields = [field.attname for field in ApiKey._meta.concrete_fields]
    assert {name: getattr(found, name) for name in fields} == {
        name: getattr(expected, name) for name in fields
    }
    assert found._state.adding is False  # saving it updates the row, as for an ORM instance
    assert api_key_by_hash(hash_key("hk_unknown")) is None
