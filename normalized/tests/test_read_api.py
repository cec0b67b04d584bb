"""REST v1 reads: values, access control, validation and pagination."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import factory
import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from jsonschema import Draft202012Validator

from access.models import ApiKey
from access.services import api_key_revoke
from normalized import dtos
from normalized.models import (
    DailyActivity,
    DailyCardiovascularAge,
    DailyReadiness,
    DailyResilience,
    DailySleep,
    DailySpO2,
    DailyStress,
    SleepPeriod,
    VO2Max,
)
from normalized.tests.factories import (
    ActivityFactory,
    DailyActivityFactory,
    DailyCardiovascularAgeFactory,
    DailyReadinessFactory,
    DailyResilienceFactory,
    DailySleepFactory,
    DailySpO2Factory,
    DailyStressFactory,
    SleepPeriodFactory,
    VO2MaxFactory,
)

pytestmark = pytest.mark.django_db

ENDPOINTS = ["daily", "activities", "sleep"]
RANGE = {"start": "2024-01-01", "end": "2024-12-31"}


@pytest.fixture(autouse=True)
def _fresh_throttle() -> None:
    cache.clear()  # throttle counters live in the local-memory cache


@pytest.fixture
def client_for(api_client, make_api_key):
    def make(**key_options):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_api_key(**key_options)}")
        return api_client

    return make


def url(user_id: str, endpoint: str) -> str:
    return f"/v1/health/{user_id}/oura/{endpoint}"


def read_all(client, user_id: str, endpoint: str, **params) -> list[dict[str, Any]]:
    """Follow nextCursor to the end and return every entry, in order."""
    entries: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {**RANGE, **params} | ({"cursor": cursor} if cursor else {})
        response = client.get(url(user_id, endpoint), query)
        assert response.status_code == 200, response.json()
        body = response.json()
        entries.extend(body["data"])
        cursor = body["nextCursor"]
        if cursor is None:
            return entries
    raise AssertionError("pagination did not end")


# --- Values -------------------------------------------------------------------------------


def test_daily_entry_carries_the_rows_values_in_camel_case(client_for):
    DailyReadinessFactory(
        day=date(2024, 3, 1),
        score=81,
        temperature_deviation=-0.25,
        temperature_trend_deviation=0.125,
        contributors={"hrv_balance": 64, "resting_heart_rate": 90, "unknown_new_field": 3},
    )
    DailySleepFactory(day=date(2024, 3, 1), score=77, contributors={"deep_sleep": 91})
    SleepPeriodFactory(
        day=date(2024, 3, 1), oura_id="nap", type="late_nap", total_sleep_duration=40000
    )
    SleepPeriodFactory(
        day=date(2024, 3, 1),
        oura_id="night",
        type="long_sleep",
        bedtime_start=datetime(2024, 2, 29, 22, 30, tzinfo=UTC),
        bedtime_end=datetime(2024, 3, 1, 6, 15, tzinfo=UTC),
        total_sleep_duration=25000,
        time_in_bed=27900,
        efficiency=90,
        average_heart_rate=52.5,
        lowest_heart_rate=47,
        average_hrv=61.0,
    )
    DailyActivityFactory(day=date(2024, 3, 2), steps=12345, active_calories=600, score=None)

    response = client_for().get(url("user-a", "daily"), RANGE)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["nextCursor"] is None
    assert [entry["day"] for entry in body["data"]] == ["2024-03-01", "2024-03-02"]
    first, second = body["data"]
    assert first["readiness"] == {
        "score": 81,
        "temperatureDeviation": -0.25,
        "temperatureTrendDeviation": 0.125,
        "contributors": {
            "activityBalance": None,
            "bodyTemperature": None,
            "hrvBalance": 64,
            "previousDayActivity": None,
            "previousNight": None,
            "recoveryIndex": None,
            "restingHeartRate": 90,
            "sleepBalance": None,
            "sleepRegularity": None,
        },
    }
    assert first["sleep"] == {
        "score": 77,
        "contributors": {
            "deepSleep": 91,
            "efficiency": None,
            "latency": None,
            "remSleep": None,
            "restfulness": None,
            "timing": None,
            "totalSleep": None,
        },
        # the long_sleep period, although the nap lasted longer
        "mainPeriod": {
            "id": "night",
            "type": "long_sleep",
            "bedtimeStart": "2024-02-29T22:30:00Z",
            "bedtimeEnd": "2024-03-01T06:15:00Z",
            "totalSleepDuration": 25000,
            "timeInBed": 27900,
            "efficiency": 90,
            "averageHeartRate": 52.5,
            "lowestHeartRate": 47,
            "averageHrv": 61.0,
        },
    }
    assert first["activity"] is None
    assert second["readiness"] is None
    assert second["sleep"] is None
    assert second["activity"] == {
        "score": None,
        "steps": 12345,
        "activeCalories": 600,
        "totalCalories": 2400,
        "targetCalories": 500,
        "equivalentWalkingDistance": 7200,
        "highActivityTime": 600,
        "mediumActivityTime": 1800,
        "lowActivityTime": 12000,
        "sedentaryTime": 30000,
        "restingTime": 28000,
        "nonWearTime": 0,
        "averageMetMinutes": 1.6,
        "inactivityAlerts": 1,
        "contributors": {
            "meetDailyTargets": 60,
            "moveEveryHour": 95,
            "recoveryTime": 100,
            "stayActive": 70,
            "trainingFrequency": 80,
            "trainingVolume": 90,
        },
    }


def test_daily_sleep_without_any_period_has_a_null_main_period(client_for):
    DailySleepFactory(day=date(2024, 5, 5))
    SleepPeriodFactory(day=date(2024, 5, 5), type="deleted")

    body = client_for().get(url("user-a", "daily"), RANGE).json()

    assert body["data"][0]["sleep"]["mainPeriod"] is None


def test_activities_list_workouts_and_sessions_with_their_values(client_for):
    ActivityFactory(
        oura_id="w1",
        day=date(2024, 4, 1),
        start=datetime(2024, 4, 1, 6, 0, tzinfo=UTC),
        end=datetime(2024, 4, 1, 6, 40, tzinfo=UTC),
        type="running",
        intensity="hard",
        calories=420.5,
        distance=6000.0,
        source="manual",
        label="Morning run",
        metrics={"average_heart_rate": 150},
    )
    ActivityFactory(
        oura_id="s1",
        kind="session",
        day=date(2024, 4, 1),
        start=datetime(2024, 4, 1, 21, 0, tzinfo=UTC),
        end=datetime(2024, 4, 1, 21, 10, tzinfo=UTC),
        type="meditation",
        intensity="",
        calories=None,
        distance=None,
        source="",
        metrics={"mood": "good"},
    )
    ActivityFactory(oura_id="other-user", user_id="user-b", day=date(2024, 4, 1))
    ActivityFactory(oura_id="out-of-range", day=date(2025, 1, 1))

    body = client_for().get(url("user-a", "activities"), RANGE).json()

    assert body == {
        "data": [
            {
                "id": "w1",
                "kind": "workout",
                "type": "running",
                "day": "2024-04-01",
                "start": "2024-04-01T06:00:00Z",
                "end": "2024-04-01T06:40:00Z",
                "intensity": "hard",
                "calories": 420.5,
                "distance": 6000.0,
                "source": "manual",
                "label": "Morning run",
                "metrics": {"average_heart_rate": 150},
            },
            {
                "id": "s1",
                "kind": "session",
                "type": "meditation",
                "day": "2024-04-01",
                "start": "2024-04-01T21:00:00Z",
                "end": "2024-04-01T21:10:00Z",
                "intensity": None,
                "calories": None,
                "distance": None,
                "source": None,
                "label": None,
                "metrics": {"mood": "good"},
            },
        ],
        "nextCursor": None,
    }


def test_sleep_periods_list_every_field_and_skip_deleted_ones(client_for):
    SleepPeriodFactory(oura_id="p1", day=date(2024, 6, 1), readiness_score=None)
    SleepPeriodFactory(oura_id="gone", day=date(2024, 6, 2), type="deleted")

    body = client_for().get(url("user-a", "sleep"), RANGE).json()

    assert body == {
        "data": [
            {
                "id": "p1",
                "day": "2024-06-01",
                "type": "long_sleep",
                "bedtimeStart": "2024-05-31T23:00:00Z",
                "bedtimeEnd": "2024-06-01T07:00:00Z",
                "totalSleepDuration": 25200,
                "deepSleepDuration": 5400,
                "lightSleepDuration": 14400,
                "remSleepDuration": 5400,
                "awakeTime": 1800,
                "timeInBed": 28800,
                "efficiency": 88,
                "latency": 600,
                "averageHeartRate": 55.5,
                "lowestHeartRate": 48,
                "averageHrv": 42.0,
                "averageBreath": 14.5,
                "readinessScore": None,
            }
        ],
        "nextCursor": None,
    }


def test_range_bounds_are_inclusive(client_for):
    for day in (date(2023, 12, 31), date(2024, 1, 1), date(2024, 12, 31), date(2025, 1, 1)):
        DailyReadinessFactory(day=day)

    body = client_for().get(url("user-a", "daily"), RANGE).json()

    assert [entry["day"] for entry in body["data"]] == ["2024-01-01", "2024-12-31"]


# --- Access -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_key_for_user_a_gets_the_same_404_for_user_b_and_for_an_unknown_user(client_for, endpoint):
    DailyReadinessFactory(user_id="user-b", day=date(2024, 1, 1))
    ActivityFactory(user_id="user-b")
    SleepPeriodFactory(user_id="user-b", day=date(2024, 1, 1))
    client = client_for(users=("user-a",))

    existing = client.get(url("user-b", endpoint), RANGE)
    unknown = client.get(url("nobody", endpoint), RANGE)
    # even an invalid query must not reveal more than "not found"
    invalid = client.get(url("user-b", endpoint), {"start": "nope"})

    assert existing.status_code == unknown.status_code == invalid.status_code == 404
    assert existing.json() == unknown.json() == invalid.json()
    assert existing.json() == {"error": "not_found", "detail": "Not found."}
    assert client.get(url("user-a", endpoint), RANGE).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_expired_revoked_and_missing_keys_get_401(api_client, make_api_key, endpoint):
    expired = make_api_key(expires_at=timezone.now() - timedelta(seconds=1))
    revoked = make_api_key()
    api_key_revoke(api_key=ApiKey.objects.get(prefix=revoked[3:11]))

    for header in (f"Bearer {expired}", f"Bearer {revoked}", "Bearer hk_unknown", None):
        api_client.credentials(**({"HTTP_AUTHORIZATION": header} if header else {}))
        response = api_client.get(url("user-a", endpoint), RANGE)
        assert response.status_code == 401, header
        assert response.json()["error"] == "unauthenticated"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_key_without_health_read_scope_gets_403(client_for, endpoint):
    response = client_for(scopes=("health:sync", "health:connect")).get(
        url("user-a", endpoint), RANGE
    )

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_too_many_requests_for_one_key_get_429_rate_limited(client_for, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    client = client_for()

    statuses = [client.get(url("user-a", "daily"), RANGE).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    response = client.get(url("user-a", "daily"), RANGE)
    assert response.json()["error"] == "rate_limited"
    assert "Retry-After" in response


# --- Validation ---------------------------------------------------------------------------


def _cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"end": "2024-01-31"}, "start"),
        ({"start": "2024-01-01"}, "end"),
        ({"start": "2024/01/01", "end": "2024-01-31"}, "start"),
        ({"start": "20240101", "end": "2024-01-31"}, "start"),
        ({"start": "2024-W01-1", "end": "2024-01-31"}, "start"),
        ({"start": "2024-01-01", "end": "2024-02-30"}, "end"),
        ({"start": "2024-01-01", "end": "2024-01-01T00:00:00"}, "end"),
        ({"start": "2024-02-01", "end": "2024-01-31"}, "end"),
        ({"start": "2024-01-01", "end": "2025-01-01"}, "end"),  # 367 days
        ({**RANGE, "limit": "0"}, "limit"),
        ({**RANGE, "limit": "1001"}, "limit"),
        ({**RANGE, "limit": "ten"}, "limit"),
        ({**RANGE, "cursor": "not a cursor"}, "cursor"),
        ({**RANGE, "cursor": _cursor({"k": "other", "d": "2024-01-02"})}, "cursor"),
        ({**RANGE, "cursor": _cursor(["a"])}, "cursor"),
        # Blank is a value, not an absence (found by the fuzz: `cursor=` read the first page).
        ({**RANGE, "cursor": ""}, "cursor"),
        ({**RANGE, "limit": ""}, "limit"),
    ],
)
def test_bad_query_gets_400_naming_the_parameter(client_for, endpoint, query, parameter):
    response = client_for().get(url("user-a", endpoint), query)

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["detail"].startswith(f"{parameter}:")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor({"k": "daily", "d": "2025-02-01"}),  # outside the range
        _cursor({"k": "daily", "d": "yesterday"}),
        _cursor({"k": "activities", "t": "2024-01-01T00:00:00+00:00", "i": 1}),
    ],
)
def test_daily_refuses_a_cursor_it_did_not_issue_for_this_range(client_for, cursor):
    response = client_for().get(url("user-a", "daily"), {**RANGE, "cursor": cursor})

    assert response.status_code == 400
    assert response.json()["detail"].startswith("cursor:")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor({"k": "activities", "t": "2024-01-01T00:00:00", "i": 1}),  # naive time
        _cursor({"k": "activities", "t": "2024-01-01T00:00:00+00:00", "i": "1"}),
        _cursor({"k": "activities", "t": "2024-01-01T00:00:00+00:00"}),
        _cursor({"k": "sleep", "t": "2024-01-01T00:00:00+00:00", "i": 1}),
    ],
)
def test_activities_refuse_a_malformed_cursor(client_for, cursor):
    response = client_for().get(url("user-a", "activities"), {**RANGE, "cursor": cursor})

    assert response.status_code == 400
    assert response.json()["detail"].startswith("cursor:")


@pytest.mark.parametrize("endpoint", ["activities", "sleep"])
@pytest.mark.parametrize(
    "moment",
    [
        "9999-12-31T23:59:59.999999-23:59",  # year 10000 in UTC
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
    ],
)
def test_keyset_cursor_whose_time_leaves_the_calendar_in_utc_gets_400_not_500(
    client_for, endpoint, moment
):
    """Found by the fuzz: such a crafted cursor reached the query, which failed (500,
    DataError) for year 10000 and read on from a position never issued for year 0."""
    cursor = _cursor({"k": endpoint, "t": moment, "i": 1})

    response = client_for().get(url("user-a", endpoint), {**RANGE, "cursor": cursor})

    assert response.status_code == 400
    assert response.json()["detail"].startswith("cursor:")


@pytest.mark.parametrize("endpoint", ["activities", "sleep"])
def test_keyset_cursor_at_the_calendars_edge_with_an_offset_reads_on_not_500(client_for, endpoint):
    """Year 1 at -23:59 is a valid instant (23:59 UTC); sent with its offset it made
    Postgres fail (DataError, 500). The cursor's time is compared in UTC."""
    cursor = _cursor({"k": endpoint, "t": "0001-01-01T00:00:00-23:59", "i": 0})

    response = client_for().get(url("user-a", endpoint), {**RANGE, "cursor": cursor})

    assert response.status_code == 200, response.json()


def test_daily_limit_above_366_is_refused_but_366_days_fit_one_page(client_for):
    days = [date(2024, 1, 1) + timedelta(days=n) for n in range(366)]
    DailyReadinessFactory.create_batch(366, day=factory.Iterator(days))
    client = client_for()
    query = {"start": "2024-01-01", "end": "2024-12-31"}

    assert client.get(url("user-a", "daily"), {**query, "limit": 367}).status_code == 400
    body = client.get(url("user-a", "daily"), {**query, "limit": 366}).json()

    assert len(body["data"]) == 366
    assert body["nextCursor"] is None


# --- Pagination ---------------------------------------------------------------------------


def test_daily_pagination_visits_every_day_once_across_tables_with_gaps(client_for):
    readiness_days = {date(2024, 1, d) for d in (1, 2, 3, 7, 8, 20)}
    sleep_days = {date(2024, 1, d) for d in (2, 4, 8, 21, 31)}
    activity_days = {date(2024, 1, d) for d in (5, 8, 9, 31)} | {date(2024, 12, 31)}
    for day in readiness_days:
        DailyReadinessFactory(day=day)
    for day in sleep_days:
        DailySleepFactory(day=day)
    for day in activity_days:
        DailyActivityFactory(day=day)
    DailyReadinessFactory(user_id="user-b", day=date(2024, 1, 6))
    expected = sorted(readiness_days | sleep_days | activity_days)
    client = client_for()

    for limit in (1, 2, 3, 5, 100):
        entries = read_all(client, "user-a", "daily", limit=limit)
        assert [date.fromisoformat(e["day"]) for e in entries] == expected
        for entry in entries:
            day = date.fromisoformat(entry["day"])
            assert (entry["readiness"] is not None) == (day in readiness_days)
            assert (entry["sleep"] is not None) == (day in sleep_days)
            assert (entry["activity"] is not None) == (day in activity_days)


def test_activity_pagination_visits_every_row_once_including_ties_on_start(client_for):
    same_start = datetime(2024, 2, 1, 8, 0, tzinfo=UTC)
    ids = []
    for n in range(7):  # seven rows sharing one start: the id breaks the tie
        ids.append(ActivityFactory(oura_id=f"tie-{n}", day=date(2024, 2, 1), start=same_start))
    for n in range(5):
        ids.append(
            ActivityFactory(
                oura_id=f"s-{n}",
                kind="session",
                day=date(2024, 2, 1 + n),
                start=same_start + timedelta(days=n, minutes=30),
            )
        )
    client = client_for()
    expected = [a.oura_id for a in sorted(ids, key=lambda a: (a.start, a.pk))]

    for limit in (1, 2, 3, 7, 1000):
        entries = read_all(client, "user-a", "activities", limit=limit)
        assert [e["id"] for e in entries] == expected


def test_sleep_period_pagination_visits_every_row_once_including_ties(client_for):
    night = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)
    rows = [
        SleepPeriodFactory(oura_id=f"p-{n}", day=date(2024, 3, 2), bedtime_start=night)
        for n in range(4)
    ] + [
        SleepPeriodFactory(
            oura_id=f"q-{n}",
            day=date(2024, 3, 3 + n),
            bedtime_start=night + timedelta(days=1 + n),
        )
        for n in range(4)
    ]
    expected = [r.oura_id for r in sorted(rows, key=lambda r: (r.bedtime_start, r.pk))]
    client = client_for()

    for limit in (1, 3, 4, 100):
        entries = read_all(client, "user-a", "sleep", limit=limit)
        assert [e["id"] for e in entries] == expected


def test_daily_page_is_one_statement_whatever_the_number_of_days(client_for):
    for n in range(60):
        day = date(2024, 1, 1) + timedelta(days=n)
        DailyReadinessFactory(day=day)
        DailySleepFactory(day=day)
        SleepPeriodFactory(day=day)
        DailyActivityFactory(day=day)
    client = client_for()

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url("user-a", "daily"), {**RANGE, "limit": 366})

    assert len(response.json()["data"]) == 60
    normalized = [q["sql"] for q in queries.captured_queries if "health.oura_" in q["sql"]]
    assert len(normalized) == 1


# --- The daily page's JSON writer ----------------------------------------------------------
#
# Postgres writes the daily page's JSON (selectors.daily_page_json) instead of the pydantic
# models, which stay the source of the schemas. These tests hold the two together.

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "phase-3" / "schemas"


def _rows_of_every_kind() -> None:
    """Days with every part, single parts, blanks, nulls, extra and missing contributor keys,
    sub-second timestamps, NaN and floats that do not round-trip through short decimals."""
    DailyReadinessFactory(
        day=date(2024, 2, 1),
        temperature_deviation=0.1 + 0.2,
        temperature_trend_deviation=float("nan"),
        contributors={"hrv_balance": 64, "not_in_the_contract": 5},
    )
    DailySleepFactory(day=date(2024, 2, 1), score=None, contributors={})
    SleepPeriodFactory(
        day=date(2024, 2, 1),
        type="",
        bedtime_start=datetime(2024, 1, 31, 22, 0, 1, 250_000, tzinfo=UTC),
        average_heart_rate=None,
        average_hrv=1e-7,
    )
    DailyActivityFactory(day=date(2024, 2, 1), average_met_minutes=1.0, steps=None)
    DailySleepFactory(day=date(2024, 2, 2))  # no period at all
    DailyReadinessFactory(day=date(2024, 2, 3), score=None, temperature_deviation=None)
    DailyActivityFactory(day=date(2024, 2, 4), contributors={"stay_active": None})
    for n in range(5):
        DailySleepFactory(day=date(2024, 3, 1) + timedelta(days=n))
        SleepPeriodFactory(day=date(2024, 3, 1) + timedelta(days=n))
    # The daily types of issue #18: with the first three, alone, blanks, nulls and NaN.
    DailyStressFactory(day=date(2024, 2, 1))
    DailyStressFactory(day=date(2024, 2, 5), stress_high=None, day_summary="")
    DailySpO2Factory(day=date(2024, 2, 1), spo2_percentage=0.1 + 0.2)
    DailySpO2Factory(day=date(2024, 2, 6), spo2_percentage=None, breathing_disturbance_index=None)
    DailyResilienceFactory(day=date(2024, 2, 1), stress=float("nan"))
    DailyResilienceFactory(day=date(2024, 3, 2), sleep_recovery=None)
    DailyCardiovascularAgeFactory(day=date(2024, 2, 1), pulse_wave_velocity=7.25)
    DailyCardiovascularAgeFactory(day=date(2024, 2, 7))
    VO2MaxFactory(day=date(2024, 2, 1))
    VO2MaxFactory(day=date(2024, 2, 8), vo2_max=51)


def _pydantic_page(body: dict[str, Any]) -> bytes:
    """The same page the reference way: model instances -> DTOs -> `model_dump_json()`."""

    def main_period(day: date) -> SleepPeriod | None:
        periods = SleepPeriod.objects.filter(user_id="user-a", day=day).exclude(type="deleted")
        return max(
            periods,
            key=lambda p: (p.type == "long_sleep", p.total_sleep_duration or -1, -p.pk),
            default=None,
        )

    entries = []
    for entry in body["data"]:
        day = date.fromisoformat(entry["day"])
        readiness = DailyReadiness.objects.filter(user_id="user-a", day=day).first()
        sleep = DailySleep.objects.filter(user_id="user-a", day=day).first()
        activity = DailyActivity.objects.filter(user_id="user-a", day=day).first()
        period = main_period(day)
        stress = DailyStress.objects.filter(user_id="user-a", day=day).first()
        spo2 = DailySpO2.objects.filter(user_id="user-a", day=day).first()
        resilience = DailyResilience.objects.filter(user_id="user-a", day=day).first()
        cv_age = DailyCardiovascularAge.objects.filter(user_id="user-a", day=day).first()
        vo2_max = VO2Max.objects.filter(user_id="user-a", day=day).first()
        entries.append(
            dtos.OuraDailyEntry(
                day=day,
                readiness=None
                if readiness is None
                else dtos.OuraDailyReadiness.model_validate(readiness),
                sleep=None
                if sleep is None
                else dtos.OuraDailySleep(
                    score=sleep.score,
                    contributors=dtos.OuraSleepContributors.model_validate(sleep.contributors),
                    main_period=None
                    if period is None
                    else dtos.OuraMainSleepPeriod.model_validate(period),
                ),
                activity=None
                if activity is None
                else dtos.OuraDailyActivity.model_validate(activity),
                stress=None if stress is None else dtos.OuraDailyStress.model_validate(stress),
                spo2=None if spo2 is None else dtos.OuraDailySpO2.model_validate(spo2),
                resilience=None
                if resilience is None
                else dtos.OuraDailyResilience(
                    level=resilience.level,
                    contributors=dtos.OuraResilienceContributors.model_validate(resilience),
                ),
                cardiovascular_age=None
                if cv_age is None
                else dtos.OuraDailyCardiovascularAge.model_validate(cv_age),
                vo2_max=None if vo2_max is None else dtos.OuraVO2Max.model_validate(vo2_max),
            )
        )
    page = dtos.OuraDailyPage(data=entries, next_cursor=body["nextCursor"])
    return page.model_dump_json().encode()


def _typed(value: Any) -> Any:
    """A parsed JSON value with every number as a float: `1` and `1.0` are one JSON number,
    which Postgres and pydantic write differently for an integral float."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.mark.parametrize("limit", [3, 366])
def test_daily_page_json_is_what_the_pydantic_models_write(client_for, limit):
    _rows_of_every_kind()

    response = client_for().get(url("user-a", "daily"), {**RANGE, "limit": limit})

    assert response.status_code == 200
    expected = json.loads(_pydantic_page(response.json()))
    # Dumped, so key order counts too; strings (timestamps in pydantic's form) compare as text.
    assert json.dumps(_typed(response.json())) == json.dumps(_typed(expected))


def test_daily_page_json_validates_against_the_dto_json_schemas(client_for):
    _rows_of_every_kind()
    entry_schema = json.loads((SCHEMAS / "oura-daily-entry.json").read_text())
    page_schema = dtos.OuraDailyPage.model_json_schema(mode="serialization")
    checker = Draft202012Validator.FORMAT_CHECKER

    body = client_for().get(url("user-a", "daily"), {**RANGE, "limit": 366}).json()

    assert len(body["data"]) == 13
    Draft202012Validator(page_schema, format_checker=checker).validate(body)
    parts = {
        "readiness": "OuraDailyReadiness", "sleep": "OuraDailySleep",
        "activity": "OuraDailyActivity", "stress": "OuraDailyStress", "spo2": "OuraDailySpO2",
        "resilience": "OuraDailyResilience", "cardiovascularAge": "OuraDailyCardiovascularAge",
        "vo2Max": "OuraVO2Max",
    }  # fmt: skip
    for entry in body["data"]:
        Draft202012Validator(entry_schema, format_checker=checker).validate(entry)
        assert set(entry) == {"day", *parts}
        for part, definition in parts.items():
            if entry[part] is not None:  # every declared key is sent, and nothing else
                declared = entry_schema["$defs"][definition]["properties"]
                assert set(entry[part]) == set(declared)
