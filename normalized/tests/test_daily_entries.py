"""The daily page's read model (normalized/daily_entries.py): the stored entries are always
what the tables give, whoever writes the tables, and the page read from them is the page."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from normalized import daily_entries, selectors, services
from normalized.models import DailyEntry, DailyReadiness, SleepPeriod
from normalized.tests.factories import (
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
from normalized.tests.normalizer_helpers import fixture_documents
from normalized.tests.test_read_api import _rows_of_every_kind
from privacy.models import ErasureRequest
from privacy.services import user_erase

pytestmark = pytest.mark.django_db

YEAR = (date(2024, 1, 1), date(2024, 12, 31))


def _from_tables(user_id: str, start: date, end: date, limit: int) -> tuple[str, date | None]:
    params: dict[str, str | date | int] = {
        "user_id": user_id, "start": start, "end": end, "limit": limit, "fetch": limit + 1,
    }  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(selectors.DAILY_PAGE_SQL, params)
        entries, next_day = cursor.fetchone()
    return entries or "", next_day


def _served(user_id: str, start: date, end: date, limit: int) -> tuple[str, date | None]:
    page = selectors.daily_page_json(user_id=user_id, start=start, end=end, limit=limit)
    return page.entries, page.next_day


def _stored(user_id: str) -> dict[date, str | None]:
    return dict(DailyEntry.objects.filter(user_id=user_id).values_list("day", "entry"))


def _assert_entries_are_the_tables(user_id: str) -> None:
    """Every stored entry is the tables' entry for its day, and every day with a row has one."""
    expected = _from_tables(user_id, *YEAR, 366)[0]
    assert ",".join(entry or "" for _, entry in sorted(_stored(user_id).items())) == expected


@pytest.mark.parametrize(("start", "limit"), [(YEAR[0], 366), (YEAR[0], 3), (date(2024, 2, 2), 2)])
def test_the_page_from_the_entries_is_the_page_from_the_tables(start, limit) -> None:
    _rows_of_every_kind()  # blanks, nulls, NaN, sub-second times, parts alone (test_read_api)

    served = _served("user-a", start, YEAR[1], limit)

    assert served == _from_tables("user-a", start, YEAR[1], limit)
    assert served[0].count('"day"') == min(limit, 13 - (start > YEAR[0]))


def test_every_write_of_the_normalizer_keeps_the_entries_right() -> None:
    readiness, period = fixture_documents("daily_readiness")[0], fixture_documents("sleep")[0]
    day = date.fromisoformat(readiness["day"])
    period_day = date.fromisoformat(period["day"])

    def write(collection: str, document: dict[str, Any], minutes: int) -> None:
        result = services.normalize_documents(
            user_id="user-a", collection=collection, documents=[document], raw_object_key="k",
            observed_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
        )  # fmt: skip
        assert result.written_ids == [document["id"]]

    write("daily_readiness", readiness, 0)
    assert f'"score":{readiness["score"]}' in (_stored("user-a")[day] or "")
    write("daily_readiness", dict(readiness, score=12), 1)  # a newer version of the day
    assert '"score":12' in (_stored("user-a")[day] or "")
    _assert_entries_are_the_tables("user-a")

    # A sleep period alone makes no day (no daily row); with the day's daily sleep it is the
    # main period, and moving it to another day moves it out of the old day's entry.
    write("sleep", period, 2)
    DailySleepFactory(user_id="user-a", day=period_day)
    assert f'"mainPeriod":{{"id":"{period["id"]}"' in (_stored("user-a")[period_day] or "")
    write("sleep", dict(period, day=(period_day + timedelta(days=40)).isoformat()), 3)
    assert '"mainPeriod":null' in (_stored("user-a")[period_day] or "")
    _assert_entries_are_the_tables("user-a")

    # A deletion from Oura: the day's last row goes, and so does its entry.
    services.delete_document(
        user_id="user-a", provider_user_id="oura-a", collection="daily_readiness",
        oura_id=readiness["id"],
    )  # fmt: skip
    assert day not in _stored("user-a") or day == period_day
    _assert_entries_are_the_tables("user-a")


def test_one_statement_for_many_people_and_days_refreshes_each_of_them() -> None:
    DailyReadiness.objects.bulk_create(
        DailyReadinessFactory.build(user_id=user, day=date(2024, 3, 1) + timedelta(days=n))
        for user in ("user-a", "user-b")
        for n in range(30)
    )
    assert len(_stored("user-a")) == len(_stored("user-b")) == 30

    updated = DailyReadiness.objects.filter(day__lt=date(2024, 3, 11)).update(score=3)
    later = DailyReadiness.objects.filter(user_id="user-b", day__gte=date(2024, 3, 21))
    deleted, _ = later.delete()

    assert (updated, deleted) == (20, 10)
    assert len(_stored("user-b")) == 20
    for user in ("user-a", "user-b"):
        _assert_entries_are_the_tables(user)
        assert sum('"score":3,' in (entry or "") for entry in _stored(user).values()) == 10


def test_the_longest_entry_fits_the_read_model() -> None:
    """Every text at its column's longest and long numbers everywhere: an entry stays far below
    ENTRY_MAX_BYTES, so no real page takes the slower way from the tables."""
    day = date(2024, 5, 5)
    text = "x" * 200
    long_float = 0.1 + 0.2  # 19 characters
    DailyReadinessFactory(
        user_id="user-a", day=day, score=-32768, temperature_deviation=-long_float,
        temperature_trend_deviation=-long_float,
        contributors={key: -(2**62) for key in DailyReadinessFactory.contributors.function()},
    )  # fmt: skip
    DailySleepFactory(user_id="user-a", day=day, score=-32768)
    DailyActivityFactory(user_id="user-a", day=day, average_met_minutes=-long_float)
    longest_id = SleepPeriod._meta.get_field("oura_id").max_length or 0
    SleepPeriodFactory(
        user_id="user-a", day=day, oura_id="o" * longest_id,
        type="long_sleep", average_hrv=-long_float, average_heart_rate=-long_float,
        bedtime_start=datetime(2024, 5, 4, 22, 0, 0, 123456, tzinfo=UTC),
        bedtime_end=datetime(2024, 5, 5, 6, 0, 0, 654321, tzinfo=UTC),
    )  # fmt: skip
    DailyStressFactory(user_id="user-a", day=day, day_summary=text[:20])
    DailySpO2Factory(user_id="user-a", day=day, spo2_percentage=-long_float)
    DailyResilienceFactory(
        user_id="user-a", day=day, level=text[:20], sleep_recovery=-long_float,
        daytime_recovery=-long_float, stress=-long_float,
    )  # fmt: skip
    DailyCardiovascularAgeFactory(user_id="user-a", day=day, pulse_wave_velocity=-long_float)
    VO2MaxFactory(user_id="user-a", day=day, vo2_max=-long_float)

    entry = _stored("user-a")[day]

    assert entry is not None
    assert 1500 < len(entry.encode()) < daily_entries.ENTRY_MAX_BYTES


def test_a_page_with_an_entry_too_long_to_store_is_written_from_the_tables() -> None:
    _rows_of_every_kind()
    with connection.cursor() as cursor:  # what the refresh stores for an entry too long
        cursor.execute(
            "UPDATE health.oura_daily_entries SET entry = NULL WHERE day = %s", [date(2024, 2, 3)]
        )

    served = _served("user-a", *YEAR, 366)

    assert served == _from_tables("user-a", *YEAR, 366)
    assert '"day":"2024-02-03"' in served[0]


def test_erasure_leaves_no_entry_and_keeps_the_others() -> None:
    for user in ("alice", "bob"):
        DailyReadinessFactory(user_id=user, day=date(2024, 4, 1))
        SleepPeriodFactory(user_id=user, day=date(2024, 4, 1))

    request = user_erase(user_id="alice", actor="test")

    assert request.status == ErasureRequest.Status.DONE
    assert not DailyEntry.objects.filter(user_id="alice").exists()
    assert DailyEntry.objects.filter(user_id="bob").count() == 1


def test_rebuild_writes_the_same_entries_again_and_drops_orphans() -> None:
    _rows_of_every_kind()
    before = _stored("user-a")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE health.oura_daily_entries SET entry = 'stale' WHERE day < '2024-03-01'"
        )
        cursor.execute(
            "INSERT INTO health.oura_daily_entries VALUES ('user-a', '2030-01-01', 'orphan'), "
            "('nobody', '2024-01-01', 'orphan')"
        )

    stale = [("user-a", day) for day in sorted(before) if day < date(2024, 3, 1)]
    orphans = [("nobody", date(2024, 1, 1)), ("user-a", date(2030, 1, 1))]
    assert daily_entries.drift() == sorted(stale + orphans)
    assert daily_entries.rebuild() == 2
    assert _stored("user-a") == before
    assert not DailyEntry.objects.filter(user_id="nobody").exists()
    assert daily_entries.drift() == []


def test_the_installed_functions_are_what_the_code_generates() -> None:
    """A change to the page's shape (a DTO, a column) changes the generated SQL: it needs a
    migration that runs daily_entries.install() and rebuild() again, or the stored entries
    would keep the old shape."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure",
            [f"{daily_entries.REFRESH_FUNCTION}(text[], date[])"],
        )
        (installed,) = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'daily_entries_%%' "
            "AND NOT tgisinternal"
        )
        (triggers,) = cursor.fetchone()

    assert installed == daily_entries.refresh_function_body()
    assert triggers == 3 * len(selectors.DAILY_ENTRY_TABLES)


def test_the_rebuild_command_repairs_entries_written_without_the_triggers() -> None:
    DailyReadinessFactory(user_id="user-a", day=date(2024, 4, 1))
    DailyReadinessFactory(user_id="user-b", day=date(2024, 4, 1))
    with connection.cursor() as cursor:  # a write that skipped the triggers (a restore, say)
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute("UPDATE health.oura_daily_readiness SET score = 7")
        finally:
            cursor.execute("SET session_replication_role = origin")
    assert '"score":7' not in (_stored("user-a")[date(2024, 4, 1)] or "")
    drifted = [("user-a", date(2024, 4, 1)), ("user-b", date(2024, 4, 1))]
    assert daily_entries.drift() == drifted
    assert daily_entries.drift(user_ids=["user-b"]) == drifted[1:]
    out = io.StringIO()

    call_command("daily_entries_rebuild", "--user", "user-a", stdout=out)
    assert "for 1 people" in out.getvalue()
    assert '"score":7' in (_stored("user-a")[date(2024, 4, 1)] or "")
    assert '"score":7' not in (_stored("user-b")[date(2024, 4, 1)] or "")

    assert daily_entries.drift() == drifted[1:]
    call_command("daily_entries_rebuild", stdout=out)  # everyone, and a second time
    call_command("daily_entries_rebuild", stdout=out)
    for user in ("user-a", "user-b"):
        _assert_entries_are_the_tables(user)
    assert daily_entries.drift() == []


def test_the_rebuild_command_refuses_a_bad_user_id_and_changes_nothing() -> None:
    DailyReadinessFactory(user_id="user-a", day=date(2024, 4, 1))
    before = _stored("user-a")

    with pytest.raises(CommandError, match="--user"):
        call_command("daily_entries_rebuild", "--user", "../bad id")

    assert _stored("user-a") == before
