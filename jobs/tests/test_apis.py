"""The jobs API: auth (401/403/404), validation, start/status/cancel."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from jobs.models import IngestionJob
from jobs.tests.conftest import connect_user

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"userId": "user-1", "range": {"start": "2025-01-01", "end": "2025-01-31"}}


def auth(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_start_without_a_key_is_401_and_without_the_scope_is_403(api_client, make_api_key):
    response = api_client.post("/v1/health/oura/sync", BODY, format="json")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    read_only = make_api_key(scopes=("health:read",))
    response = api_client.post("/v1/health/oura/sync", BODY, format="json", **auth(read_only))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_start_for_a_user_the_key_may_not_act_on_is_404(api_client, make_api_key, oura):
    connect_user(oura, history_days=40)
    key = make_api_key(scopes=("health:sync",), users=("someone-else",))
    response = api_client.post("/v1/health/oura/sync", BODY, format="json", **auth(key))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert not IngestionJob.objects.exists()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"userId": "user-1"}, "invalid_request"),
        ({**BODY, "range": {"start": "2025-02-01", "end": "2025-01-01"}}, "invalid_request"),
        ({**BODY, "range": {"start": "not-a-day", "end": "2025-01-01"}}, "invalid_request"),
        ({**BODY, "dataTypes": ["steps"]}, "invalid_request"),
        ({**BODY, "dataTypes": []}, "invalid_request"),
    ],
)
def test_invalid_requests_answer_400_in_the_error_shape(api_client, make_api_key, oura, body, code):
    connect_user(oura, history_days=40)
    key = make_api_key(scopes=("health:sync",))
    response = api_client.post("/v1/health/oura/sync", body, format="json", **auth(key))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == code
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b"[" * 5_000 + b"]" * 5_000, b'{"a":' * 50_000, b"{", b"\xff\xfe"]
)
def test_a_body_that_is_not_json_or_nested_too_deeply_is_400_and_starts_nothing(
    api_client, make_api_key, oura, body
):
    connect_user(oura, history_days=40)
    key = make_api_key(scopes=("health:sync",))
    response = api_client.post(
        "/v1/health/oura/sync", body, content_type="application/json", **auth(key)
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "malformed_body"
    assert not IngestionJob.objects.exists()


def test_a_user_without_a_connection_is_409_not_connected(api_client, make_api_key):
    key = make_api_key(scopes=("health:sync",))
    response = api_client.post("/v1/health/oura/sync", BODY, format="json", **auth(key))
    assert response.status_code == 409
    assert response.json()["error"] == "not_connected"


def test_a_type_whose_scope_was_not_granted_is_refused(api_client, make_api_key, oura):
    connect_user(oura, history_days=40, scopes=["daily"])
    key = make_api_key(scopes=("health:sync",))
    body = {**BODY, "dataTypes": ["workout"]}
    response = api_client.post("/v1/health/oura/sync", body, format="json", **auth(key))
    assert response.status_code == 400
    assert response.json()["error"] == "scope_not_granted"
    # Without dataTypes, only the granted types are taken.
    response = api_client.post("/v1/health/oura/sync", BODY, format="json", **auth(key))
    job = IngestionJob.objects.get(job_id=response.json()["jobId"])
    assert "workout" not in job.data_types
    assert "daily_sleep" in job.data_types


def test_start_then_status_then_cancel(api_client, make_api_key, oura):
    connect_user(oura, history_days=40)
    key = make_api_key(scopes=("health:sync",), users=("user-1",))
    body = {**BODY, "dataTypes": ["vo2_max", "sleep"]}

    started = api_client.post("/v1/health/oura/sync", body, format="json", **auth(key))
    again = api_client.post("/v1/health/oura/sync", body, format="json", **auth(key))

    assert started.status_code == 202, started.content
    assert started.json()["status"] == "queued"
    assert again.status_code == 202
    assert again.json()["jobId"] == started.json()["jobId"]
    job_id = started.json()["jobId"]
    status = api_client.get(f"/v1/health/oura/sync/{job_id}", **auth(key))
    assert status.status_code == 200
    data = status.json()
    assert data["jobId"] == job_id
    assert data["status"] == "queued"
    assert data["progress"] == 0
    assert data["dataTypes"] == ["sleep", "vO2_max"]
    assert data["countsPerType"] == {}
    assert data["lastError"] is None
    assert data["startedAt"] is None
    assert data["updatedAt"]

    cancelled = api_client.post(f"/v1/health/oura/sync/{job_id}/cancel", **auth(key))
    assert cancelled.status_code == 202
    assert cancelled.json() == {"jobId": job_id, "status": "cancelled", "cancelRequested": True}
    again = api_client.post(f"/v1/health/oura/sync/{job_id}/cancel", **auth(key))
    assert again.status_code == 202
    assert again.json()["status"] == "cancelled"


def test_an_alias_and_its_registry_name_start_the_same_job(api_client, make_api_key, oura):
    connect_user(oura, history_days=40)
    key = make_api_key(scopes=("health:sync",), users=("user-1",))

    by_alias = api_client.post(
        "/v1/health/oura/sync", {**BODY, "dataTypes": ["vo2_max"]}, format="json", **auth(key)
    )
    by_name = api_client.post(
        "/v1/health/oura/sync", {**BODY, "dataTypes": ["vO2_max"]}, format="json", **auth(key)
    )
    other_case = api_client.post(
        "/v1/health/oura/sync", {**BODY, "dataTypes": ["VO2_MAX"]}, format="json", **auth(key)
    )

    assert (by_alias.status_code, by_name.status_code) == (202, 202)
    assert by_alias.json()["jobId"] == by_name.json()["jobId"]
    status = api_client.get(f"/v1/health/oura/sync/{by_alias.json()['jobId']}", **auth(key))
    assert status.json()["dataTypes"] == ["vO2_max"]
    assert set(status.json()["statusPerType"]) == {"vO2_max"}
    # Only the registry's aliases are accepted, not any spelling that differs in case.
    assert other_case.status_code == 400
    assert other_case.json()["error"] == "invalid_request"


def test_status_and_cancel_of_another_users_job_are_404(api_client, make_api_key, oura):
    connect_user(oura, history_days=40)
    owner = make_api_key(scopes=("health:sync",))
    job_id = api_client.post("/v1/health/oura/sync", BODY, format="json", **auth(owner)).json()[
        "jobId"
    ]
    stranger = make_api_key(scopes=("health:sync",), users=("user-2",))
    for response in (
        api_client.get(f"/v1/health/oura/sync/{job_id}", **auth(stranger)),
        api_client.post(f"/v1/health/oura/sync/{job_id}/cancel", **auth(stranger)),
        api_client.get(f"/v1/health/oura/sync/{uuid.uuid4()}", **auth(owner)),
    ):
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    assert IngestionJob.objects.get(job_id=job_id).status == "queued"
    reader = make_api_key(scopes=("health:read",))
    assert api_client.get(f"/v1/health/oura/sync/{job_id}", **auth(reader)).status_code == 403


def test_a_finished_job_cannot_be_cancelled(api_client, make_api_key, oura):
    connect_user(oura, history_days=40)
    key = make_api_key(scopes=("health:sync",))
    job_id = api_client.post("/v1/health/oura/sync", BODY, format="json", **auth(key)).json()[
        "jobId"
    ]
    IngestionJob.objects.filter(job_id=job_id).update(status="succeeded", progress=100)
    response = api_client.post(f"/v1/health/oura/sync/{job_id}/cancel", **auth(key))
    assert response.status_code == 409
    assert response.json()["error"] == "job_finished"


def test_the_openapi_document_describes_the_four_operations(api_client):
    response = api_client.get("/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    retry = schema["paths"]["/v1/health/oura/sync/{job_id}/retry"]["post"]
    assert retry["operationId"] == "oura_sync_retry"
    assert "job_not_retryable" in retry["description"]
    status = schema["components"]["schemas"]["JobStatusOutput"]["properties"]
    assert {"statusPerType", "errorsPerType", "retryOf"} <= set(status)


def finished_with_vo2_max_failed(oura) -> str:
    from jobs.backfill import backfill_run
    from jobs.services import job_start

    connect_user(oura, history_days=40)
    oura.config.missing_collections = {"vO2_max"}
    job = job_start(
        user_id="user-1", start=date(2026, 11, 1), end=date(2026, 11, 30),
        data_types=["daily_sleep", "vO2_max"], requested_by="test",
    ).job  # fmt: skip
    assert backfill_run(job_id=job.job_id) == "succeeded_with_errors"
    return str(job.job_id)


def test_status_names_each_types_state_and_the_failed_types_errors(api_client, make_api_key, oura):
    job_id = finished_with_vo2_max_failed(oura)
    key = make_api_key(scopes=("health:sync",), users=("user-1",))

    data = api_client.get(f"/v1/health/oura/sync/{job_id}", **auth(key)).json()

    assert data["status"] == "succeeded_with_errors"
    assert data["progress"] == 100
    assert data["statusPerType"] == {"daily_sleep": "succeeded", "vO2_max": "failed"}
    assert set(data["errorsPerType"]) == {"vO2_max"}
    assert data["errorsPerType"]["vO2_max"]["error"] == "not_found"
    assert data["errorsPerType"]["vO2_max"]["detail"].startswith("vO2_max ")
    assert data["errorsPerType"]["vO2_max"]["at"]
    assert data["lastError"].startswith("1 of 2 data types failed: vO2_max ")
    assert data["retryOf"] is None


def test_retry_starts_one_job_for_the_failed_types_and_asking_again_returns_it(
    api_client, make_api_key, oura
):
    job_id = finished_with_vo2_max_failed(oura)
    key = make_api_key(scopes=("health:sync",), users=("user-1",))

    first = api_client.post(f"/v1/health/oura/sync/{job_id}/retry", **auth(key))
    second = api_client.post(f"/v1/health/oura/sync/{job_id}/retry", **auth(key))

    assert first.status_code == 202, first.content
    retry = first.json()
    assert retry["jobId"] != job_id
    assert retry == {"jobId": retry["jobId"], "status": "queued", "retryOf": job_id,
                     "dataTypes": ["vO2_max"]}  # fmt: skip
    assert second.status_code == 202
    assert second.json() == retry
    assert IngestionJob.objects.filter(retry_of=job_id).count() == 1
    status = api_client.get(f"/v1/health/oura/sync/{retry['jobId']}", **auth(key)).json()
    assert (status["retryOf"], status["statusPerType"]) == (job_id, {"vO2_max": "pending"})
    # The retry is active: it is not retryable itself (yet), and cancel works on it as usual.
    refused = api_client.post(f"/v1/health/oura/sync/{retry['jobId']}/retry", **auth(key))
    assert refused.status_code == 409
    assert refused.json()["error"] == "job_not_retryable"


def test_retry_is_refused_without_the_scope_for_other_users_and_for_jobs_without_failures(
    api_client, make_api_key, oura
):
    job_id = finished_with_vo2_max_failed(oura)
    path = f"/v1/health/oura/sync/{job_id}/retry"
    reader = make_api_key(scopes=("health:read",))
    stranger = make_api_key(scopes=("health:sync",), users=("user-2",))
    owner = make_api_key(scopes=("health:sync",), users=("user-1",))

    for response, code, http in (
        (api_client.post(path), "unauthenticated", 401),
        (api_client.post(path, **auth(reader)), "forbidden", 403),
        (api_client.post(path, **auth(stranger)), "not_found", 404),
        (api_client.post(f"/v1/health/oura/sync/{uuid.uuid4()}/retry", **auth(owner)),
         "not_found", 404),
    ):  # fmt: skip
        assert response.status_code == http
        assert response.json()["error"] == code
        assert response.json()["detail"]
    assert not IngestionJob.objects.filter(retry_of=job_id).exists()
    IngestionJob.objects.filter(job_id=job_id).update(status="succeeded", errors={})
    response = api_client.post(path, **auth(owner))
    assert response.status_code == 409
    assert response.json()["error"] == "job_not_retryable"
    assert "Nothing to retry" in response.json()["detail"]
