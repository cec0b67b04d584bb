"""Start-up check of settings.UPKEEP_SCHEDULE: a bad entry names its environment variable."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register()
def check_upkeep_schedule(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    # Imported here so that the web process, which never schedules, does not load APScheduler.
    from upkeep.scheduler import ScheduleError, schedule_triggers

    try:
        schedule_triggers(settings.UPKEEP_SCHEDULE)
    except ScheduleError as exc:
        return [checks.Error(str(exc), id="upkeep.E001")]
    return []
