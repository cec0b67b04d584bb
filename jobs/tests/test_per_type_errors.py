"""One collection's failure fails that collection, not the job; its types can be retried alone.

Against the simulator playing an Oura-compatible server without the vO2_max route (404 for
the collection), with real Postgres, S3 and JetStream.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from audit.models import AuditEntry
from ingestion import crypto
from ingestion.models import RawEvent
from jobs.backfill import backfill_run
from jobs.models import IngestionJob
from jobs.services import JobRequestInvalid, job_retry, job_start, job_status_message
from jobs.tests.conftest import HISTORY_END, connect_user, day_bounds, doc_key, stored_documents
from oura_simulator import OuraSimulator

pytestmark = pytest.mark.django_db(transaction=True)

TYPES = ["daily_readiness", "daily_sleep", "vO2_max", "workout"]  # workout pages after vO2_max
DAYS = 61  # two months: three 30-day windows per type


def start(data_types: list[str]) -> IngestionJob:
    return job_start(
        user_id="user-1", start=HISTORY_END - timedelta(days=DAYS - 1), end=HISTORY_END,
        data_types=data_types, requested_by="test",
    ).job  # fmt: skip


def requests_per_collection(oura: OuraSimulator) -> Counter[str]:
    prefix = "/v2/usercollection/"
    return Counter(r.path.removeprefix(prefix) for r in oura.requests if r.path.startswith(prefix))


def failed_job_with_vo2_max_missing(oura: OuraSimulator) -> IngestionJob:
    oura.config.missing_collections = {"vO2_max"}
    job = start(TYPES)
    assert backfill_run(job_id=job.job_id) == "succeeded_with_errors"
    job.refresh_from_db()
    return job


def test_a_collection_answering_404_fails_alone_and_every_other_collection_is_fetched(
    oura, clean_streams
) -> None:
    conn, uid = connect_user(oura, history_days=100)
    job = failed_job_with_vo2_max_missing(oura)

    assert job.status == "succeeded_with_errors"
    assert job.progress == 100
    assert job.finished_at is not None
    assert set(job.errors) == {"vO2_max"}
    error = job.errors["vO2_max"]
    assert error["error"] == "not_found"
    assert error["detail"].startswith("vO2_max ")
    assert "404" in error["detail"]
    assert error["at"]
    assert job.last_error.startswith("1 of 4 data types failed: vO2_max ")
    # Nothing personal or secret in what the job keeps about the failure.
    assert conn.access_token_enc is not None
    for secret in (crypto.decrypt(conn.access_token_enc), uid, "user-1"):
        assert secret not in str(job.errors)
        assert secret not in job.last_error
    lo, hi = day_bounds(job.range_start, job.range_end)
    stored = stored_documents("user-1")
    for name in ("daily_readiness", "daily_sleep", "workout"):
        expected = [doc_key(d) for d in oura.documents(uid, name, lo, hi)]
        assert expected, name
        assert Counter(stored[name]) == Counter(expected), name
        assert job.counts[name] == len(expected), name
        assert RawEvent.objects.filter(kind="page", user_id="user-1", data_type=name).exists()
    assert "vO2_max" not in stored
    assert requests_per_collection(oura)["vO2_max"] == 1  # a missing route is not retried
    assert requests_per_collection(oura)["workout"] == 3  # the run went on after it
    status = job_status_message(job)
    assert status.status == "succeeded_with_errors"
    assert status.status_per_type == {
        "daily_readiness": "succeeded", "daily_sleep": "succeeded", "vO2_max": "failed",
        "workout": "succeeded",
    }  # fmt: skip
    assert status.errors_per_type["vO2_max"].error == "not_found"
    finished = AuditEntry.objects.get(action=AuditEntry.Action.JOB_FINISHED)
    assert finished.details["status"] == "succeeded_with_errors"
    assert finished.details["failed_types"] == ["vO2_max"]


def test_a_retry_fetches_only_the_failed_types_and_succeeds_once_the_collection_is_back(
    oura,
) -> None:
    _conn, uid = connect_user(oura, history_days=100)
    job = failed_job_with_vo2_max_missing(oura)
    oura.config.missing_collections = set()
    oura.reset_requests()

    retried = job_retry(job=job, requested_by="test")
    again = job_retry(job=job, requested_by="test")

    assert retried.created
    assert not again.created
    assert again.job.job_id == retried.job.job_id
    assert IngestionJob.objects.filter(retry_of=job.job_id).count() == 1
    retry = retried.job
    assert (retry.data_types, retry.retry_of, retry.status) == (["vO2_max"], job.job_id, "queued")
    assert (retry.range_start, retry.range_end) == (job.range_start, job.range_end)

    assert backfill_run(job_id=retry.job_id) == "succeeded"

    assert requests_per_collection(oura) == {"vO2_max": 3}
    retry.refresh_from_db()
    assert (retry.status, retry.progress, retry.errors, retry.last_error) == (
        "succeeded", 100, {}, ""
    )  # fmt: skip
    lo, hi = day_bounds(job.range_start, job.range_end)
    expected = [doc_key(d) for d in oura.documents(uid, "vO2_max", lo, hi)]
    assert expected
    assert Counter(stored_documents("user-1")["vO2_max"]) == Counter(expected)
    assert retry.counts == {"vO2_max": len(expected)}
    started = AuditEntry.objects.filter(action=AuditEntry.Action.JOB_STARTED)
    assert [e.details.get("retry_of") for e in started.order_by("id")] == [None, str(job.job_id)]
    # The original keeps its record: it is not rewritten by the retry.
    job.refresh_from_db()
    assert job.status == "succeeded_with_errors"


def test_a_retry_while_the_collection_is_still_missing_fails_and_can_be_retried_again(
    oura,
) -> None:
    connect_user(oura, history_days=100)
    job = failed_job_with_vo2_max_missing(oura)
    retry = job_retry(job=job, requested_by="test").job

    assert backfill_run(job_id=retry.job_id) == "failed"

    retry.refresh_from_db()
    assert retry.status == "failed"
    assert retry.progress == 100  # every type was attempted
    assert set(retry.errors) == {"vO2_max"}
    assert retry.last_error.startswith("vO2_max ")
    assert job_status_message(retry).status_per_type == {"vO2_max": "failed"}
    assert job_retry(job=retry, requested_by="test").job.data_types == ["vO2_max"]


def test_when_every_collection_fails_the_job_fails_naming_each(oura) -> None:
    connect_user(oura, history_days=100)
    oura.config.missing_collections = {"vO2_max", "workout"}
    job = start(["vO2_max", "workout"])

    assert backfill_run(job_id=job.job_id) == "failed"

    job.refresh_from_db()
    assert job.status == "failed"
    assert set(job.errors) == {"vO2_max", "workout"}
    assert job.last_error.startswith("vO2_max ")
    assert "; workout " in job.last_error
    assert not RawEvent.objects.filter(kind="page").exists()


def test_a_revoked_authorization_still_ends_the_job_at_once_and_is_not_retryable(oura) -> None:
    conn, _uid = connect_user(oura, history_days=100)
    assert conn.access_token_enc is not None
    oura.revoke_token(crypto.decrypt(conn.access_token_enc))
    job = start(TYPES)

    assert backfill_run(job_id=job.job_id) == "failed"

    job.refresh_from_db()
    assert job.errors == {}
    assert "connect again" in job.last_error
    assert set(job_status_message(job).status_per_type.values()) == {"skipped"}
    with pytest.raises(JobRequestInvalid) as refused:
        job_retry(job=job, requested_by="test")
    assert (refused.value.code, refused.value.http_status) == ("job_not_retryable", 409)


def test_only_finished_jobs_with_failed_types_can_be_retried(oura) -> None:
    connect_user(oura, history_days=100)
    job = start(["daily_sleep"])
    for status in ("queued", "running", "succeeded", "cancelled"):
        IngestionJob.objects.filter(pk=job.pk).update(status=status)
        job.refresh_from_db()
        with pytest.raises(JobRequestInvalid) as refused:
            job_retry(job=job, requested_by="test")
        assert refused.value.code == "job_not_retryable", status
    assert IngestionJob.objects.count() == 1


def test_a_resumed_run_does_not_fetch_a_collection_that_already_failed(oura) -> None:
    connect_user(oura, history_days=100)
    job = failed_job_with_vo2_max_missing(oura)
    # As if the worker had died after recording the failure: run the job again from its row.
    IngestionJob.objects.filter(pk=job.pk).update(status="queued", finished_at=None)
    oura.config.missing_collections = set()
    oura.reset_requests()

    assert backfill_run(job_id=job.job_id) == "succeeded_with_errors"

    assert requests_per_collection(oura) == {}
