"""Reading settings.UPKEEP_SCHEDULE: what is accepted, and errors that name the variable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.conf import settings

from upkeep.checks import check_upkeep_schedule
from upkeep.scheduler import ScheduleError, schedule_trigger, schedule_triggers
from upkeep.tasks import TASKS


def test_settings_schedule_every_task_and_the_defaults_pass_the_check() -> None:
    assert set(settings.UPKEEP_SCHEDULE) == set(TASKS)
    assert check_upkeep_schedule() == []


@pytest.mark.parametrize("spec", ["61 * * * *", "* * * *", "every day", "@every 0.5"])
def test_a_bad_entry_is_refused_naming_its_variable_not_its_value(spec: str) -> None:
    with pytest.raises(ScheduleError, match="UPKEEP_PURGE_RAW_CRON") as caught:
        schedule_triggers({"purge_raw": spec})
    assert spec not in str(caught.value)


def test_a_numeric_day_of_week_is_refused_because_apscheduler_3_starts_at_monday() -> None:
    with pytest.raises(ScheduleError, match=r"mon\.\.sun"):
        schedule_trigger("0 3 * * 0", name="UPKEEP_RENEW_CRON")
    assert schedule_trigger("0 3 * * sun", name="UPKEEP_RENEW_CRON") is not None


def test_an_unknown_task_is_refused() -> None:
    with pytest.raises(ScheduleError, match="unknown tasks: vacuum"):
        schedule_triggers({"vacuum": "* * * * *"})


def test_off_and_missing_entries_are_not_scheduled() -> None:
    triggers = schedule_triggers({"purge_raw": "off", "reconcile_jobs": "*/5 * * * *"})
    assert set(triggers) == {"reconcile_jobs"}


def test_interval_ticks_are_the_same_in_every_process() -> None:
    # Two replicas started at different moments must agree on tick times (the tick claim
    # compares them): ticks count from a fixed origin, not from when the process started.
    now = datetime(2026, 12, 1, 12, 0, 3, 250000, tzinfo=UTC)
    first = schedule_trigger("@every 10", name="X")
    second = schedule_trigger("@every 10s", name="X")
    assert first is not None
    assert second is not None
    assert first.get_next_fire_time(None, now) == datetime(2026, 12, 1, 12, 0, 10, tzinfo=UTC)
    assert second.get_next_fire_time(None, now) == first.get_next_fire_time(None, now)


def test_the_system_check_reports_a_bad_schedule(settings) -> None:
    settings.UPKEEP_SCHEDULE = {**settings.UPKEEP_SCHEDULE, "reconcile_jobs": "*/5 * *"}
    errors = check_upkeep_schedule()
    assert [error.id for error in errors] == ["upkeep.E001"]
    assert "UPKEEP_RECONCILE_JOBS_CRON" in errors[0].msg
