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
from typing import Any, NamedTuple

from django.db import connections
from django.db.models import (
    BigIntegerField,
    Case,
    F,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from normalized import dtos
from normalized.models import (
    Activity,
    DailyActivity,
    DailyReadiness,
    DailySleep,
    SleepPeriod,
)

# --- Daily --------------------------------------------------------------------------------
#
# The daily selectors return tuples, not model instances: a year is ~1,460 rows, and building
# models for them (every column, including timestamps the API never sends) cost ~80 ms a
# request. Each tuple is `day`, the columns its DTO needs (normalized/dtos.py derives them from
# the DTO), then one value per contributor. Postgres takes those out of the JSON column
# (`(contributors ->> 'x')::bigint`): ~1,100 json.loads a page were the largest Python cost
# left. The stored values are integers (the Oura contracts are strict), so the cast holds.
# Every column read here is in the covering indexes of migration 0003 (index-only scans).

Row = tuple[Any, ...]


def _contributor_values(names: tuple[str, ...]) -> list[Cast]:
    return [Cast(KT(f"contributors__{name}"), BigIntegerField()) for name in names]


def daily_readiness_list(*, user_id: str, start: date, end: date) -> QuerySet[DailyReadiness, Row]:
    return (
        DailyReadiness.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
        .order_by("day")
        .values_list(
            "day", *dtos.DAILY_READINESS_COLUMNS, *_contributor_values(dtos.READINESS_CONTRIBUTORS)
        )
    )


def daily_sleep_list(*, user_id: str, start: date, end: date) -> QuerySet[DailySleep, Row]:
    return (
        DailySleep.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
        .order_by("day")
        .values_list(
            "day", *dtos.DAILY_SLEEP_COLUMNS, *_contributor_values(dtos.SLEEP_CONTRIBUTORS)
        )
    )


def daily_activity_list(*, user_id: str, start: date, end: date) -> QuerySet[DailyActivity, Row]:
    return (
        DailyActivity.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
        .order_by("day")
        .values_list(
            "day", *dtos.DAILY_ACTIVITY_COLUMNS, *_contributor_values(dtos.ACTIVITY_CONTRIBUTORS)
        )
    )


def main_sleep_period_list(*, user_id: str, start: date, end: date) -> QuerySet[SleepPeriod, Row]:
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
        .values_list("day", *dtos.MAIN_SLEEP_PERIOD_COLUMNS)
    )


def fetch_rows(queryset: QuerySet[Any, Row]) -> list[Row]:
    """The rows of a daily selector, fetched straight from its compiled SQL.

    Django's iterator would call a Python converter on every contributor value (`int()` on
    ~8,000 values a year, for a cast psycopg has already done) and fetch in chunks of 100.
    psycopg types every column the daily selectors read (date, int, float, timestamptz through
    the connection's time-zone-aware loader), so the rows are the same as the queryset's.
    """
    sql, params = queryset.query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(sql, params)
        rows: list[Row] = cursor.fetchall()
    return rows


class DailyRows(NamedTuple):
    """The rows of one day, as the selectors above return them; any part may be missing."""

    day: date
    readiness: Row | None
    sleep: Row | None
    main_sleep_period: Row | None
    activity: Row | None


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
    readiness, sleep, activity = (
        {
            row[0]: row
            for row in fetch_rows(selector(user_id=user_id, start=start, end=end)[: limit + 1])
        }
        for selector in (daily_readiness_list, daily_sleep_list, daily_activity_list)
    )
    days = sorted(readiness.keys() | sleep.keys() | activity.keys())
    next_day = days[limit] if len(days) > limit else None
    days = days[:limit]
    periods: dict[date, Row] = {}
    sleep_days = [day for day in days if day in sleep]
    if sleep_days:
        periods = {
            row[0]: row
            for row in fetch_rows(
                main_sleep_period_list(user_id=user_id, start=sleep_days[0], end=sleep_days[-1])
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
