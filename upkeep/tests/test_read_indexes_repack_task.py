"""The scheduler's repack of the read API's indexes, run as an operator would run it now."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from normalized.maintenance import READ_INDEXES, read_indexes_repack
from normalized.tests.factories import (
    DailyReadinessFactory,
    DailySleepFactory,
    SleepPeriodFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)


def filenodes() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.relfilenode FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'health' AND c.relname = ANY(%s)",
            [list(READ_INDEXES)],
        )
        return dict(cursor.fetchall())


def invalid_indexes() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'health' AND NOT i.indisvalid"
        )
        return [name for (name,) in cursor.fetchall()]


def test_every_read_index_exists() -> None:
    assert sorted(filenodes()) == sorted(READ_INDEXES)


def test_the_task_rebuilds_every_read_index_and_the_reads_answer_the_same(
    capsys: pytest.CaptureFixture[str], make_api_key: Callable[..., str]
) -> None:
    for offset in range(20):
        day = date(2024, 3, 1) + timedelta(days=offset)
        DailyReadinessFactory(user_id="user-a", day=day, score=60 + offset)
        DailySleepFactory(user_id="user-a", day=day, score=70 + offset)
        SleepPeriodFactory(user_id="user-a", day=day, oura_id=f"p{offset}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key()}")
    url = "/v1/health/user-a/oura/daily?start=2024-03-01&end=2024-03-31"
    first = client.get(url)
    assert first.status_code == 200
    assert len(first.json()["data"]) == 20
    before = filenodes()

    call_command("run_scheduler", "--once", "read_indexes_repack")

    assert "read_indexes_repack: ok in" in capsys.readouterr().out
    after = filenodes()
    assert set(after) == set(before)
    assert all(after[name] != before[name] for name in before)  # each one rebuilt
    assert invalid_indexes() == []
    assert client.get(url).content == first.content


def test_a_killed_runs_invalid_copy_is_dropped_first() -> None:
    with connection.cursor() as cursor:
        # What REINDEX CONCURRENTLY leaves when it dies after building its copy.
        cursor.execute(
            "CREATE INDEX readiness_user_day_read_idx_ccnew"
            " ON health.oura_daily_readiness (user_id, day)"
        )
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid ="
            " 'health.readiness_user_day_read_idx_ccnew'::regclass"
        )
    report = read_indexes_repack(indexes=("vo2_max_user_day_uniq",))
    assert report.leftovers_dropped == ["readiness_user_day_read_idx_ccnew"]
    assert report.repacked == ["vo2_max_user_day_uniq"]
    assert invalid_indexes() == []


def test_it_refuses_to_run_inside_a_transaction() -> None:
    from django.db import transaction

    with transaction.atomic(), pytest.raises(RuntimeError, match="inside a transaction"):
        read_indexes_repack()
