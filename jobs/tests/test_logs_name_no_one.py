"""Logs name a person by keyed hash only: no raw user id or Oura id in any record."""

from __future__ import annotations

import io
import json
import logging
from datetime import date, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from core.observability import RedactFilter
from core.pseudonyms import person_hash
from ingestion.models import OuraConnection
from ingestion.tests.test_connections import connect
from ingestion.tests.webhook_helpers import URL, notification, signed
from jobs.backfill import backfill_run
from jobs.services import job_start

pytestmark = pytest.mark.django_db(transaction=True)

USER = "Pseudo_User-42"


def _record(msg: str = "event", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_the_filter_turns_raw_person_fields_into_their_hashes() -> None:
    record = _record(user_id="alice", provider_user_id="oura-xyz", job_id="j")
    RedactFilter().filter(record)
    fields = vars(record)
    assert "user_id" not in fields
    assert "provider_user_id" not in fields
    assert fields["person"] == person_hash("alice")
    assert fields["oura_person"] == person_hash("oura-xyz", namespace="oura")
    assert fields["job_id"] == "j"


def test_the_filter_hashes_user_ids_in_logged_api_paths() -> None:
    path = "/v1/health/bob/oura/daily"
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Not Found: %s",
                               (path,), None)  # fmt: skip
    RedactFilter().filter(record)
    assert "bob" not in record.getMessage()
    assert person_hash("bob") in record.getMessage()
    key = _record(msg="PUT /bucket/provider%3Doura/date%3D2026-01-01/user%3Dbob/event%3De.json")
    RedactFilter().filter(key)
    assert "bob" not in key.getMessage()


def test_a_full_flow_logs_no_raw_user_id_or_oura_id(
    oura,
    broker,
    api_client: APIClient,
    make_api_key,
    client: Client,
    caplog,
    clean_streams,
) -> None:
    caplog.set_level(logging.DEBUG)
    # What the configured console handler (settings.LOGGING) writes, read back.
    (console,) = [h for h in logging.getLogger().handlers
                  if any(isinstance(f, RedactFilter) for f in h.filters)]  # fmt: skip
    assert isinstance(console, logging.StreamHandler)
    written = io.StringIO()
    previous = console.setStream(written)
    oura.add_user()
    connect(api_client, make_api_key, client, user_id=USER)
    oura_id = OuraConnection.objects.get(user_id=USER).provider_user_id
    raw, headers = signed(notification(user_id=oura_id))
    response = client.post(URL, data=raw, content_type="application/json", headers=headers)
    assert response.status_code == 202
    # Refusals log through django.request, whose message carries the path.
    key = make_api_key(scopes=("health:read",), users=(USER,))
    api_client.get(f"/v1/health/{USER}/oura/daily", HTTP_AUTHORIZATION="Bearer wrong")
    api_client.get(f"/v1/health/{USER}/oura/daily?start=2024-01-02&end=2024-01-01",
                   HTTP_AUTHORIZATION=f"Bearer {key}")  # fmt: skip
    # A backfill of a few days.
    end = date.today()
    job = job_start(
        user_id=USER, start=end - timedelta(days=2), end=end, data_types=["daily_readiness"],
        requested_by="test",
    ).job  # fmt: skip
    assert backfill_run(job_id=job.job_id) == "succeeded"

    console.setStream(previous)
    emitted = written.getvalue()
    assert emitted.strip(), "the console handler printed nothing"
    for line in emitted.splitlines():
        if line.startswith("{"):
            assert json.loads(line).get("pii") is False
    records = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    for raw_id in (USER, oura_id):
        assert raw_id not in emitted
        assert raw_id not in records
    assert settings.PERSON_HASH_KEY


def test_the_authorize_url_asks_for_no_email_or_personal_scope_and_still_links(
    oura, api_client: APIClient, make_api_key, client: Client
) -> None:
    from ingestion.tests.test_connections import open_start, start_connect

    oura.add_user()
    oura_url = open_start(Client(), start_connect(api_client, make_api_key, USER))
    scope = parse_qs(urlsplit(oura_url).query)["scope"][0]
    assert "email" not in scope.split()
    assert "personal" not in scope.split()
    connect(api_client, make_api_key, client, user_id=USER)
    assert OuraConnection.objects.get(user_id=USER).provider_user_id  # personal_info.id, no scope
