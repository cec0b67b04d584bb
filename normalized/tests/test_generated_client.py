"""A Python client generated from the committed OpenAPI document reads our API.

openapi-python-client is the common generator; with its default settings it refuses a
document whose enum lists two values that differ only in case (`vO2_max` and `vo2_max` once
did: "Duplicate key VO2_MAX in enum DataTypesEnum"). So the client is generated here from
`docs/phase-3/api/openapi.yaml` as committed, with no config file, and used over HTTP against
a live server: the test client cannot serve a generated httpx client.
"""

from __future__ import annotations

import enum
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.core.cache import cache

from ingestion.data_types import BACKFILL_TYPES
from normalized.management.commands.export_api_docs import OPENAPI_PATH
from normalized.tests.factories import (
    ActivityFactory,
    DailyActivityFactory,
    DailyReadinessFactory,
    DailySleepFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)

PACKAGE = "health_integrations_api_client"  # from the document's title


@pytest.fixture(scope="module")
def generated_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """Generate the client package into a temporary directory and import it."""
    out = tmp_path_factory.mktemp("client")
    # The generator runs ruff on what it wrote (its default post-hooks): ruff is the venv's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(OPENAPI_PATH)],
        cwd=out, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # It generates what it can and warns about what it skipped: nothing may be skipped.
    assert "Warning" not in output, output
    (project,) = [path for path in out.iterdir() if path.is_dir()]
    sys.path.insert(0, str(project))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(project))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def api(generated_client: ModuleType, live_server: Any, make_api_key: Any) -> Iterator[Any]:
    cache.clear()  # the throttle counts live in the local-memory cache
    key = make_api_key(scopes=("health:read",), users=("user-a",))
    client = generated_client.AuthenticatedClient(
        base_url=live_server.url, token=key, raise_on_unexpected_status=True
    )
    # Closed after the test: a kept-alive connection keeps the server's request thread, and
    # that thread's database session, open past the test database's teardown.
    with client as open_client:
        yield open_client


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_the_data_types_enum_lists_each_registry_name_once(generated_client: ModuleType) -> None:
    enum = _module("models.data_types_enum").DataTypesEnum

    assert sorted(member.value for member in enum) == sorted(BACKFILL_TYPES)
    assert enum.VO2_MAX.value == "vO2_max"


def test_the_generated_client_reads_a_daily_page(api: Any) -> None:
    DailyReadinessFactory(
        day=date(2024, 3, 1), score=81, temperature_deviation=-0.25,
        contributors={"hrv_balance": 64, "resting_heart_rate": 90},
    )  # fmt: skip
    DailySleepFactory(day=date(2024, 3, 1), score=77)
    DailyActivityFactory(day=date(2024, 3, 2), steps=12345, score=None)
    DailyReadinessFactory(user_id="user-b", day=date(2024, 3, 1))  # not this key's user
    daily = _module("api.health_data.oura_daily_list")

    page = daily.sync("user-a", client=api, start=date(2024, 3, 1), end=date(2024, 3, 31))

    assert type(page).__name__ == "OuraDailyPage"
    assert page.next_cursor is None
    assert [entry.day for entry in page.data] == [date(2024, 3, 1), date(2024, 3, 2)]
    first, second = page.data
    assert first.readiness.score == 81
    assert first.readiness.temperature_deviation == -0.25
    assert first.readiness.contributors.hrv_balance == 64
    assert first.sleep.score == 77
    assert first.activity is None
    assert (second.readiness, second.sleep) == (None, None)
    assert (second.activity.steps, second.activity.score) == (12345, None)


def test_the_generated_client_reads_an_activity_page_with_its_cursor(api: Any) -> None:
    ActivityFactory(
        oura_id="w1", day=date(2024, 4, 1), start=datetime(2024, 4, 1, 6, 0, tzinfo=UTC),
        end=datetime(2024, 4, 1, 6, 40, tzinfo=UTC), type="running", calories=420.5,
        label="Morning run",
    )  # fmt: skip
    ActivityFactory(
        oura_id="s1", kind="session", day=date(2024, 4, 1),
        start=datetime(2024, 4, 1, 21, 0, tzinfo=UTC), end=datetime(2024, 4, 1, 21, 10, tzinfo=UTC),
        type="meditation", intensity="", calories=None, distance=None, source="",
    )  # fmt: skip
    activities = _module("api.health_data.oura_activity_list")
    window = {"start": date(2024, 4, 1), "end": date(2024, 4, 30)}

    first = activities.sync("user-a", client=api, limit=1, **window)
    second = activities.sync("user-a", client=api, limit=1, cursor=first.next_cursor, **window)

    (workout,) = first.data
    # The kind is the client's enum (a str enum, whose generated name depends on the other
    # enums of the document).
    assert isinstance(workout.kind, enum.StrEnum)
    assert (workout.id, workout.kind, workout.type_) == ("w1", "workout", "running")
    assert workout.start == datetime(2024, 4, 1, 6, 0, tzinfo=UTC)
    assert (workout.calories, workout.label) == (420.5, "Morning run")
    assert first.next_cursor is not None
    (session,) = second.data
    assert (session.id, session.kind, session.type_) == ("s1", "session", "meditation")
    assert (session.calories, session.intensity, session.source) == (None, None, None)
    assert second.next_cursor is None
