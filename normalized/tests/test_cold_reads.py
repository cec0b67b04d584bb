"""Reads that stay cheap from a cold cache (issue #19): index-only scans that really are.

A person's rows lie one heap page per day (the fleet writes day by day), so any read that
visits the heap pays a page per row when nothing is cached. After a VACUUM, every table the
daily page and the activity and sleep lists read must be scanned from its covering index alone,
with no heap fetch (migrations 0003, 0004, 0006), and the tables must carry the autovacuum
settings that keep the visibility map current on a live system (migration 0006).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import QuerySet

from normalized import selectors
from normalized.tests.factories import (
    ActivityFactory,
    DailyActivityFactory,
    DailyCardiovascularAgeFactory,
    DailyReadinessFactory,
    DailyResilienceFactory,
    DailySleepFactory,
    DailySpO2Factory,
    DailyStressFactory,
    SleepPeriodFactory,
    VO2MaxFactory,
)

# VACUUM cannot run inside a transaction block.
pytestmark = pytest.mark.django_db(transaction=True)

START = date(2024, 1, 1)
END = date(2024, 12, 31)

DAILY_PAGE_INDEXES = {
    "oura_daily_readiness": "readiness_user_day_read_idx",
    "oura_daily_sleep": "daily_sleep_user_day_read_idx",
    "oura_daily_activity": "daily_act_user_day_read_idx",
    "oura_daily_stress": "daily_stress_user_day_uniq",
    "oura_daily_spo2": "daily_spo2_user_day_uniq",
    "oura_daily_resilience": "daily_resilience_user_day_uniq",
    "oura_daily_cardiovascular_age": "daily_cv_age_user_day_uniq",
    "oura_vo2_max": "vo2_max_user_day_uniq",
    "oura_sleep_periods": "sleep_period_read_idx",
}


@pytest.fixture
def loaded() -> None:
    """40 days of every type for two people, vacuumed as autovacuum would leave them."""
    for user in ("user-a", "user-b"):
        for n in range(40):
            day = START + timedelta(days=n)
            for factory in (
                DailyReadinessFactory,
                DailySleepFactory,
                DailyActivityFactory,
                DailyStressFactory,
                DailySpO2Factory,
                DailyResilienceFactory,
                DailyCardiovascularAgeFactory,
                VO2MaxFactory,
                SleepPeriodFactory,
            ):
                factory(user_id=user, day=day)
            ActivityFactory(user_id=user, day=day, metrics={"mood": "good"})
    with connection.cursor() as cursor:
        for table in [*DAILY_PAGE_INDEXES, "oura_activities", "oura_daily_entries"]:
            # Packed, as the weekly repack leaves them: rows earlier tests wrote and deleted
            # leave empty pages behind, which can tip the planner of these tiny tables to a
            # smaller index than the covering one.
            cursor.execute(f"REINDEX TABLE health.{table}")
            cursor.execute(f"VACUUM (ANALYZE) health.{table}")


def _scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in plan:
        yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


def _explain(sql: str, params: Any) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        # The tables are tiny, so the planner would read them whole or by bitmap; what is
        # checked is that the index alone can answer, without visiting the heap.
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_bitmapscan = off")
        try:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            (document,) = cursor.fetchone()
        finally:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_bitmapscan")
    return list(_scans(document[0]["Plan"]))


def _assert_index_only(scans: list[dict[str, Any]], table: str, index: str) -> None:
    found = [scan for scan in scans if scan["Relation Name"] == table]
    assert found, f"{table} is not read"
    for scan in found:
        assert scan["Node Type"] == "Index Only Scan", (table, scan["Node Type"])
        assert scan["Index Name"] == index, (table, scan["Index Name"])
        assert scan["Heap Fetches"] == 0, (table, scan["Heap Fetches"])
        assert scan["Actual Rows"] > 0, table


@pytest.mark.usefixtures("loaded")
def test_the_daily_page_is_read_from_the_entries_index_alone() -> None:
    params = {"user_id": "user-a", "start": START, "end": END, "limit": 366, "fetch": 367}

    scans = _explain(selectors.DAILY_ENTRIES_PAGE_SQL, params)

    _assert_index_only(scans, "oura_daily_entries", "oura_daily_entries_pkey")
    assert len(scans) == 1  # nothing but the read model


@pytest.mark.usefixtures("loaded")
def test_the_page_from_the_tables_reads_every_table_from_its_index_alone() -> None:
    # The page written from the tables: for a page with an entry too long to store, and the
    # read model's entries are written by the same pieces.
    params = {"user_id": "user-a", "start": START, "end": END, "limit": 366, "fetch": 367}

    scans = _explain(selectors.DAILY_PAGE_SQL, params)

    for table, index in DAILY_PAGE_INDEXES.items():
        _assert_index_only(scans, table, index)


def _list_sql(rows: QuerySet[Any]) -> tuple[str, Any]:
    return rows[:101].query.sql_with_params()


@pytest.mark.usefixtures("loaded")
def test_the_activity_and_sleep_lists_read_their_index_alone() -> None:
    activities = selectors.activity_list(user_id="user-a", start=START, end=END)
    sleep = selectors.sleep_period_list(user_id="user-a", start=START, end=END)

    _assert_index_only(
        _explain(*_list_sql(activities)), "oura_activities", "activity_start_read_idx"
    )
    _assert_index_only(_explain(*_list_sql(sleep)), "oura_sleep_periods", "sleep_period_read_idx")


@pytest.mark.usefixtures("loaded")
def test_a_later_page_of_the_lists_is_index_only_too() -> None:
    first = list(selectors.activity_list(user_id="user-a", start=START, end=END)[:10])
    after = (first[-1].start, first[-1].pk)
    activities = selectors.activity_list(user_id="user-a", start=START, end=END, after=after)
    periods = list(selectors.sleep_period_list(user_id="user-a", start=START, end=END)[:10])
    sleep = selectors.sleep_period_list(
        user_id="user-a", start=START, end=END, after=(periods[-1].bedtime_start, periods[-1].pk)
    )

    _assert_index_only(
        _explain(*_list_sql(activities)), "oura_activities", "activity_start_read_idx"
    )
    _assert_index_only(_explain(*_list_sql(sleep)), "oura_sleep_periods", "sleep_period_read_idx")


def test_the_read_tables_are_vacuumed_after_a_day_of_writes_not_a_fifth_of_the_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class "
            "WHERE relnamespace = 'health'::regnamespace AND relname = ANY(%s)",
            [[*DAILY_PAGE_INDEXES, "oura_activities"]],
        )
        options = dict(cursor.fetchall())

    assert set(options) == {*DAILY_PAGE_INDEXES, "oura_activities"}
    for table, reloptions in options.items():
        assert reloptions is not None, table
        assert "autovacuum_vacuum_insert_threshold=10000" in reloptions, table
        assert "autovacuum_vacuum_insert_scale_factor=0" in reloptions, table
        assert "autovacuum_vacuum_scale_factor=0.01" in reloptions, table


def test_the_indexes_the_covering_ones_replace_are_gone() -> None:
    # One index per read and write: the replaced ones would only cost writes and disk.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'health' AND indexname = ANY(%s)",
            [["sleep_period_day_idx", "sleep_period_day_read_idx", "activity_start_idx"]],
        )
        assert cursor.fetchall() == []
