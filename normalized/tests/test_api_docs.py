"""The committed API documents match the code, and the live schema holds up to fuzzing."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from pydantic import ValidationError

from normalized.dtos import NormalizedMetricsMessage, normalized_metrics_subject
from normalized.management.commands.export_api_docs import stale_documents
from normalized.tests.factories import (
    ActivityFactory,
    DailyActivityFactory,
    DailyReadinessFactory,
    DailySleepFactory,
    SleepPeriodFactory,
)


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


READ_PATHS = r"^/v1/health/\{user_id\}/oura/(daily|activities|sleep)$"


@pytest.fixture
def wsgi_app_in_test_transaction():
    """The WSGI app, minus the end-of-request close of the database connection.

    The test's rows live in an open transaction on this thread's connection; closing it
    after a request would roll them back. Django's own test client disconnects the same
    handlers.
    """
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from health_project.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
def test_schemathesis_finds_no_server_error_in_the_read_api(
    make_api_key, settings, wsgi_app_in_test_transaction
):
    """Fuzz the read endpoints in-process through the WSGI app, with a valid key.

    Every default check runs (no 5xx, status codes, content types and bodies as documented)
    but one, see below. Examples are bounded so the run stays well under a minute.
    """
    import schemathesis
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    settings.API_RATE_LIMIT_PER_MINUTE = 1_000_000
    cache.clear()
    key = make_api_key()
    # Rows for the user the generator will usually not guess, and for a plain one it may.
    for user_id in ("user-a", "0"):
        DailyReadinessFactory(user_id=user_id, day=date(2000, 1, 1))
        DailySleepFactory(user_id=user_id, day=date(2000, 1, 1))
        SleepPeriodFactory(user_id=user_id, day=date(2000, 1, 1))
        DailyActivityFactory(user_id=user_id, day=date(2000, 1, 2))
        ActivityFactory(user_id=user_id, day=date(2000, 1, 1))

    schema = schemathesis.openapi.from_wsgi("/v1/schema/", wsgi_app_in_test_transaction).include(
        path_regex=READ_PATHS
    )
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]  # an Err would raise here, failing the test
    assert len(operations) == 3

    for operation in operations:

        @hypothesis_settings(
            max_examples=60,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case):
            case.call_and_validate(
                headers={"Authorization": f"Bearer {key}"},
                # OpenAPI cannot say "end >= start" or "at most 366 days": such a request is
                # schema-valid and rightly answered 400, which this one check would flag.
                excluded_checks=[positive_data_acceptance],
            )

        run()
