"""Browser tests: Playwright drives the system's headless Chromium against pytest-django's
live server (the WSGI app in a thread, on the test database; static files from the finders,
as StaticLiveServerTestCase serves them).

Playwright's own browser download is not used: `chromium` (Debian package) is. Without it
every test here is skipped, with that reason. BACKOFFICE_SCREENSHOTS=<dir> saves each page
the tests name as <dir>/<name>.png (`make screenshots`).
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, sync_playwright

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
)
NO_CHROMIUM = "no Chromium: install it with `sudo apt-get install -y chromium` (Debian/Ubuntu)"
SCREENSHOTS = os.environ.get("BACKOFFICE_SCREENSHOTS", "")
ADMIN = f"/{settings.ADMIN_URL_PREFIX}"
PASSWORD = "a-long-staff-password-7c1d"
VIEWPORT = {"width": 1600, "height": 900}


@pytest.fixture(scope="module")
def browser(django_db_setup: None) -> Iterator[Browser]:
    """One Chromium for this module's tests. Playwright's sync API keeps an asyncio loop in
    this thread, which Django takes for an async context; the ORM calls the tests make here
    (set-up, checks) are plain synchronous ones, so Django is told so for these tests only."""
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            yield chromium
            chromium.close()
    finally:
        if before is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@dataclass
class PageProblems:
    """What a person would notice: failed loads (4xx/5xx, favicon aside) and console errors
    (CSP refusals among them); and which static files loaded."""

    failed: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    static_loaded: list[str] = field(default_factory=list)


@pytest.fixture
def problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(browser: Browser, live_server: Any, problems: PageProblems) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)  # type: ignore[arg-type]  # TypedDict
    page = context.new_page()
    page.set_default_timeout(10_000)

    def on_response(response: Response) -> None:
        if "/static/" in response.url and response.status == 200:
            problems.static_loaded.append(response.url)
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            problems.failed.append(f"{response.status} {response.url}")

    def on_console(message: ConsoleMessage) -> None:
        # A failed load is in `failed` (with its URL); CSP refusals and script errors here.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.console.append(message.text)

    page.on("response", on_response)
    page.on("console", on_console)
    page.on("requestfailed", lambda request: problems.failed.append(request.url))
    yield page
    context.close()


@pytest.fixture
def shot() -> Callable[[Page, str], None]:
    """shot(page, name): with BACKOFFICE_SCREENSHOTS set, saves the page as <name>.png."""

    def save(page: Page, name: str) -> None:
        if SCREENSHOTS:
            directory = Path(SCREENSHOTS)
            directory.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(directory / f"{name}.png"), full_page=True)

    return save


@dataclass
class Staff:
    user: User
    password: str
    device: TOTPDevice | None

    def code(self) -> str:
        """The current code of the account's authenticator, as an app computes it (RFC 6238)."""
        assert self.device is not None
        return totp_of(self.device).now()


def totp_of(device: TOTPDevice) -> pyotp.TOTP:
    return pyotp.TOTP(
        base64.b32encode(device.bin_key).decode(), digits=device.digits, interval=device.step
    )


@pytest.fixture
def make_staff(transactional_db: None) -> Callable[..., Staff]:
    """A staff account in one of setup_staff_groups' groups, enrolled unless asked not to."""
    call_command("setup_staff_groups", verbosity=0)

    def make(group: str, *, enrolled: bool = True, name: str = "") -> Staff:
        username = name or f"{group.replace(' ', '_')}_{uuid.uuid4().hex[:6]}"
        user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        device = (
            TOTPDevice.objects.create(user=user, name="phone", confirmed=True) if enrolled else None
        )
        return Staff(user=user, password=PASSWORD, device=device)

    return make


def log_in(page: Page, staff: Staff, *, next_path: str = "") -> None:
    """The login form as a person fills it: username, password, the app's current code."""
    page.goto(f"{ADMIN}login/?next={next_path or ADMIN}")
    page.fill("#id_username", staff.user.username)
    page.fill("#id_password", staff.password)
    if staff.device is not None:
        page.fill("#id_otp_token", staff.code())
    page.click("#login-form input[type=submit]")
