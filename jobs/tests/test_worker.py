"""Jobs through the dramatiq-postgres broker: in-process worker, and a worker process that
is killed mid-job and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

import dramatiq
import pytest
from django.conf import settings
from django.db import connection
from django.db.models import F

from ingestion.data_types import BACKFILL_TYPES, windows
from ingestion.models import RawEvent
from jobs.models import IngestionJob
from jobs.services import job_start, jobs_reconcile
from jobs.tests.conftest import (
    HISTORY_END,
    connect_user,
    day_bounds,
    doc_key,
    raw_messages,
    stored_documents,
)

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def queued_messages() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT message_id::text FROM dramatiq.queue WHERE state = 'queued'")
        return [row[0] for row in cursor.fetchall()]


def test_a_started_job_is_enqueued_on_commit_and_run_by_a_worker(oura, broker, clean_streams):
    _conn, uid = connect_user(oura, history_days=120)
    today = HISTORY_END
    job = job_start(user_id="user-1", start=today - timedelta(days=89), end=today,
                    data_types=None, requested_by="test").job  # fmt: skip
    assert queued_messages() == [str(job.message_id)]

    worker = dramatiq.Worker(broker, worker_threads=1, queues={"backfill"})
    worker.start()
    try:
        wait_for(lambda: IngestionJob.objects.get(pk=job.pk).status == "succeeded", 60, "job")
    finally:
        worker.stop()

    job.refresh_from_db()
    lo, hi = day_bounds(job.range_start, job.range_end)
    stored = stored_documents("user-1")
    for name in job.data_types:
        assert Counter(stored.get(name, [])) == Counter(
            doc_key(d) for d in oura.documents(uid, name, lo, hi)
        ), name
    assert queued_messages() == []


def oura_env(oura) -> dict[str, str]:
    base = oura.base_url
    return {
        "OURA_API_BASE_URL": base, "OURA_TOKEN_URL": f"{base}/oauth/token",
        "OURA_AUTHORIZE_URL": f"{base}/oauth/authorize", "OURA_REVOKE_URL": f"{base}/oauth/revoke",
        "OURA_CLIENT_ID": settings.OURA_CLIENT_ID,
        "OURA_CLIENT_SECRET": settings.OURA_CLIENT_SECRET,
    }  # fmt: skip


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_worker", "--threads", "1"],
        cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def data_requests(oura) -> Counter[str]:
    return Counter(r.path.rsplit("/", 1)[-1] for r in oura.requests if "/usercollection/" in r.path)


def test_a_killed_worker_resumes_without_refetching_finished_windows_or_duplicates(
    oura, broker, subprocess_env, clean_streams
) -> None:
    _conn, uid = connect_user(oura, history_days=400)
    oura.config.latency_ms = 40  # slow enough to kill it mid-job
    today = HISTORY_END
    types = ["daily_activity", "daily_readiness", "daily_sleep", "sleep", "workout", "session"]
    job = job_start(user_id="user-1", start=today - timedelta(days=364), end=today,
                    data_types=types, requested_by="test").job  # fmt: skip
    env = subprocess_env | oura_env(oura)
    plan = {
        t: windows(job.range_start, job.range_end, BACKFILL_TYPES[t].window_days) for t in types
    }

    first = start_worker(env)
    try:
        wait_for(lambda: len(IngestionJob.objects.get(pk=job.pk).checkpoint) >= 3, 60,
                 "three collections under way")  # fmt: skip
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed = IngestionJob.objects.get(pk=job.pk)
    assert killed.status == "running"
    done_at_kill = [t for t, cp in killed.checkpoint.items() if cp["done"]]
    assert done_at_kill
    requests_at_kill = data_requests(oura)

    # The worker is gone, so its heartbeat is stale at once for the reconciler. That heartbeat
    # was stamped by Postgres's clock (now() in SQL) and the reconciler compares it with ours:
    # age it by a minute, so that a skew between the two clocks cannot hide a dead worker.
    IngestionJob.objects.filter(pk=job.pk).update(
        heartbeat_at=F("heartbeat_at") - timedelta(minutes=1)
    )
    report = jobs_reconcile(stale_after_s=0)
    assert report.resumed == [str(job.job_id)]
    assert IngestionJob.objects.get(pk=job.pk).status == "queued"

    second = start_worker(env)
    try:
        wait_for(lambda: IngestionJob.objects.get(pk=job.pk).status == "succeeded", 90, "resume")
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(30)
        except subprocess.TimeoutExpired:
            second.kill()

    job.refresh_from_db()
    assert job.attempts == 2
    after = data_requests(oura)
    for name in done_at_kill:  # finished collections were not asked for again
        assert after[name] == requests_at_kill[name] == len(plan[name]), name
    # At most the one page in flight at the kill was fetched twice.
    assert sum(after.values()) <= sum(len(w) for w in plan.values()) + 1
    lo, hi = day_bounds(job.range_start, job.range_end)
    stored = stored_documents("user-1")
    for name in types:
        expected = Counter(doc_key(d) for d in oura.documents(uid, name, lo, hi))
        assert Counter(stored[name]) == expected, name
        assert job.counts[name] == sum(expected.values()), name
    pages = RawEvent.objects.filter(kind="page", user_id="user-1")
    assert pages.count() == pages.values("dedupe_key").distinct().count()
    messages = raw_messages()
    assert sorted(m[2]["event_id"] for m in messages) == sorted(str(p.event_id) for p in pages)
