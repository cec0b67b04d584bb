"""The jobs API: auth (401/403/404), validation, start/status/cancel."""

from __future__ import annotations

import uuid

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


def test_the_openapi_document_describes_the_three_operations(api_client):
    response = api_client.get("/v1/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
