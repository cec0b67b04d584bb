"""The reconciler: queued jobs whose message went missing, running jobs whose worker died."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from jobs.models import IngestionJob
from jobs.services import MAX_RUN_ATTEMPTS, job_start, jobs_reconcile
from jobs.tests.conftest import HISTORY_END, connect_user

pytestmark = pytest.mark.django_db(transaction=True)


def queued_ids() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT message_id::text FROM dramatiq.queue WHERE state = 'queued'")
        return {row[0] for row in cursor.fetchall()}


def make_job(oura, days: int = 10) -> IngestionJob:
    today = HISTORY_END
    return job_start(user_id="user-1", start=today - timedelta(days=days), end=today,
                     data_types=None, requested_by="test").job  # fmt: skip


def test_a_queued_job_whose_message_is_lost_gets_a_new_one(oura) -> None:
    connect_user(oura, history_days=30)
    job = make_job(oura)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dramatiq.queue")
    assert jobs_reconcile().resent == []  # still within its grace period

    IngestionJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    report = jobs_reconcile()

    job.refresh_from_db()
    assert report.resent == [str(job.job_id)]
    assert queued_ids() == {str(job.message_id)}
    assert jobs_reconcile(queued_grace_s=0).resent == []  # its message is there now


def test_running_jobs_with_dead_workers_are_resumed_cancelled_or_failed(oura) -> None:
    connect_user(oura, history_days=30)
    stale = timezone.now() - timedelta(minutes=10)
    resumable = make_job(oura, 5)
    cancelling = make_job(oura, 6)
    exhausted = make_job(oura, 7)
    alive = make_job(oura, 8)
    IngestionJob.objects.update(status="running", heartbeat_at=stale, attempts=1)
    IngestionJob.objects.filter(pk=cancelling.pk).update(cancel_requested=True)
    IngestionJob.objects.filter(pk=exhausted.pk).update(attempts=MAX_RUN_ATTEMPTS)
    IngestionJob.objects.filter(pk=alive.pk).update(heartbeat_at=timezone.now())

    call_command("reconcile_jobs")

    states = dict(IngestionJob.objects.values_list("job_id", "status"))
    assert states[resumable.job_id] == "queued"
    assert states[cancelling.job_id] == "cancelled"
    assert states[exhausted.job_id] == "failed"
    assert states[alive.job_id] == "running"
    resumable.refresh_from_db()
    assert str(resumable.message_id) in queued_ids()
    assert "gave up after" in IngestionJob.objects.get(pk=exhausted.pk).last_error
