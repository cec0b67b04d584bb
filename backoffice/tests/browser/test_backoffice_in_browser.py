"""The backoffice as staff use it, in headless Chromium: two-factor login (and enrolment),
raw objects for privacy officers only, erasure with its confirmation and receipt.

Each test logs in through the login form with a code computed from the account's TOTP secret,
as an authenticator app would; nothing is faked past the browser (Postgres, NATS and S3 are
the test stack's). With BACKOFFICE_SCREENSHOTS set the pages are saved (`make screenshots`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import pyotp
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from audit.models import AuditEntry
from backoffice.tests.browser.conftest import (
    ADMIN,
    CHROMIUM,
    NO_CHROMIUM,
    PageProblems,
    Staff,
    log_in,
)
from core import raw_store
from ingestion.models import OuraConnection, RawEvent

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MakeStaff = Callable[..., Staff]
Shot = Callable[[Page, str], None]
RAW_DOCUMENT = b'{"event_type":"update","data_type":"daily_sleep","object_id":"sleep-1"}'


def archived_event(user_id: str, day: date = date(2026, 11, 30)) -> RawEvent:
    event_id = uuid.uuid4()
    key = raw_store.object_key(provider="oura", day=day, user_id=user_id, event_id=str(event_id))
    stored = raw_store.put(key, RAW_DOCUMENT)
    return RawEvent.objects.create(
        event_id=event_id, kind="webhook", dedupe_key=uuid.uuid4().hex, user_id=user_id,
        data_type="daily_sleep", event_type="update", object_key=stored.key,
        sha256=stored.sha256, archived_at=timezone.now(),
    )  # fmt: skip


def assert_looks_right(problems: PageProblems) -> None:
    """The admin's own CSS and JS loaded under the CSP: no refusal, no failed request."""
    assert any(url.endswith("/admin/css/base.css") for url in problems.static_loaded)
    assert problems.console == []
    assert problems.failed == []


def select_rows_and_run(page: Page, action: str, *labels: str) -> None:
    for label in labels:
        page.locator("#result_list tr", has_text=label).locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


# --- two-factor login -----------------------------------------------------------------------


def test_staff_log_in_with_password_and_authenticator_code(
    page: Page, make_staff: MakeStaff, problems: PageProblems
) -> None:
    staff = make_staff("support")
    page.goto(ADMIN)
    expect(page).to_have_url(re.compile(r"/login/\?next="))  # not in without logging in

    log_in(page, staff)

    expect(page).to_have_url(re.compile(rf"{ADMIN}$"))
    expect(page.locator("#site-name")).to_be_visible()
    expect(page.locator("#user-tools")).to_contain_text(staff.user.username)
    assert_looks_right(problems)


def test_a_wrong_code_keeps_staff_out(page: Page, make_staff: MakeStaff) -> None:
    staff = make_staff("support")
    right = staff.code()
    page.goto(f"{ADMIN}login/")
    page.fill("#id_username", staff.user.username)
    page.fill("#id_password", staff.password)
    page.fill("#id_otp_token", "000000" if right != "000000" else "111111")
    page.click("#login-form input[type=submit]")

    expect(page.locator(".errornote")).to_be_visible()
    page.goto(ADMIN)
    expect(page).to_have_url(re.compile(r"/login/\?next="))


def test_first_login_enrols_an_authenticator_from_the_secret_shown(
    page: Page, make_staff: MakeStaff, problems: PageProblems, shot: Shot
) -> None:
    staff = make_staff("privacy officer", enrolled=False)

    log_in(page, staff)  # password only: no device yet

    expect(page).to_have_url(re.compile(r"/otp/enrol/"))
    expect(page.locator("img[src^='data:image/svg+xml']")).to_be_visible()  # the QR code
    secret = page.locator("#otp-secret").inner_text()
    page.fill("#id_otp_token", pyotp.TOTP(secret).now())
    page.click("#enrol-form input[type=submit]")

    expect(page).to_have_url(re.compile(rf"{ADMIN}$"))
    expect(page.locator("#user-tools")).to_contain_text(staff.user.username)
    assert_looks_right(problems)


# --- raw objects ----------------------------------------------------------------------------


def test_a_privacy_officer_opens_a_raw_object_through_its_signed_url(
    page: Page, make_staff: MakeStaff, problems: PageProblems, shot: Shot
) -> None:
    events = [archived_event(f"person-{n}") for n in range(1, 4)]
    officer = make_staff("privacy officer")
    log_in(page, officer, next_path=f"{ADMIN}ingestion/rawevent/")

    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    shot(page, "raw-events")
    select_rows_and_run(page, "signed_url", str(events[0].event_id))

    expect(page.locator("h1")).to_have_text("Signed raw-object URLs")
    url = page.locator("code.shown-once").inner_text()
    assert_looks_right(problems)
    document = page.goto(url)  # the embedded S3 answers the signed URL itself
    assert document is not None
    assert document.status == 200
    assert document.body() == RAW_DOCUMENT
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.RAW_ACCESSED,
        actor=f"staff:{officer.user.username}",
        event_id=events[0].event_id,
    ).exists()


def test_support_is_refused_raw_objects(page: Page, make_staff: MakeStaff) -> None:
    archived_event("person-1")
    support = make_staff("support")
    log_in(page, support)
    expect(page).to_have_url(re.compile(rf"{ADMIN}$"))
    expect(page.locator("a[href$='/ingestion/rawevent/']")).to_have_count(0)  # not offered

    refused = page.goto(f"{ADMIN}ingestion/rawevent/")  # and not reachable by its address

    assert refused is not None
    assert refused.status == 403
    expect(page.locator("body")).to_contain_text("403 Forbidden")
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.STAFF_REFUSED, actor=f"staff:{support.user.username}"
    ).exists()


# --- erasure --------------------------------------------------------------------------------


def test_a_privacy_officer_erases_a_person_after_confirming_and_gets_the_receipt(
    page: Page, make_staff: MakeStaff, problems: PageProblems, shot: Shot
) -> None:
    OuraConnection.objects.create(
        user_id="ada-lovelace", provider_user_id="oura-ada", scopes=["daily"]
    )
    OuraConnection.objects.create(user_id="grace-hopper", provider_user_id="oura-gh", scopes=[])
    archived_event("ada-lovelace")
    archived_event("ada-lovelace", day=date(2026, 11, 29))
    officer = make_staff("privacy officer")
    log_in(page, officer, next_path=f"{ADMIN}ingestion/ouraconnection/")

    select_rows_and_run(page, "erase", "ada-lovelace")

    expect(page.locator("h1")).to_have_text("Erase these people?")
    expect(page.locator("#content h2")).to_contain_text("ada-lovelace")
    expect(page.locator("table.erasure-scan")).to_contain_text("raw objects (S3)")
    shot(page, "erase-confirmation")
    assert OuraConnection.objects.filter(user_id="ada-lovelace").exists()  # nothing yet

    page.click("input[type=submit][value^='Yes, erase']")

    expect(page.locator("h1")).to_have_text("Erased")
    expect(page.locator("#content h2")).to_contain_text("ada-lovelace")
    expect(page.locator(".erasure-verification")).to_have_text(
        "Verification scan afterwards: 0 item(s) found."
    )
    erased_s3 = page.locator("table.erasure-receipt tr", has_text="raw objects (S3)")
    expect(erased_s3.locator("td").nth(1)).to_have_text("2")
    shot(page, "erase-receipt")
    assert_looks_right(problems)
    assert not OuraConnection.objects.filter(user_id="ada-lovelace").exists()
    assert OuraConnection.objects.filter(user_id="grace-hopper").exists()
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.USER_ERASED, actor=f"staff:{officer.user.username}"
    ).exists()


def test_no_thanks_on_the_confirmation_erases_nothing(
    page: Page, make_staff: MakeStaff, live_server: Any
) -> None:
    OuraConnection.objects.create(user_id="ada-lovelace", provider_user_id="oura-ada", scopes=[])
    log_in(page, make_staff("privacy officer"), next_path=f"{ADMIN}ingestion/ouraconnection/")
    select_rows_and_run(page, "erase", "ada-lovelace")

    page.click("a.cancel-link")

    expect(page).to_have_url(re.compile(r"/ingestion/ouraconnection/$"))
    assert OuraConnection.objects.filter(user_id="ada-lovelace").exists()
