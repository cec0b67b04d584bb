"""The hardened admin: 2FA with enrolment on first login (django-otp), lockout
(django-axes), the Content-Security-Policy (django-csp), session limits, the URL prefix."""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import clear_url_caches
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from core.tests.staff import verified_login
from core.tests.test_settings import PRODUCTION_ENV, run_django

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-staff-password-9f3e"
ADMIN = f"/{settings.ADMIN_URL_PREFIX}"
LOGIN = f"{ADMIN}login/"
ENROL = f"{ADMIN}otp/enrol/"


def code(device: TOTPDevice) -> str:
    generator = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    generator.time = time.time()
    return f"{generator.token():06d}"


@pytest.fixture
def staff() -> Any:
    return get_user_model().objects.create_user(
        "staffer", "staffer@example.com", PASSWORD, is_staff=True, is_superuser=True
    )


def log_in(
    client: Client, username: str = "staffer", password: str = PASSWORD, **extra: str
) -> Any:
    return client.post(LOGIN, {"username": username, "password": password, **extra})


# --- two-factor login ---------------------------------------------------------------------


def test_staff_without_a_device_is_sent_to_enrolment_and_not_into_the_admin(staff: Any) -> None:
    client = Client()
    response = log_in(client)
    assert response.status_code == 302  # the password alone logs in, unverified
    page = client.get(ADMIN, follow=True)
    assert page.redirect_chain[-1][0].startswith(ENROL)
    assert page.status_code == 200
    body = page.content.decode()
    assert "otpauth://totp/" in body
    assert 'src="data:image/svg+xml;base64,' in body  # the QR code
    assert client.get(f"{ADMIN}core/deadletter/").status_code == 302
    assert not TOTPDevice.objects.filter(user=staff, confirmed=True).exists()


def test_enrolment_confirms_the_device_with_a_first_code_and_opens_the_admin(staff: Any) -> None:
    client = Client()
    log_in(client)
    client.get(ENROL)
    device = TOTPDevice.objects.get(user=staff, confirmed=False)

    wrong = client.post(ENROL, {"otp_token": "000000" if code(device) != "000000" else "111111"})
    assert wrong.status_code == 200
    assert "not valid" in wrong.content.decode()
    assert client.get(ADMIN).status_code == 302

    device.refresh_from_db()
    device.throttling_failure_count = 0  # django-otp throttles after the wrong code
    device.throttling_failure_timestamp = None
    device.save()
    response = client.post(ENROL, {"otp_token": code(device)})
    assert response.status_code == 302
    assert response["Location"] == ADMIN
    device.refresh_from_db()
    assert device.confirmed
    assert client.get(ADMIN).status_code == 200


def test_an_enrolled_account_needs_its_current_code(staff: Any) -> None:
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)

    client = Client()
    no_code = log_in(client)
    assert no_code.status_code == 200
    assert client.get(ADMIN).status_code == 302

    wrong = log_in(client, otp_token="000000" if code(device) != "000000" else "111111")
    assert wrong.status_code == 200
    assert "Invalid token" in wrong.content.decode()
    assert client.get(ADMIN).status_code == 302


def test_an_enrolled_account_with_the_right_code_gets_in(staff: Any) -> None:
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    client = Client()
    response = log_in(client, otp_token=code(device), next=ADMIN)
    assert response.status_code == 302
    index = client.get(ADMIN)
    assert index.status_code == 200
    # Enrolled: the enrolment page sends it on rather than showing a new secret.
    assert client.get(ENROL)["Location"] == ADMIN
    assert TOTPDevice.objects.filter(user=staff).count() == 1


# --- lockout (django-axes) -----------------------------------------------------------------


def test_wrong_passwords_lock_the_account_with_the_lockout_page(staff: Any) -> None:
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    assert limit == 5  # the documented default
    for _ in range(limit - 1):
        assert log_in(client, password="wrong").status_code == 200
    locked = log_in(client, password="wrong")
    assert locked.status_code == 429
    body = locked.content.decode()
    assert "Login locked" in body
    assert "0:15:00" in body  # AXES_COOLOFF_MINUTES, 15 by default
    assert "Content-Security-Policy" in locked  # our HTML page, under the policy

    # The right password and code do not help while locked, from any client.
    again = log_in(Client(), otp_token=code(device))
    assert again.status_code == 429
    assert Client().get(ADMIN).status_code == 302


def test_the_lockout_lifts_after_the_cool_off(staff: Any) -> None:
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    with time_machine.travel(time.time(), tick=False) as clock:
        for _ in range(settings.AXES_FAILURE_LIMIT):
            log_in(Client(), password="wrong")
        assert log_in(Client(), otp_token=code(device)).status_code == 429
        clock.shift(settings.AXES_COOLOFF_TIME + timedelta(seconds=1))
        client = Client()
        assert log_in(client, otp_token=code(device)).status_code == 302
        assert client.get(ADMIN).status_code == 200


# --- Content-Security-Policy ---------------------------------------------------------------


def csp(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        part.split()[0]: part.split()[1:] for part in (p.strip() for p in header.split(";")) if part
    }


def test_admin_pages_carry_the_strict_policy(staff: Any) -> None:
    client = Client()
    login = client.get(LOGIN)
    assert login.status_code == 200
    policy = csp(login)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    # No inline script in the page: the policy would block it.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", login.content.decode())

    verified_login(client, staff)
    index = client.get(ADMIN)
    assert index.status_code == 200
    assert csp(index)["script-src"] == ["'self'"]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", index.content.decode())


@pytest.mark.parametrize("url", ["/v1/schema/swagger/", "/v1/schema/redoc/"])
def test_api_docs_render_under_the_policy(url: str) -> None:
    page = Client().get(url)
    assert page.status_code == 200
    policy = csp(page)
    assert policy["script-src"] == ["'self'"]  # no inline script is allowed, none is needed
    assert "'unsafe-inline'" in policy["style-src"]
    body = page.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body)
    scripts = re.findall(r'<script src="([^"]+)"', body)
    assert scripts
    for src in scripts:
        # Same origin: the bundles from /static (sidecar), Swagger's start script from us.
        assert src.startswith("/"), src
        if not src.startswith("/static/"):
            assert Client().get(src.replace("&amp;", "&")).status_code == 200


# --- sessions -------------------------------------------------------------------------------


def test_an_idle_session_expires(staff: Any) -> None:
    with time_machine.travel(time.time(), tick=False) as clock:
        client = Client()
        verified_login(client, staff)
        assert client.get(ADMIN).status_code == 200
        clock.shift(settings.STAFF_SESSION_IDLE_TIMEOUT_S - 60)
        assert client.get(ADMIN).status_code == 200  # activity pushes the expiry out
        clock.shift(settings.STAFF_SESSION_IDLE_TIMEOUT_S - 60)
        assert client.get(ADMIN).status_code == 200
        clock.shift(settings.STAFF_SESSION_IDLE_TIMEOUT_S + 1)
        response = client.get(ADMIN)
        assert response.status_code == 302
        assert response["Location"].startswith(LOGIN)


@override_settings(SESSION_COOKIE_AGE=24 * 3600)  # no idle expiry: the absolute cap alone
def test_a_busy_session_still_ends_after_the_absolute_limit(staff: Any) -> None:
    with time_machine.travel(time.time(), tick=False) as clock:
        client = Client()
        verified_login(client, staff)
        assert client.get(ADMIN).status_code == 200
        clock.shift(settings.STAFF_SESSION_MAX_AGE_S - 60)
        assert client.get(ADMIN).status_code == 200
        clock.shift(120)
        assert client.get(ADMIN)["Location"].startswith(LOGIN)


def test_defaults_are_eight_hours_and_thirty_idle_minutes() -> None:
    assert settings.STAFF_SESSION_MAX_AGE_S == 8 * 3600
    assert settings.SESSION_COOKIE_AGE == settings.STAFF_SESSION_IDLE_TIMEOUT_S == 30 * 60
    assert settings.SESSION_SAVE_EVERY_REQUEST


# --- the admin's URL prefix ---------------------------------------------------------------


@pytest.fixture
def reload_urls() -> Iterator[None]:
    yield
    clear_url_caches()
    importlib.reload(importlib.import_module(settings.ROOT_URLCONF))


def test_the_admin_lives_at_the_configured_prefix(staff: Any, reload_urls: None) -> None:
    assert settings.ADMIN_URL_PREFIX == "admin/"
    with override_settings(ADMIN_URL_PREFIX="staff-7c1e/"):
        clear_url_caches()
        importlib.reload(importlib.import_module(settings.ROOT_URLCONF))
        client = Client()
        assert client.get("/staff-7c1e/login/").status_code == 200
        assert client.get("/admin/login/").status_code == 404
        # The 2FA site's redirects follow the prefix too.
        log_in_at = client.post("/staff-7c1e/login/", {"username": "staffer", "password": PASSWORD})
        assert log_in_at.status_code == 302
        assert client.get("/staff-7c1e/")["Location"].startswith("/staff-7c1e/login/")
        assert client.get("/staff-7c1e/login/")["Location"] == "/staff-7c1e/otp/enrol/"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "ADMIN_URL_PREFIX must be set"),
        ("admin/", "ADMIN_URL_PREFIX is the development default"),
        ("../x", "ADMIN_URL_PREFIX must be URL path segments"),
    ],
)
def test_production_requires_a_prefix_of_its_own(value: str | None, message: str) -> None:
    env = {**PRODUCTION_ENV, "ADMIN_URL_PREFIX": value or ""}
    result = run_django(env, "check")
    assert result.returncode != 0
    assert message in result.stderr
