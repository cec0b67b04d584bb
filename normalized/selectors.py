"""Reads of normalized rows for REST v1. Writes belong to the normalizer (services.py).

Every list is keyset-paginated on a unique, indexed order, so a page costs the same at the
end of a year as at its start and rows that share a day or a start time are neither skipped
nor repeated:

- daily tables: (user_id, day), unique per table;
- activities: (user_id, start, id), index activity_start_read_idx;
- sleep periods: (bedtime_start, id) within the user's days (index sleep_period_read_idx);
- sleep time and rest mode periods: (day, id), indexes sleep_time_day_idx and
  rest_mode_period_day_idx;
- tags: (user_id, start, id), index tag_start_idx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import get_args

from django.db import connection
from django.db.models import Q, QuerySet

from normalized import dtos, models
from normalized.models import Activity, HeartRateSample, SleepPeriod

# --- Daily --------------------------------------------------------------------------------
#
# The daily page (up to 366 days x ~50 values) is served from stored entries, one per person
# and day (normalized/daily_entries.py), which Postgres writes as JSON with the statements
# below when the tables change. Building it in Python from rows cost ~10 ms a request on this
# project's bench (parsing ~730 timestamps, ~1,500 dicts, serialising them); writing it in
# Postgres per request, ~20 ms for a year; reading the stored entries costs ~2-3 ms.
#
# Every key and column comes from the DTOs (normalized/dtos.py), so the JSON cannot drift from
# the schemas; tests check that it parses to what the pydantic models write. Differences in
# form only: an integral float may be written `1` rather than `1.0` (the same JSON number).
# Every column read is in the covering indexes of migrations 0003 and 0006 or in the unique
# constraints of migration 0004 (index-only scans).

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ident(name: str) -> str:
    # Names come from our own models, never from a request; the check keeps it that way.
    if not _NAME.match(name):
        raise ValueError(f"not a plain SQL name: {name!r}")
    return f'"{name}"'


def _is_float(model: type[dtos.ApiModel], field: str) -> bool:
    annotation = model.model_fields[field].annotation
    return annotation is float or float in get_args(annotation)


def _is_datetime(model: type[dtos.ApiModel], field: str) -> bool:
    annotation = model.model_fields[field].annotation
    return annotation is datetime or datetime in get_args(annotation)


def _value(model: type[dtos.ApiModel], field: str, column: str, table: str) -> str:
    expression = f"{table}.{_ident(column)}"
    if _is_float(model, field):
        # NaN and infinities are not JSON (Postgres would quote them); pydantic writes null.
        return (
            f"CASE WHEN {expression} IN ('NaN', 'Infinity', '-Infinity') THEN NULL "
            f"ELSE {expression} END"
        )
    if _is_datetime(model, field):
        # Pydantic's form: UTC with `Z`, microseconds only when there are any.
        return (
            f"to_char({expression} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
            f"CASE WHEN date_trunc('second', {expression}) = {expression} THEN '' "
            f"ELSE to_char({expression} AT TIME ZONE 'UTC', '.US') END || 'Z'"
        )
    if dtos.blank_is_null(model, field):
        return f"NULLIF({expression}, '')"
    return expression


def _lateral(alias: str, pairs: list[tuple[str, str]]) -> str:
    """`LATERAL (SELECT <expression> AS "<key>", ...) alias`, of which `row_to_json(alias)`
    writes a compact JSON object of the pairs, in order (row_to_json writes no spaces, unlike
    json_build_object). A pair's expression may name an earlier lateral: a nested object.

    Laterals rather than a scalar `(SELECT row_to_json(o) FROM (SELECT ...) o)` per value:
    Postgres flattens them into the row, where each scalar subquery was a subplan started
    for every row and object (~5,000 per page), which was most of a warm page's time."""
    columns = ", ".join(f"{expression} AS {_ident(key)}" for key, expression in pairs)
    return f"LATERAL (SELECT {columns}) {alias}"


def _summary(
    model: type[dtos.ApiModel], table: str, *, without: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    skip = ("contributors", *without)
    return [
        (key, _value(model, field, column, table))
        for field, key, column in dtos.fields_of(model, without=skip)
    ]


def _contributors(model: type[dtos.ApiModel], table: str) -> list[tuple[str, str]]:
    # The stored JSON uses the Oura contract's snake_case keys; the stored values are integers
    # (the contracts are strict), so the cast holds. A missing key is null.
    return [
        (key, f"({table}.contributors ->> '{_ident(field)[1:-1]}')::bigint")
        for field, key, _ in dtos.fields_of(model)
    ]


def _with_contributors(
    model: type[dtos.ApiModel], contributors: list[tuple[str, str]]
) -> list[str]:
    """A daily part whose object nests its contributors: lateral `c`, then the object `o`."""
    return [
        _lateral("c", contributors),
        _lateral("o", [*_summary(model, "t"), ("contributors", "c")]),
    ]


def _more_daily_parts() -> list[tuple[str, str, str, list[str]]]:
    """The daily types of issue #18 as (CTE name, entry key, table, the part's laterals; the
    last one is the part's object).

    Each table has one row per person and day, so each joins the page as readiness does. The
    tables' unique (user_id, day) constraints INCLUDE these columns (migration 0004).
    """
    resilience = _with_contributors(
        dtos.OuraDailyResilience, _summary(dtos.OuraResilienceContributors, "t")
    )
    parts: list[tuple[str, str, type[models.NormalizedRow], list[str]]] = [
        ("st", "stress", models.DailyStress, [_lateral("o", _summary(dtos.OuraDailyStress, "t"))]),
        ("o2", "spo2", models.DailySpO2, [_lateral("o", _summary(dtos.OuraDailySpO2, "t"))]),
        ("rs", "resilience", models.DailyResilience, resilience),
        (
            "cv",
            "cardiovascular_age",
            models.DailyCardiovascularAge,
            [_lateral("o", _summary(dtos.OuraDailyCardiovascularAge, "t"))],
        ),
        ("vo", "vo2_max", models.VO2Max, [_lateral("o", _summary(dtos.OuraVO2Max, "t"))]),
    ]
    return [
        (
            cte,
            dtos.OuraDailyEntry.model_fields[field].alias or field,
            connection.ops.quote_name(model._meta.db_table),
            laterals,
        )
        for cte, field, model, laterals in parts
    ]


@dataclass(frozen=True)
class _DailyShape:
    """The SQL pieces that write daily entries, whichever rows they are written for."""

    parts: list[tuple[str, str, str, list[str]]]  # (CTE, table, selected columns, laterals)
    period: str  # the main sleep period's lateral
    objects: str  # the laterals that write one entry, `e`, from the joined CTEs


def _daily_shape() -> _DailyShape:
    more = _more_daily_parts()
    # Each part's object is row_to_json of its last lateral, `o`; contributors are `c`.
    readiness = _with_contributors(
        dtos.OuraDailyReadiness, _contributors(dtos.OuraReadinessContributors, "t")
    )
    activity = _with_contributors(
        dtos.OuraDailyActivity, _contributors(dtos.OuraActivityContributors, "t")
    )
    sleep_scalars = dtos.fields_of(dtos.OuraDailySleep, without=("contributors", "main_period"))
    sleep_columns = ", ".join(
        ["t.contributors", *(f"t.{_ident(column)}" for _, _, column in sleep_scalars)]
    )
    sleep = ", ".join(
        [
            _lateral("sc", _contributors(dtos.OuraSleepContributors, "s")),
            _lateral(
                "so",
                [
                    *_summary(dtos.OuraDailySleep, "s", without=("main_period",)),
                    ("contributors", "sc"),
                    ("mainPeriod", "p.j"),
                ],
            ),
        ]
    )
    entry = _lateral(
        "e",
        [
            ("day", "d.day"),
            ("readiness", "r.j"),
            ("sleep", "CASE WHEN s.day IS NULL THEN NULL ELSE row_to_json(so) END"),
            ("activity", "a.j"),
            *((key, f"{cte}.j") for cte, key, _, _ in more),
        ],
    )
    parts = [
        ("r", "health.oura_daily_readiness", "row_to_json(o) AS j", readiness),
        ("s", "health.oura_daily_sleep", sleep_columns, []),
        ("a", "health.oura_daily_activity", "row_to_json(o) AS j", activity),
        *((cte, table, "row_to_json(o) AS j", laterals) for cte, _, table, laterals in more),
    ]
    return _DailyShape(
        parts=parts,
        period=_lateral("o", _summary(dtos.OuraMainSleepPeriod, "t")),
        objects=f"{sleep},\n                {entry}",
    )


# The main sleep period of a day: the long_sleep one, else the longest, else the first.
_MAIN_PERIOD_ORDER = "t.type = 'long_sleep' DESC, t.total_sleep_duration DESC NULLS LAST, t.id"


def _daily_page_sql() -> str:
    """The page from the daily tables themselves: one person, a range of days, `limit` days.

    Serves a page that holds an entry too long for the read model (see daily_entries.py), and
    is what the read model is checked against."""
    shape = _daily_shape()
    window = "t.user_id = %(user_id)s AND t.day BETWEEN %(start)s AND %(end)s"
    ctes = ",".join(
        # Names and expressions from our models and DTOs, no request data.
        f"\n        {cte} AS (\n            SELECT t.day, {columns} FROM {table} t"  # noqa: S608 - table and columns from our models
        + "".join(f", {lateral}" for lateral in laterals)
        + f"\n            WHERE {window} ORDER BY t.day LIMIT %(fetch)s\n        )"
        for cte, table, columns, laterals in shape.parts
    )
    days = " UNION ".join(f"SELECT day FROM {cte}" for cte, *_ in shape.parts)  # noqa: S608 - CTE names of ours
    joins = "".join(
        f"\n                LEFT JOIN {cte} ON {cte}.day = d.day" for cte, *_ in shape.parts
    )
    # Interpolated parts are SQL built above from the DTOs' names; values are parameters.
    return f"""
        WITH{ctes}, days AS (
            {days}
            ORDER BY day LIMIT %(fetch)s
        ), d AS (
            SELECT day FROM days ORDER BY day LIMIT %(limit)s
        ), p AS (
            SELECT DISTINCT ON (t.day) t.day, row_to_json(o) AS j
            FROM health.oura_sleep_periods t, {shape.period}
            WHERE t.user_id = %(user_id)s
                AND t.day BETWEEN %(start)s AND (SELECT max(day) FROM d)
                AND t.type <> 'deleted'
            ORDER BY t.day, {_MAIN_PERIOD_ORDER}
        )
        SELECT
            (
                SELECT string_agg(row_to_json(e)::text, ',' ORDER BY d.day)
                FROM d{joins}
                LEFT JOIN p ON p.day = d.day,
                {shape.objects}
            ),
            (SELECT day FROM days ORDER BY day OFFSET %(limit)s LIMIT 1)
    """  # noqa: S608 - no request data in the text, see above


def daily_entries_sql(keys: str) -> str:
    """The entries of the (user_id, day) pairs of relation `keys` that have a row in any
    daily table, as rows (user_id, day, entry): what the read model stores (daily_entries.py).

    The same pieces as the page, so an entry is byte for byte what the page writes."""
    shape = _daily_shape()
    ctes = ",".join(
        f"\n        {cte} AS (\n            SELECT t.user_id, t.day, {columns} "  # noqa: S608 - names from our models
        f"FROM {keys} k JOIN {table} t ON t.user_id = k.user_id AND t.day = k.day"
        + "".join(f", {lateral}" for lateral in laterals)
        + "\n        )"
        for cte, table, columns, laterals in shape.parts
    )
    days = " UNION ".join(
        f"SELECT user_id, day FROM {cte}"  # noqa: S608 - CTE names of ours
        for cte, *_ in shape.parts
    )
    joins = "".join(
        f"\n            LEFT JOIN {cte} ON {cte}.user_id = d.user_id AND {cte}.day = d.day"
        for cte, *_ in shape.parts
    )
    return f"""
        WITH{ctes}, d AS (
            {days}
        ), p AS (
            SELECT DISTINCT ON (t.user_id, t.day) t.user_id, t.day, row_to_json(o) AS j
            FROM {keys} k JOIN health.oura_sleep_periods t
                ON t.user_id = k.user_id AND t.day = k.day, {shape.period}
            WHERE t.type <> 'deleted'
            ORDER BY t.user_id, t.day, {_MAIN_PERIOD_ORDER}
        )
        SELECT d.user_id, d.day, row_to_json(e)::text AS entry
        FROM d{joins}
            LEFT JOIN p ON p.user_id = d.user_id AND p.day = d.day,
            {shape.objects}
    """  # noqa: S608 - no request data in the text, see above


DAILY_PAGE_SQL = _daily_page_sql()
# Every table an entry is written from: the read model's triggers sit on these.
DAILY_ENTRY_TABLES = (
    *(table for _, table, _, _ in _daily_shape().parts),
    "health.oura_sleep_periods",
)

# The page from the read model (normalized/daily_entries.py): the first `limit + 1` entries
# of the range in one index-only range scan; the first `limit` are the page, the next one's
# day is where the next page starts. Rows, joined in Python: string_agg in Postgres cost more
# than the join (it copies the ~0.5 MB of a year into its buffer, growing it as it goes).
DAILY_ENTRIES_PAGE_SQL = """
    SELECT day, entry FROM health.oura_daily_entries
    WHERE user_id = %(user_id)s AND day BETWEEN %(start)s AND %(end)s
    ORDER BY day LIMIT %(fetch)s
"""


@dataclass(frozen=True)
class DailyPageJson:
    entries: str  # the page's `OuraDailyEntry` objects as JSON, comma-separated, in day order
    next_day: date | None  # first day of the next page, None on the last page


def daily_page_json(*, user_id: str, start: date, end: date, limit: int) -> DailyPageJson:
    """The first `limit` days in [start, end] that have a row in any daily table, as JSON.

    Read from the stored entries (normalized/daily_entries.py). A page holding an entry too
    long to store is written from the tables instead (DAILY_PAGE_SQL), the same bytes. There,
    each table has at most one row per day, so the first `limit + 1` rows of each table cover
    every day up to and including the (limit + 1)-th day of their union: one bounded index
    range scan per daily table finds the page and tells whether another follows, with no
    COUNT. The main sleep period of each day is the long_sleep one, else the longest, else the
    first recorded: Oura's daily sleep score describes the long_sleep period, and naps would be
    a misleading summary of the night.
    """
    params: dict[str, str | date | int] = {
        "user_id": user_id,
        "start": start,
        "end": end,
        "limit": limit,
        "fetch": limit + 1,
    }
    with connection.cursor() as cursor:
        cursor.execute(DAILY_ENTRIES_PAGE_SQL, params)
        rows: list[tuple[date, str | None]] = cursor.fetchall()
        page = [entry for _, entry in rows[:limit] if entry is not None]
        if len(page) < min(len(rows), limit):  # an entry too long to store
            cursor.execute(DAILY_PAGE_SQL, params)
            entries, next_day = cursor.fetchone()
            return DailyPageJson(entries=entries or "", next_day=next_day)
    return DailyPageJson(
        entries=",".join(page), next_day=rows[limit][0] if len(rows) > limit else None
    )


# --- Workouts, sessions and sleep periods -------------------------------------------------
#
# The lists select the DTOs' columns only (and the id of the keyset), not whole rows: their
# indexes INCLUDE exactly these (migration 0006), so a page is an index-only scan of a few
# adjacent leaf pages instead of a heap page per row, which matters when nothing is cached.

_ACTIVITY_COLUMNS = [column for _, _, column in dtos.fields_of(dtos.OuraActivity)]
_SLEEP_PERIOD_COLUMNS = [column for _, _, column in dtos.fields_of(dtos.OuraSleepPeriod)]


def activity_list(
    *,
    user_id: str,
    start: date,
    end: date,
    after: tuple[datetime, int] | None = None,
) -> QuerySet[Activity]:
    """Workouts and sessions whose Oura day is in [start, end], after the (start, id) key."""
    rows = Activity.objects.only(*_ACTIVITY_COLUMNS).filter(
        user_id=user_id, day__gte=start, day__lte=end
    )
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
    rows = (
        SleepPeriod.objects.only(*_SLEEP_PERIOD_COLUMNS)
        .filter(user_id=user_id, day__gte=start, day__lte=end)
        .exclude(type="deleted")
    )
    if after is not None:
        after_start, after_id = after
        rows = rows.filter(
            Q(bedtime_start__gt=after_start) | Q(bedtime_start=after_start, id__gt=after_id)
        )
    return rows.order_by("bedtime_start", "id")


# --- Sleep time, tags and rest mode -------------------------------------------------------


def sleep_time_list(
    *,
    user_id: str,
    start: date,
    end: date,
    after: tuple[date, int] | None = None,
) -> QuerySet[models.SleepTime]:
    """Sleep time recommendations whose day is in [start, end], after the (day, id) key."""
    rows = models.SleepTime.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
    if after is not None:
        after_day, after_id = after
        rows = rows.filter(Q(day__gt=after_day) | Q(day=after_day, id__gt=after_id))
    return rows.order_by("day", "id")


def tag_list(
    *,
    user_id: str,
    start: date,
    end: date,
    after: tuple[datetime, int] | None = None,
) -> QuerySet[models.Tag]:
    """Enhanced and plain tags whose start day is in [start, end], after the (start, id) key."""
    rows = models.Tag.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
    if after is not None:
        after_start, after_id = after
        rows = rows.filter(Q(start__gt=after_start) | Q(start=after_start, id__gt=after_id))
    return rows.order_by("start", "id")


def rest_mode_period_list(
    *,
    user_id: str,
    start: date,
    end: date,
    after: tuple[date, int] | None = None,
) -> QuerySet[models.RestModePeriod]:
    """Rest mode periods that overlap [start, end], after the (start day, id) key.

    Overlap rather than "starts in the range": rest mode spans days or weeks, and a client
    asking about a range wants the period that was on during it, also one that began before
    it or is still on (no end day). A person has few periods, so the scan of those that
    started by `end` stays small.
    """
    rows = models.RestModePeriod.objects.filter(user_id=user_id, day__lte=end).filter(
        Q(end_day__isnull=True) | Q(end_day__gte=start)
    )
    if after is not None:
        after_day, after_id = after
        rows = rows.filter(Q(day__gt=after_day) | Q(day=after_day, id__gt=after_id))
    return rows.order_by("day", "id")


# --- Heart rate ---------------------------------------------------------------------------


def heartrate_list(
    *, user_id: str, start: datetime, end: datetime, after: datetime | None = None
) -> QuerySet[HeartRateSample]:
    """A person's samples with start <= timestamp < end, after the `after` timestamp.

    (user_id, timestamp) is the primary key, so the timestamp alone is the keyset, and the
    range on the partition key lets Postgres scan only the months it overlaps.
    """
    rows = HeartRateSample.objects.filter(user_id=user_id, timestamp__gte=start, timestamp__lt=end)
    if after is not None:
        rows = rows.filter(timestamp__gt=after)
    return rows.order_by("timestamp")
