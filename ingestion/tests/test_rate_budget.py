"""The shared Oura budget in Postgres: units taken one at a time and for a whole batch."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from ingestion.rate_budget import (
    BudgetExhausted,
    Prepaid,
    Priority,
    acquire,
    try_acquire,
    used_in_current_window,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_takes_all_its_units_or_none(settings) -> None:
    settings.OURA_APP_RATE_LIMIT = 5

    first = Prepaid.take(3)
    assert first.remaining == 3
    assert used_in_current_window() == 3

    # Three more would pass the cap: nothing is taken, and each request asks on its own.
    refused = Prepaid.take(3)
    assert refused.remaining == 0
    assert used_in_current_window() == 3

    assert Prepaid.take(2).remaining == 2
    assert used_in_current_window() == 5
    with pytest.raises(BudgetExhausted):
        acquire(Priority.LIVE, sleep=False)


def test_a_batch_larger_than_the_whole_window_takes_nothing(settings) -> None:
    settings.OURA_APP_RATE_LIMIT = 5
    assert Prepaid.take(6).remaining == 0
    assert used_in_current_window() == 0


def test_prepaid_units_are_used_before_postgres_is_asked_and_cancel_drops_the_rest(
    settings,
) -> None:
    settings.OURA_APP_RATE_LIMIT = 3
    prepaid = Prepaid.take(2)
    assert used_in_current_window() == 2

    acquire(Priority.LIVE, prepaid=prepaid)  # from the batch's units: no new unit
    assert (prepaid.remaining, used_in_current_window()) == (1, 2)

    prepaid.cancel()
    acquire(Priority.LIVE, prepaid=prepaid)  # nothing left: one unit from the window
    assert (prepaid.remaining, used_in_current_window()) == (0, 3)
    with pytest.raises(BudgetExhausted):
        acquire(Priority.LIVE, sleep=False, prepaid=prepaid)


def test_backfill_batches_keep_to_the_backfill_share(settings) -> None:
    settings.OURA_APP_RATE_LIMIT = 10  # backfill may use 8 of them
    assert Prepaid.take(9, Priority.BACKFILL).remaining == 0
    assert Prepaid.take(8, Priority.BACKFILL).remaining == 8
    assert Prepaid.take(2, Priority.LIVE).remaining == 2


def test_no_rolling_window_ever_holds_more_than_the_limit(settings) -> None:
    """Oura counts a rolling window: a burst at the end of one fixed window and another at
    the start of the next must not both go through (the fleet bench saw up to 139 of 100)."""
    settings.OURA_APP_RATE_LIMIT = 10
    settings.OURA_APP_RATE_WINDOW_S = 60
    start = datetime(2026, 1, 1, tzinfo=UTC)
    accepted: list[float] = []
    refused_until: list[bool] = []  # each refusal names a later time to retry
    rng = random.Random(7)
    offset = 0.0
    while offset < 400:
        for _ in range(rng.choice((0, 0, 1, 3, 12))):  # quiet spells and bursts
            now = start + timedelta(seconds=offset)
            try:
                try_acquire(Priority.LIVE, now=now)
            except BudgetExhausted as exhausted:
                refused_until.append(exhausted.retry_at > now)
            else:
                accepted.append(offset)
        offset += rng.choice((0.5, 1.0, 7.0))
    busiest = max(sum(1 for t in accepted if x <= t < x + 60) for x in accepted)
    assert busiest <= 10
    assert len(accepted) >= 50  # the budget is used, not just refused
    assert refused_until
    assert all(refused_until)


def test_a_full_burst_at_a_window_end_leaves_nothing_at_the_next_windows_start(settings) -> None:
    settings.OURA_APP_RATE_LIMIT = 10
    settings.OURA_APP_RATE_WINDOW_S = 60
    start = datetime(2026, 1, 1, tzinfo=UTC)
    try_acquire(Priority.LIVE, units=10, now=start + timedelta(seconds=59))
    with pytest.raises(BudgetExhausted):
        try_acquire(Priority.LIVE, now=start + timedelta(seconds=61))
    with pytest.raises(BudgetExhausted):
        try_acquire(Priority.LIVE, now=start + timedelta(seconds=118))
    try_acquire(Priority.LIVE, now=start + timedelta(seconds=120))  # 61 s after the burst
