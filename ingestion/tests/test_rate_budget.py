"""The shared Oura budget in Postgres: units taken one at a time and for a whole batch."""

from __future__ import annotations

import pytest

from ingestion.rate_budget import (
    BudgetExhausted,
    Prepaid,
    Priority,
    acquire,
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
