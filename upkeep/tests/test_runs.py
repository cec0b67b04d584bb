"""One upkeep run: the tick claim, the audit row, the metrics, and a failure that is recorded."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from prometheus_client import REGISTRY

from audit.models import AuditEntry
from upkeep.services import upkeep_run, upkeep_tick_claim

pytestmark = pytest.mark.django_db(transaction=True)

TICK = datetime(2026, 12, 1, 3, 45, tzinfo=UTC)


def runs_counted(task: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("upkeep_runs_total", {"task": task, "outcome": outcome})
    return value or 0.0


def upkeep_audit() -> list[dict[str, Any]]:
    return [
        entry.details
        for entry in AuditEntry.objects.filter(
            action=AuditEntry.Action.UPKEEP_RUN, actor="scheduler"
        ).order_by("id")
    ]


def test_a_run_is_audited_with_ids_and_counts_and_measured() -> None:
    ok_before = runs_counted("reconcile_jobs", "ok")

    record = upkeep_run(task="reconcile_jobs", tick=TICK)

    assert record.outcome == "ok"
    [details] = upkeep_audit()
    assert details["task"] == "reconcile_jobs"
    assert details["outcome"] == "ok"
    assert details["tick"] == TICK.isoformat()
    assert details["trigger"] == "schedule"
    assert details["counts"] == {
        "jobs_resent": 0, "jobs_resumed": 0, "jobs_cancelled": 0, "jobs_failed": 0,
    }  # fmt: skip
    assert isinstance(details["duration_ms"], int)
    assert runs_counted("reconcile_jobs", "ok") == ok_before + 1
    assert REGISTRY.get_sample_value(
        "upkeep_last_success_timestamp", {"task": "reconcile_jobs"}
    ) == pytest.approx(datetime.now(UTC).timestamp(), abs=60)
    assert REGISTRY.get_sample_value(
        "upkeep_run_duration_seconds_count", {"task": "reconcile_jobs"}
    )


def test_a_tick_runs_once_however_many_schedulers_fire_it() -> None:
    skipped_before = runs_counted("purge_raw", "skipped")

    first = upkeep_run(task="purge_raw", tick=TICK)
    again = upkeep_run(task="purge_raw", tick=TICK)
    older = upkeep_run(task="purge_raw", tick=TICK - timedelta(hours=24))
    later = upkeep_run(task="purge_raw", tick=TICK + timedelta(hours=24))

    assert [first.outcome, again.outcome, older.outcome, later.outcome] == [
        "ok", "skipped", "skipped", "ok",
    ]  # fmt: skip
    assert [d["tick"] for d in upkeep_audit()] == [
        TICK.isoformat(), (TICK + timedelta(hours=24)).isoformat(),
    ]  # fmt: skip
    assert runs_counted("purge_raw", "skipped") == skipped_before + 2


def test_the_claim_is_per_task() -> None:
    assert upkeep_tick_claim(task="purge_raw", tick=TICK)
    assert upkeep_tick_claim(task="reconcile_jobs", tick=TICK)
    assert not upkeep_tick_claim(task="purge_raw", tick=TICK)


def test_a_failing_task_is_logged_by_error_type_and_audited(oura, settings, caplog) -> None:
    settings.OURA_CLIENT_SECRET = "not-the-app-secret"  # the simulator answers 401
    caplog.set_level(logging.INFO, logger="upkeep")
    errors_before = runs_counted("renew_subscriptions", "error")

    record = upkeep_run(task="renew_subscriptions", tick=TICK)

    assert record.outcome == "error"
    [details] = upkeep_audit()
    assert details["outcome"] == "error"
    assert details["counts"] == {}
    [failure] = [r for r in caplog.records if r.getMessage() == "upkeep_run_failed"]
    assert failure.levelno == logging.ERROR
    assert failure.error_type == "OuraRequestError"
    assert failure.task == "renew_subscriptions"
    assert "not-the-app-secret" not in caplog.text
    assert runs_counted("renew_subscriptions", "error") == errors_before + 1


def test_once_runs_a_task_now_without_claiming_a_tick(capsys) -> None:
    call_command("run_scheduler", "--once", "reconcile_jobs")
    call_command("run_scheduler", "--once", "reconcile_jobs")

    assert "reconcile_jobs: ok in" in capsys.readouterr().out
    assert [d["trigger"] for d in upkeep_audit()] == ["manual", "manual"]
    assert upkeep_run(task="reconcile_jobs", tick=TICK).outcome == "ok"


def test_once_fails_the_command_when_the_task_fails(oura, settings) -> None:
    settings.OURA_CLIENT_SECRET = "not-the-app-secret"
    with pytest.raises(CommandError, match="renew_subscriptions failed"):
        call_command("run_scheduler", "--once", "renew_subscriptions")
    assert [d["outcome"] for d in upkeep_audit()] == ["error"]
