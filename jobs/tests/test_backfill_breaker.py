"""A backfill meets an open Oura circuit breaker: it waits instead of failing its pages."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from ingestion import circuit_breaker
from jobs.backfill import backfill_run
from jobs.services import job_start
from jobs.tests.conftest import HISTORY_END, connect_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_backfill_waits_while_the_breaker_is_open_and_then_completes(
    oura, settings, clean_streams
) -> None:
    settings.OURA_BREAKER_FAILURES = 1
    settings.OURA_BREAKER_OPEN_S = 2.0
    connect_user(oura, history_days=60)
    job = job_start(
        user_id="user-1", start=HISTORY_END - timedelta(days=29), end=HISTORY_END,
        data_types=["workout"], requested_by="test",
    ).job  # fmt: skip
    # Another process just saw Oura fail: the data routes' breaker is open for 2 s.
    circuit_breaker.record_failure(circuit_breaker.Permit(circuit_breaker.USERCOLLECTION))
    opened_at = time.time()
    oura.reset_requests()

    assert backfill_run(job_id=job.job_id) == "succeeded"

    data_requests = [r for r in oura.requests if "/v2/usercollection/" in r.path]
    assert data_requests, "the job fetched nothing"
    # Nothing reached Oura while the breaker was open; the first call was the probe.
    assert min(r.timestamp for r in data_requests) >= opened_at + 1.9
    assert circuit_breaker.read(circuit_breaker.USERCOLLECTION).state == "closed"
