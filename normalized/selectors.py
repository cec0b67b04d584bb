"""Reads of normalized rows for REST v1. Writes belong to the normalizer (services.py).

Every list is keyset-paginated on a unique, indexed order, so a page costs the same at the
end of a year as at its start and rows that share a day or a start time are neither skipped
nor repeated:

- daily tables: (user_id, day), unique per table;
- activities: (user_id, start, id), index activity_start_idx;
- sleep periods: (bedtime_start, id) within the user's days (index sleep_period_day_idx).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import Case, F, IntegerField, Q, QuerySet, Value, When

from normalized.models import (
    Activity,
    DailyActivity,
    DailyReadiness,
    DailySleep,
    SleepPeriod,
)

# --- Daily --------------------------------------------------------------------------------


def daily_readiness_list(*, user_id: str, start: date, end: date) -> QuerySet[DailyReadiness]:
    return DailyReadiness.objects.filter(user_id=user_id, day__gte=start, day__lte=end).order_by(
        "day"
    )


def daily_sleep_list(*, user_id: str, start: date, end: date) -> QuerySet[DailySleep]:
    return DailySleep.objects.filter(user_id=user_id, day__gte=start, day__lte=end).order_by("day")


def daily_activity_list(*, user_id: str, start: date, end: date) -> QuerySet[DailyActivity]:
    return DailyActivity.objects.filter(user_id=user_id, day__gte=start, day__lte=end).order_by(
        "day"
    )


def main_sleep_period_list(*, user_id: str, start: date, end: date) -> QuerySet[SleepPeriod]:
    """One period per day: the long_sleep one, else the longest, else the first recorded.

    Oura's daily sleep score describes the long_sleep period; naps and rest periods would be
    a misleading summary of the night. DISTINCT ON keeps it one query for the whole page.
    """
    return (
        SleepPeriod.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
        .exclude(type="deleted")
        .annotate(
            is_long_sleep=Case(
                When(type="long_sleep", then=Value(1)),
                default=Value(0),
                output_field=IntegerField(),
            )
        )
        .order_by(
            "day",
            F("is_long_sleep").desc(),
            F("total_sleep_duration").desc(nulls_last=True),
            "id",
        )
        .distinct("day")
    )


@dataclass(frozen=True)
class DailyRows:
    """The rows of one day; any part may be missing."""

    day: date
    readiness: DailyReadiness | None
    sleep: DailySleep | None
    main_sleep_period: SleepPeriod | None
    activity: DailyActivity | None


@dataclass(frozen=True)
class DailyPage:
    days: list[DailyRows]
    next_day: date | None  # first day of the next page, None on the last page


def daily_page(*, user_id: str, start: date, end: date, limit: int) -> DailyPage:
    """The first `limit` days in [start, end] that have a row in any daily table.

    Each table has at most one row per day, so the first `limit + 1` rows of each table cover
    every day up to and including the (limit + 1)-th day of their union: three bounded index
    range scans find the page and tell whether another follows, with no UNION or COUNT. A
    fourth query fetches the main sleep periods of the page's days.
    """
    readiness = {
        r.day: r for r in daily_readiness_list(user_id=user_id, start=start, end=end)[: limit + 1]
    }
    sleep = {s.day: s for s in daily_sleep_list(user_id=user_id, start=start, end=end)[: limit + 1]}
    activity = {
        a.day: a for a in daily_activity_list(user_id=user_id, start=start, end=end)[: limit + 1]
    }
    days = sorted(readiness.keys() | sleep.keys() | activity.keys())
    next_day = days[limit] if len(days) > limit else None
    days = days[:limit]
    periods: dict[date, SleepPeriod] = {}
    sleep_days = [day for day in days if day in sleep]
    if sleep_days:
        periods = {
            p.day: p
            for p in main_sleep_period_list(
                user_id=user_id, start=sleep_days[0], end=sleep_days[-1]
            )
        }
    return DailyPage(
        days=[
            DailyRows(
                day=day,
                readiness=readiness.get(day),
                sleep=sleep.get(day),
                main_sleep_period=periods.get(day) if day in sleep else None,
                activity=activity.get(day),
            )
            for day in days
        ],
        next_day=next_day,
    )


# --- Workouts, sessions and sleep periods -------------------------------------------------


def activity_list(
    *,
    user_id: str,
    start: date,
    end: date,
    after: tuple[datetime, int] | None = None,
) -> QuerySet[Activity]:
    """Workouts and sessions whose Oura day is in [start, end], after the (start, id) key."""
    rows = Activity.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
    if after is not None:
        after_start, after_id = after
        rows = rows.filter(Q(start__gt=after_start) | Q(start=after_start, id__gt=after_id))
    return rows.order_by("start", "id")


def sleep_period_list(
    *,
    user_id: str,
    start: date,
    end: date,
    after: tuple[datetime, int] | None = None,
) -> QuerySet[SleepPeriod]:
    """Sleep periods whose Oura day is in [start, end], after the (bedtime_start, id) key."""
    rows = SleepPeriod.objects.filter(user_id=user_id, day__gte=start, day__lte=end).exclude(
        type="deleted"
    )
    if after is not None:
        after_start, after_id = after
        rows = rows.filter(
            Q(bedtime_start__gt=after_start) | Q(bedtime_start=after_start, id__gt=after_id)
        )
    return rows.order_by("bedtime_start", "id")
