"""The committed API documents match the code (the live schema is fuzzed in test_api_fuzz.py)."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pydantic import ValidationError

from normalized.dtos import NormalizedMetricsMessage, normalized_metrics_subject
from normalized.management.commands.export_api_docs import stale_documents


def test_committed_openapi_and_json_schemas_equal_what_the_code_generates():
    stale = stale_documents()

    assert stale == [], f"stale: {[str(p) for p in stale]}; run `python manage.py export_api_docs`"


def test_export_check_mode_exits_non_zero_when_a_document_is_stale(monkeypatch):
    from normalized.management.commands import export_api_docs

    monkeypatch.setattr(
        export_api_docs,
        "expected_documents",
        lambda: {export_api_docs.OPENAPI_PATH: "openapi: stale\n"},
    )

    with pytest.raises(CommandError, match=r"openapi\.yaml"):
        call_command("export_api_docs", "--check")


def test_metrics_message_refuses_fields_that_could_carry_health_values():
    fields = {
        "userId": "user-a",
        "provider": "oura",
        "dataType": "daily_readiness",
        "change": "upsert",
        "days": ["2024-01-01"],
        "ids": ["abc"],
        "normalizerVersion": 1,
        "occurredAt": "2024-01-02T03:04:05Z",
    }

    message = NormalizedMetricsMessage.model_validate(fields)

    assert message.days == [date(2024, 1, 1)]
    assert message.model_dump(mode="json")["userId"] == "user-a"
    assert normalized_metrics_subject("user-a") == "health.normalized.user.user-a.metrics"
    with pytest.raises(ValidationError):
        NormalizedMetricsMessage.model_validate({**fields, "score": 80})
