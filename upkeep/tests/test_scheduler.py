"""The scheduler in this process: ticks fire on time, a failed tick is retried at the next one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from audit.models import AuditEntry
from upkeep.scheduler import UpkeepScheduler, schedule_triggers

pytestmark = pytest.mark.django_db(transaction=True)


def audited(task: str) -> list[dict[str, Any]]:
    return [
        entry.details
        for entry in AuditEntry.objects.filter(action=AuditEntry.Action.UPKEEP_RUN).order_by("id")
        if entry.details["task"] == task
    ]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def start_scheduler() -> Iterator[Callable[[dict[str, str]], UpkeepScheduler]]:
    started: list[tuple[UpkeepScheduler, threading.Thread]] = []

    def start(schedule: dict[str, str]) -> UpkeepScheduler:
        scheduler = UpkeepScheduler(
            schedule_triggers(schedule), stopping=threading.Event(), lock_retry_s=0.2
        )
        thread = threading.Thread(target=scheduler.run, daemon=True)
        thread.start()
        started.append((scheduler, thread))
        return scheduler

    yield start
    for scheduler, thread in started:
        scheduler.stopping.set()
        thread.join(timeout=10)
        assert scheduler.shutdown(grace_s=10) == []


def test_a_task_fires_on_schedule_with_its_tick(start_scheduler) -> None:
    start_scheduler({"reconcile_jobs": "@every 1"})

    wait_until(lambda: len(audited("reconcile_jobs")) >= 2, "two scheduled runs")

    runs = audited("reconcile_jobs")[:2]
    assert [run["outcome"] for run in runs] == ["ok", "ok"]
    assert [run["trigger"] for run in runs] == ["schedule", "schedule"]
    ticks = [datetime.fromisoformat(run["tick"]) for run in runs]
    # The run knows its scheduled time (not when it happened to start): whole seconds, 1 apart.
    assert all(tick.microsecond == 0 for tick in ticks)
    assert (ticks[1] - ticks[0]).total_seconds() == 1
    assert audited("purge_raw") == []  # not in this schedule


def test_a_failing_task_is_logged_and_retried_at_its_next_tick(
    start_scheduler, oura, settings, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="upkeep")
    app_secret = settings.OURA_CLIENT_SECRET
    settings.OURA_CLIENT_SECRET = "not-the-app-secret"  # Oura refuses: the task raises
    scheduler = start_scheduler({"renew_subscriptions": "@every 1"})

    wait_until(lambda: len(audited("renew_subscriptions")) >= 1, "the failed run")
    settings.OURA_CLIENT_SECRET = app_secret
    wait_until(
        lambda: audited("renew_subscriptions")[-1]["outcome"] == "ok", "the retry to succeed"
    )

    runs = audited("renew_subscriptions")
    assert runs[0]["outcome"] == "error"
    assert runs[-1]["tick"] > runs[0]["tick"]
    assert scheduler.task_names == ["renew_subscriptions"]  # the failure removed nothing
    failures = [r for r in caplog.records if r.getMessage() == "upkeep_run_failed"]
    assert failures
    assert failures[0].error_type == "OuraRequestError"
