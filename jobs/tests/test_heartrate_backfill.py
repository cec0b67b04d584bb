"""A heart rate backfill through the whole pipeline: simulator -> pages in S3 -> JetStream ->
normalizer -> rows of the partitioned table, equal to the simulator's samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobs.backfill import backfill_run
from jobs.services import job_start
from jobs.tests.conftest import HISTORY_END, connect_user, day_bounds
from normalized.models import HeartRateSample
from normalized.tests.normalizer_helpers import delete_durable, make_spec, run

pytestmark = pytest.mark.django_db(transaction=True)


def backfill_and_normalize(days: int) -> None:
    job = job_start(
        user_id="user-1", start=HISTORY_END - timedelta(days=days - 1), end=HISTORY_END,
        data_types=["heartrate"], requested_by="test",
    ).job  # fmt: skip
    assert backfill_run(job_id=job.job_id) == "succeeded"
    spec = make_spec()
    try:
        stats = run(spec, idle_exit_s=3.0)
    finally:
        delete_durable(spec)
    assert stats.received > 0
    assert stats.dead_lettered == 0


def rows() -> list[tuple[datetime, int, str]]:
    return list(
        HeartRateSample.objects.filter(user_id="user-1")
        .order_by("timestamp")
        .values_list("timestamp", "bpm", "source")
    )


def test_a_few_days_of_heart_rate_become_the_simulators_samples_and_a_rerun_changes_nothing(
    oura, clean_streams
) -> None:
    _conn, oura_uid = connect_user(oura, history_days=30)
    days = 3
    lo, hi = day_bounds(HISTORY_END - timedelta(days=days - 1), HISTORY_END)
    expected = [
        (datetime.fromisoformat(s["timestamp"]).astimezone(UTC), s["bpm"], s["source"])
        for s in oura.documents(oura_uid, "heartrate", lo, hi)
    ]
    # More than one Oura page (1000 rows), so the backfill follows next_token too.
    assert len(expected) > 1000

    backfill_and_normalize(days)

    assert rows() == expected
    first = dict(
        HeartRateSample.objects.filter(user_id="user-1").values_list("timestamp", "updated_at")
    )

    # A second job fetches and normalizes every page again: the same rows, rewritten in place.
    backfill_and_normalize(days)

    assert rows() == expected
    second = dict(
        HeartRateSample.objects.filter(user_id="user-1").values_list("timestamp", "updated_at")
    )
    assert second.keys() == first.keys()
    assert all(second[moment] > first[moment] for moment in first)
