"""A backfill through the whole pipeline: Oura → pages in S3 → JetStream → normalizer → rows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobs.backfill import backfill_run
from jobs.services import job_start
from jobs.tests.conftest import HISTORY_END, connect_user, day_bounds
from normalized.models import Activity, DailyActivity, DailyReadiness, DailySleep, SleepPeriod
from normalized.tests.normalizer_helpers import delete_durable, make_spec, run

pytestmark = pytest.mark.django_db(transaction=True)

ROWS_PER_COLLECTION = {
    "daily_readiness": lambda uid: DailyReadiness.objects.filter(user_id=uid),
    "daily_sleep": lambda uid: DailySleep.objects.filter(user_id=uid),
    "daily_activity": lambda uid: DailyActivity.objects.filter(user_id=uid),
    "sleep": lambda uid: SleepPeriod.objects.filter(user_id=uid),
    "workout": lambda uid: Activity.objects.filter(user_id=uid, kind="workout"),
    "session": lambda uid: Activity.objects.filter(user_id=uid, kind="session"),
}


def test_two_years_of_every_type_become_exactly_the_simulators_rows(oura, clean_streams) -> None:
    _conn, oura_uid = connect_user(oura, history_days=800)
    today = HISTORY_END
    job = job_start(
        user_id="user-1", start=today - timedelta(days=729), end=today,
        data_types=None, requested_by="test",
    ).job  # fmt: skip
    assert backfill_run(job_id=job.job_id) == "succeeded"

    spec = make_spec()
    try:
        stats = run(spec, idle_exit_s=3.0)
    finally:
        delete_durable(spec)

    assert stats.received > 0
    assert stats.dead_lettered == 0
    lo, hi = day_bounds(job.range_start, job.range_end)
    for collection, rows in ROWS_PER_COLLECTION.items():
        expected = {doc["id"] for doc in oura.documents(oura_uid, collection, lo, hi)}
        assert len(expected) > 0, collection
        stored = set(rows("user-1").values_list("oura_id", flat=True))
        assert stored == expected, collection
