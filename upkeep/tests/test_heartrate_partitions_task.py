"""The scheduler's heart rate partition task, run as an operator would run it now."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import connection

from audit.models import AuditEntry
from normalized import services

pytestmark = pytest.mark.django_db(transaction=True)

OLD = datetime(2012, 7, 14, 9, 30, tzinfo=UTC)  # before every partition migrate creates


@pytest.fixture
def old_month_partition_dropped_after() -> Iterator[None]:
    # A transactional test's DDL outlives it; other tests expect this month in DEFAULT.
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS health.oura_heartrate_samples_y2012m07")


def partition_of_old_sample() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM health.oura_heartrate_samples "
            "WHERE user_id = 'user-1'"
        )
        (name,) = cursor.fetchone()
    return str(name)


@pytest.mark.usefixtures("old_month_partition_dropped_after")
def test_the_task_gives_a_month_found_in_default_its_partition_and_is_audited(capsys) -> None:
    services.normalize_documents(
        user_id="user-1", collection="heartrate", raw_object_key="k",
        documents=[{"timestamp": OLD.isoformat(), "bpm": 58, "source": "sleep"}],
    )  # fmt: skip
    assert partition_of_old_sample() == "health.oura_heartrate_samples_default"

    call_command("run_scheduler", "--once", "heartrate_partitions")
    call_command("run_scheduler", "--once", "heartrate_partitions")

    assert "heartrate_partitions: ok in" in capsys.readouterr().out
    assert partition_of_old_sample() == "health.oura_heartrate_samples_y2012m07"
    runs = AuditEntry.objects.filter(action=AuditEntry.Action.UPKEEP_RUN).order_by("id")
    counts = [entry.details["counts"] for entry in runs]
    # The current and coming months exist since migrate; the second run finds nothing to do.
    assert counts == [
        {"partitions_created": 1, "months_drained": 1},
        {"partitions_created": 0, "months_drained": 0},
    ]
