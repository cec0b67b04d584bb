"""The per-person page in headless Chromium: support finds a person by user id, starts a
backfill with the page's button and watches the job's progress change as it runs.

The job runs here, in the test, as the worker would run it (jobs.backfill.backfill_run against
the Oura simulator); the page shows what the database says, after a reload as a person does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from backoffice.tests.browser.conftest import (
    ADMIN,
    CHROMIUM,
    NO_CHROMIUM,
    PageProblems,
    Staff,
    log_in,
)
from jobs.backfill import backfill_run
from jobs.models import IngestionJob
from jobs.tests.conftest import HISTORY_END, broker, connect_user, oura_sim_config
from oura_simulator import OuraSimulator

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

__all__ = ["broker", "oura_sim_config"]  # fixtures: the jobs tests' broker and simulator history

MakeStaff = Callable[..., Staff]
Shot = Callable[[Page, str], None]


def test_support_finds_a_person_starts_a_backfill_and_watches_its_progress(
    page: Page,
    make_staff: MakeStaff,
    problems: PageProblems,
    shot: Shot,
    oura: OuraSimulator,
    broker: object,
) -> None:
    connect_user(oura, user_id="ada-lovelace", history_days=60)
    log_in(page, make_staff("support"), next_path=f"{ADMIN}people/")

    page.fill("#person-q", "ada-lovelace")
    page.click("form.person-search input[type=submit]")
    expect(page.locator("table.person-results")).to_contain_text("ada-lovelace")
    page.click("table.person-results a:text-is('ada-lovelace')")
    expect(page).to_have_url(re.compile(r"/people/ada-lovelace/$"))
    expect(page.locator("#person-jobs")).to_contain_text("No jobs.")

    backfill = page.locator("#action-backfill")
    backfill.locator("input[name=start]").fill((HISTORY_END - timedelta(days=13)).isoformat())
    backfill.locator("input[name=end]").fill(HISTORY_END.isoformat())
    backfill.locator("input[type=submit]").click()

    expect(page.locator(".messagelist")).to_contain_text("Started job")
    job = IngestionJob.objects.get(user_id="ada-lovelace")
    row = page.locator("#person-jobs tr", has_text=str(job.job_id))
    expect(row.locator(".job-progress")).to_have_text("0%")
    expect(row.locator(".job-status")).to_have_text(job.status)

    assert backfill_run(job_id=job.job_id) == "succeeded"  # the worker's run
    page.reload()

    expect(row.locator(".job-progress")).to_have_text("100%")
    expect(row.locator(".job-status")).to_have_text("succeeded")
    expect(row.locator("progress")).to_have_attribute("value", "100")
    shot(page, "person-page")
    assert problems.console == []
    assert problems.failed == []
    assert any(url.endswith("/backoffice/person.css") for url in problems.static_loaded)
