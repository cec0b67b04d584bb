"""Backfill runs against the simulator, with real Postgres, S3 and JetStream."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from core.pseudonyms import person_hash
from ingestion.data_types import BACKFILL_TYPES, DEFAULT_TYPES, Window
from ingestion.models import OuraConnection, RawEvent
from jobs.backfill import backfill_run, page_dedupe_key, page_event_id
from jobs.models import IngestionJob
from jobs.services import job_start
from jobs.tests.conftest import (
    HISTORY_END,
    connect_user,
    day_bounds,
    doc_key,
    raw_messages,
    stored_documents,
)

pytestmark = pytest.mark.django_db(transaction=True)


def start(user_id: str, days: int, data_types: list[str] | None = None) -> IngestionJob:
    today = HISTORY_END
    return job_start(
        user_id=user_id, start=today - timedelta(days=days - 1), end=today,
        data_types=data_types, requested_by="test",
    ).job  # fmt: skip


def test_two_years_of_every_type_land_completely_once(oura, clean_streams) -> None:
    _conn, uid = connect_user(oura, history_days=800)
    job = start("user-1", 730)

    assert backfill_run(job_id=job.job_id) == "succeeded"

    job.refresh_from_db()
    assert job.status == "succeeded"
    assert job.progress == 100
    assert job.last_error == ""
    assert sorted(job.data_types) == sorted(DEFAULT_TYPES)
    lo, hi = day_bounds(job.range_start, job.range_end)
    stored = stored_documents("user-1")
    for name in DEFAULT_TYPES:
        expected = [doc_key(d) for d in oura.documents(uid, name, lo, hi)]
        assert Counter(stored.get(name, [])) == Counter(expected), name
        assert job.counts.get(name, 0) == len(expected), name
    assert sum(job.counts.values()) > 5000

    pages = list(RawEvent.objects.filter(user_id="user-1", kind="page"))
    assert all(p.published_at and p.envelope is None and p.archived_at for p in pages)
    messages = raw_messages()
    assert len(messages) == len(pages)
    by_event = {m[2]["event_id"]: m for m in messages}
    assert set(by_event) == {str(p.event_id) for p in pages}
    for page in pages:
        subject, headers, body = by_event[str(page.event_id)]
        assert subject == f"health.raw.oura.{page.data_type}"
        assert headers["Nats-Msg-Id"] == str(page.event_id)
        assert body["kind"] == "page"
        assert body["job_id"] == str(job.job_id)
        assert body["collection"] == page.data_type
        assert body["object_key"] == page.object_key
        assert body["sha256"] == page.sha256
        assert body["provider_user_id"] == uid
        assert body["user_id"] == "user-1"
        window = Window(*(date.fromisoformat(body["window"][k]) for k in ("start", "end")))
        key = page_dedupe_key(job.job_id, page.data_type, window, 0)
        assert page.dedupe_key == key
        assert page.event_id == page_event_id(key)
    # No more requests than windows x types (empty windows still cost their one request).
    assert len(oura.requests) <= sum(
        len(range(0, 730, BACKFILL_TYPES[t].window_days)) for t in DEFAULT_TYPES
    )
    # Job entries name the person by person_ref only (AuditEntry.KEEPS_USER_ID).
    mine = AuditEntry.objects.filter(person_ref=person_hash("user-1"), user_id="")
    actions = list(mine.values_list("action", flat=True))
    assert AuditEntry.Action.JOB_STARTED in actions
    assert AuditEntry.Action.JOB_FINISHED in actions


def test_rerunning_a_finished_page_stores_and_publishes_nothing_new(oura, clean_streams) -> None:
    connect_user(oura, history_days=100)
    job = start("user-1", 60, ["daily_readiness"])
    assert backfill_run(job_id=job.job_id) == "succeeded"
    before = RawEvent.objects.count(), len(raw_messages())
    # Forget the checkpoint, as if the run had died just before committing it: every page
    # is fetched again under the same dedupe keys.
    IngestionJob.objects.filter(pk=job.pk).update(status="queued", checkpoint={}, counts={})

    assert backfill_run(job_id=job.job_id) == "succeeded"

    assert (RawEvent.objects.count(), len(raw_messages())) == before


def test_windows_meet_without_gaps_or_overlap_for_exclusive_and_inclusive_types(oura) -> None:
    _conn, uid = connect_user(oura, history_days=200)
    types = ["daily_activity", "sleep", "workout", "daily_readiness", "daily_sleep", "session"]
    job = start("user-1", 181, types)
    assert backfill_run(job_id=job.job_id) == "succeeded"
    lo, hi = day_bounds(job.range_start, job.range_end)
    stored = stored_documents("user-1")
    for name in types:
        assert Counter(stored[name]) == Counter(
            doc_key(d) for d in oura.documents(uid, name, lo, hi)
        )


def test_a_revoked_token_fails_the_job_clearly(oura) -> None:
    conn, _uid = connect_user(oura, history_days=60)
    from ingestion import crypto

    assert conn.access_token_enc is not None
    oura.revoke_token(crypto.decrypt(conn.access_token_enc))
    job = start("user-1", 30)

    assert backfill_run(job_id=job.job_id) == "failed"

    job.refresh_from_db()
    assert job.status == "failed"
    assert "authorization" in job.last_error
    assert "connect again" in job.last_error
    conn.refresh_from_db()
    assert conn.status == OuraConnection.Status.NEEDS_REAUTH
    assert not RawEvent.objects.filter(kind="page").exists()


def test_a_collection_that_keeps_failing_fails_the_job_naming_it(
    oura, settings, monkeypatch
) -> None:
    settings.OURA_MAX_RETRIES = 1
    monkeypatch.setattr("jobs.backfill.PAGE_RETRY_BASE_S", 0.01)
    connect_user(oura, history_days=60)
    job = start("user-1", 30, ["workout"])
    oura.config.force_next_statuses = [503] * 50

    assert backfill_run(job_id=job.job_id) == "failed"

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.progress == 100  # its one type was attempted, and failed
    assert job.last_error.startswith("workout ")
    assert "503" in job.last_error
    assert "gave up after 3 attempts" in job.last_error
    assert job.errors["workout"]["error"] == "retries_exhausted"
    assert not RawEvent.objects.filter(kind="page").exists()


def test_cancel_before_the_worker_starts_means_it_never_fetches(oura) -> None:
    from jobs.services import job_cancel

    connect_user(oura, history_days=60)
    job = start("user-1", 30)
    job_cancel(job=job, actor="test")
    oura.reset_requests()

    assert backfill_run(job_id=job.job_id) is None

    job.refresh_from_db()
    assert job.status == "cancelled"
    assert oura.requests == []


def test_with_429s_and_5xx_the_job_completes_and_the_budget_holds(oura, settings) -> None:
    from ingestion.models import RateLimitWindow
    from ingestion.rate_budget import BACKFILL_SHARE

    settings.OURA_APP_RATE_LIMIT = 30
    settings.OURA_APP_RATE_WINDOW_S = 2
    backfill_cap = int(30 * BACKFILL_SHARE)
    oura.config.rate_limit_per_app = 30
    oura.config.rate_limit_window_s = 2
    _conn, uid = connect_user(oura, history_days=400)
    types = ["daily_activity", "daily_readiness", "daily_sleep", "sleep", "workout", "session"]
    job = start("user-1", 365, types)
    oura.config.error_rate = 0.15
    oura.config.force_next_statuses = [429, 503, 429, 502]

    assert backfill_run(job_id=job.job_id) == "succeeded"

    statuses = Counter(r.status for r in oura.requests)
    assert statuses[429] >= 2
    assert statuses[500] + statuses[502] + statuses[503] >= 2
    per_window = Counter(int(r.timestamp) // 2 for r in oura.requests)
    # Our fixed windows, counted at Oura: backfill's share, plus the one request in flight
    # across a window edge.
    assert max(per_window.values()) <= backfill_cap + 1
    assert len(per_window) >= 4  # the job really spanned several windows
    assert (
        max(RateLimitWindow.objects.exclude(used=0).values_list("used", flat=True)) <= backfill_cap
    )
    oura.config.error_rate = 0
    lo, hi = day_bounds(job.range_start, job.range_end)
    stored = stored_documents("user-1")
    for name in types:
        assert Counter(stored[name]) == Counter(
            doc_key(d) for d in oura.documents(uid, name, lo, hi)
        )


def test_cancel_stops_a_running_job_at_the_next_page(oura) -> None:
    import threading

    from jobs.services import job_cancel

    connect_user(oura, history_days=400)
    oura.config.latency_ms = 50
    job = start("user-1", 365)
    result: list[str | None] = []
    runner = threading.Thread(target=lambda: result.append(backfill_run(job_id=job.job_id)))
    runner.start()
    try:
        deadline = timezone.now() + timedelta(seconds=30)
        while not IngestionJob.objects.get(pk=job.pk).counts and timezone.now() < deadline:
            pass
        job_cancel(job=IngestionJob.objects.get(pk=job.pk), actor="test")
        asked_at = len(oura.requests)
    finally:
        runner.join(30)

    assert result == ["cancelled"]
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert job.cancel_requested
    assert job.finished_at
    assert 0 < job.progress < 100
    assert len(oura.requests) <= asked_at + 1  # at most the page that was in flight
    assert AuditEntry.objects.filter(action=AuditEntry.Action.JOB_CANCELLED).count() == 2


def test_an_identical_active_job_is_returned_instead_of_a_second(oura) -> None:
    connect_user(oura, history_days=60)
    today = HISTORY_END
    kwargs: dict[str, Any] = {"user_id": "user-1", "start": today - timedelta(days=9), "end": today,
              "requested_by": "test"}  # fmt: skip
    first = job_start(**kwargs, data_types=["sleep", "daily_sleep"])
    again = job_start(**kwargs, data_types=["daily_sleep", "sleep"])
    other = job_start(**kwargs, data_types=["sleep"])

    assert first.created
    assert not again.created
    assert other.created
    assert again.job.job_id == first.job.job_id != other.job.job_id
    assert IngestionJob.objects.count() == 2
