"""REST v1 reads of the types of issue #18: the grown daily entry, sleep time, tags and rest
mode periods. Values, access control, validation and pagination, as test_read_api.py does for
the first types."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from normalized.tests.factories import (
    DailyCardiovascularAgeFactory,
    DailyReadinessFactory,
    DailyResilienceFactory,
    DailySpO2Factory,
    DailyStressFactory,
    RestModePeriodFactory,
    SleepTimeFactory,
    TagFactory,
    VO2MaxFactory,
)

pytestmark = pytest.mark.django_db

NEW_ENDPOINTS = ["sleep_time", "tags", "rest_mode_periods"]
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


# --- The daily entry ----------------------------------------------------------------------


def test_daily_entry_carries_every_daily_type_in_camel_case_after_the_first_three(client_for):
    day = date(2024, 3, 1)
    DailyReadinessFactory(day=day)
    DailyStressFactory(day=day, stress_high=1800, recovery_high=9900, day_summary="restored")
    DailySpO2Factory(day=day, spo2_percentage=96.153, breathing_disturbance_index=6)
    DailyResilienceFactory(
        day=day, level="solid", sleep_recovery=46.7, daytime_recovery=49.8, stress=33.9
    )
    DailyCardiovascularAgeFactory(day=day, vascular_age=35, pulse_wave_velocity=None)
    VO2MaxFactory(day=day, vo2_max=62)

    body = client_for().get(url("user-a", "daily"), RANGE).json()

    (entry,) = body["data"]
    # The first parts keep their keys and places; the new ones follow.
    assert list(entry) == [
        "day", "readiness", "sleep", "activity", "stress", "spo2", "resilience",
        "cardiovascularAge", "vo2Max",
    ]  # fmt: skip
    assert entry["stress"] == {"stressHigh": 1800, "recoveryHigh": 9900, "daySummary": "restored"}
    assert entry["spo2"] == {"spo2Percentage": 96.153, "breathingDisturbanceIndex": 6}
    assert entry["resilience"] == {
        "level": "solid",
        "contributors": {"sleepRecovery": 46.7, "daytimeRecovery": 49.8, "stress": 33.9},
    }
    assert entry["cardiovascularAge"] == {"vascularAge": 35, "pulseWaveVelocity": None}
    assert entry["vo2Max"] == {"vo2Max": 62}
    assert (entry["sleep"], entry["activity"]) == (None, None)


def test_a_day_with_only_a_new_daily_type_is_an_entry_with_the_others_null(client_for):
    DailyStressFactory(day=date(2024, 4, 1), stress_high=None, day_summary="")
    VO2MaxFactory(day=date(2024, 4, 2))

    body = client_for().get(url("user-a", "daily"), RANGE).json()

    first, second = body["data"]
    assert first["day"] == "2024-04-01"
    assert first["stress"] == {"stressHigh": None, "recoveryHigh": 7200, "daySummary": None}
    assert [first[k] for k in ("readiness", "sleep", "activity", "vo2Max")] == [None] * 4
    assert second["day"] == "2024-04-02"
    assert second["stress"] is None


def test_daily_pagination_visits_every_day_once_across_all_daily_tables(client_for):
    factories = [
        DailyReadinessFactory, DailyStressFactory, DailySpO2Factory, DailyResilienceFactory,
        DailyCardiovascularAgeFactory, VO2MaxFactory,
    ]  # fmt: skip
    days_of: dict[Any, set[date]] = {}
    for index, make in enumerate(factories):
        # Each table on its own days, overlapping the others' in places.
        days = {date(2024, 1, 1) + timedelta(days=index * 3 + step * 5) for step in range(4)}
        days_of[make] = days
        for day in days:
            make(day=day)
    DailyStressFactory(user_id="user-b", day=date(2024, 1, 2))
    expected = sorted(set().union(*days_of.values()))
    client = client_for()

    for limit in (1, 2, 7, 366):
        entries = read_all(client, "user-a", "daily", limit=limit)
        assert [date.fromisoformat(e["day"]) for e in entries] == expected
        for entry in entries:
            day = date.fromisoformat(entry["day"])
            assert (entry["stress"] is not None) == (day in days_of[DailyStressFactory])
            assert (entry["vo2Max"] is not None) == (day in days_of[VO2MaxFactory])


def test_daily_page_with_every_daily_type_is_still_one_statement(client_for):
    for n in range(30):
        day = date(2024, 1, 1) + timedelta(days=n)
        for make in (DailyStressFactory, DailySpO2Factory, DailyResilienceFactory,
                     DailyCardiovascularAgeFactory, VO2MaxFactory):  # fmt: skip
            make(day=day)
    client = client_for()

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url("user-a", "daily"), {**RANGE, "limit": 366})

    assert len(response.json()["data"]) == 30
    assert len([q for q in queries.captured_queries if "oura_" in q["sql"]]) == 1


def test_daily_reads_of_the_new_tables_are_index_only_scans() -> None:
    """The unique (user_id, day) constraints INCLUDE what the page reads (migration 0004)."""
    from normalized.selectors import DAILY_PAGE_SQL

    for n in range(3):
        DailyStressFactory(day=date(2024, 1, 1) + timedelta(days=n))
        VO2MaxFactory(day=date(2024, 1, 1) + timedelta(days=n))
    params: dict[str, str | date | int] = {
        "user_id": "user-a", "start": date(2024, 1, 1), "end": date(2024, 12, 31),
        "limit": 100, "fetch": 101,
    }  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # tiny tables would be seq-scanned
        cursor.execute("EXPLAIN " + DAILY_PAGE_SQL, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    for table, index in [
        ("oura_daily_stress", "daily_stress_user_day_uniq"),
        ("oura_daily_spo2", "daily_spo2_user_day_uniq"),
        ("oura_daily_resilience", "daily_resilience_user_day_uniq"),
        ("oura_daily_cardiovascular_age", "daily_cv_age_user_day_uniq"),
        ("oura_vo2_max", "vo2_max_user_day_uniq"),
    ]:
        assert f"Index Only Scan using {index} on {table}" in plan, plan


# --- Sleep time, tags, rest mode: values --------------------------------------------------


def test_sleep_time_lists_each_day_with_its_window_or_null(client_for):
    SleepTimeFactory(
        oura_id="st-1",
        day=date(2024, 5, 1),
        optimal_bedtime={"day_tz": 7200, "start_offset": -3600, "end_offset": 1800},
        recommendation="follow_optimal_bedtime",
        status="optimal_found",
    )
    SleepTimeFactory(oura_id="st-2", day=date(2024, 5, 2), recommendation="", status="")
    SleepTimeFactory(oura_id="other", user_id="user-b", day=date(2024, 5, 1))
    SleepTimeFactory(oura_id="outside", day=date(2025, 1, 1))

    body = client_for().get(url("user-a", "sleep_time"), RANGE).json()

    assert body == {
        "data": [
            {
                "id": "st-1",
                "day": "2024-05-01",
                "optimalBedtime": {"dayTz": 7200, "startOffset": -3600, "endOffset": 1800},
                "recommendation": "follow_optimal_bedtime",
                "status": "optimal_found",
            },
            {
                "id": "st-2",
                "day": "2024-05-02",
                "optimalBedtime": None,
                "recommendation": None,
                "status": None,
            },
        ],
        "nextCursor": None,
    }


def test_tags_list_enhanced_and_plain_tags_by_start_with_their_kind(client_for):
    TagFactory(
        oura_id="e1",
        day=date(2024, 8, 5),
        start=datetime(2024, 8, 5, 18, 15, 1, tzinfo=UTC),
        end=datetime(2024, 8, 6, 6, 0, tzinfo=UTC),
        end_day=date(2024, 8, 6),
        tag_type_code="custom",
        custom_name="Sauna",
        comment="hot",
    )
    TagFactory(
        oura_id="p1",
        kind="tag",
        day=date(2024, 8, 5),
        start=datetime(2024, 8, 5, 10, 0, tzinfo=UTC),
        tag_type_code="",
        comment="Morning workout",
        tags=["tag_generic_workout"],
    )
    TagFactory(oura_id="other", user_id="user-b", day=date(2024, 8, 5))

    body = client_for().get(url("user-a", "tags"), RANGE).json()

    assert body == {
        "data": [
            {
                "id": "p1",
                "kind": "tag",
                "day": "2024-08-05",
                "start": "2024-08-05T10:00:00Z",
                "end": None,
                "endDay": None,
                "tagTypeCode": None,
                "customName": None,
                "comment": "Morning workout",
                "tags": ["tag_generic_workout"],
            },
            {
                "id": "e1",
                "kind": "enhanced_tag",
                "day": "2024-08-05",
                "start": "2024-08-05T18:15:01Z",
                "end": "2024-08-06T06:00:00Z",
                "endDay": "2024-08-06",
                "tagTypeCode": "custom",
                "customName": "Sauna",
                "comment": "hot",
                "tags": [],
            },
        ],
        "nextCursor": None,
    }


def test_rest_mode_periods_overlapping_the_range_are_listed_with_their_episodes(client_for):
    RestModePeriodFactory(
        oura_id="before-and-into",
        day=date(2023, 12, 28),
        end_day=date(2024, 1, 2),
        start_time=datetime(2023, 12, 28, 10, 0, tzinfo=UTC),
        end_time=datetime(2024, 1, 2, 11, 45, 56, tzinfo=UTC),
        episodes=[{"tags": ["tag_generic_cold"], "timestamp": "2023-12-28T10:00:00+01:00"}],
    )
    RestModePeriodFactory(oura_id="still-on", day=date(2024, 6, 1), end_day=None, end_time=None)
    RestModePeriodFactory(oura_id="ended-before", day=date(2023, 11, 1), end_day=date(2023, 12, 31))
    RestModePeriodFactory(oura_id="starts-after", day=date(2025, 1, 1))

    body = client_for().get(url("user-a", "rest_mode_periods"), RANGE).json()

    assert [p["id"] for p in body["data"]] == ["before-and-into", "still-on"]
    first, ongoing = body["data"]
    assert first == {
        "id": "before-and-into",
        "startDay": "2023-12-28",
        "endDay": "2024-01-02",
        "startTime": "2023-12-28T10:00:00Z",
        "endTime": "2024-01-02T11:45:56Z",
        "episodes": [{"tags": ["tag_generic_cold"], "timestamp": "2023-12-28T10:00:00+01:00"}],
    }
    assert (ongoing["endDay"], ongoing["endTime"]) == (None, None)


# --- Access -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [*NEW_ENDPOINTS, "daily"])
def test_key_for_user_a_gets_the_same_404_for_user_b_and_for_an_unknown_user(client_for, endpoint):
    SleepTimeFactory(user_id="user-b", day=date(2024, 1, 1))
    TagFactory(user_id="user-b")
    RestModePeriodFactory(user_id="user-b")
    DailyStressFactory(user_id="user-b", day=date(2024, 1, 1))
    client = client_for(users=("user-a",))

    existing = client.get(url("user-b", endpoint), RANGE)
    unknown = client.get(url("nobody", endpoint), RANGE)
    invalid = client.get(url("user-b", endpoint), {"start": "nope", "cursor": "x"})

    assert existing.status_code == unknown.status_code == invalid.status_code == 404
    assert existing.json() == unknown.json() == invalid.json()
    assert existing.json() == {"error": "not_found", "detail": "Not found."}
    assert client.get(url("user-a", endpoint), RANGE).status_code == 200


@pytest.mark.parametrize("endpoint", NEW_ENDPOINTS)
def test_missing_key_gets_401_and_a_key_without_health_read_gets_403(
    api_client, client_for, endpoint
):
    anonymous = api_client.get(url("user-a", endpoint), RANGE)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthenticated"

    response = client_for(scopes=("health:sync", "health:connect")).get(
        url("user-a", endpoint), RANGE
    )

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


# --- Validation ---------------------------------------------------------------------------


def _cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize("endpoint", NEW_ENDPOINTS)
@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"end": "2024-01-31"}, "start"),
        ({"start": "2024-01-01"}, "end"),
        ({"start": "20240101", "end": "2024-01-31"}, "start"),
        ({"start": "2024-01-01", "end": "2024-02-30"}, "end"),
        ({"start": "2024-02-01", "end": "2024-01-31"}, "end"),
        ({"start": "2024-01-01", "end": "2025-01-01"}, "end"),  # 367 days
        ({"start": "2024-01-01'; DROP TABLE health.oura_tags; --", "end": "2024-01-31"}, "start"),
        ({**RANGE, "limit": "0"}, "limit"),
        ({**RANGE, "limit": "1001"}, "limit"),
        ({**RANGE, "limit": "-1"}, "limit"),
        ({**RANGE, "limit": ""}, "limit"),
        ({**RANGE, "cursor": ""}, "cursor"),
        ({**RANGE, "cursor": "not a cursor"}, "cursor"),
        ({**RANGE, "cursor": _cursor(["a"])}, "cursor"),
        ({**RANGE, "cursor": _cursor({"k": "daily", "d": "2024-01-02"})}, "cursor"),
        ({**RANGE, "cursor": _cursor({"k": "x", "t": "2024-01-01T00:00:00Z", "i": 1})}, "cursor"),
    ],
)  # fmt: skip
def test_bad_query_gets_400_naming_the_parameter(client_for, endpoint, query, parameter):
    response = client_for().get(url("user-a", endpoint), query)

    assert response.status_code == 400
    body = response.json()
    assert {"error", "detail"} <= set(body) <= {"error", "detail", "fields"}
    assert body["error"] == "invalid_request"
    assert body["detail"].startswith(f"{parameter}:")


@pytest.mark.parametrize(
    ("endpoint", "position"),
    [
        ("sleep_time", {"d": "2024-01-01", "i": "1"}),
        ("sleep_time", {"d": "2024-01-01", "i": True}),
        ("sleep_time", {"d": "yesterday", "i": 1}),
        ("sleep_time", {"d": "2024-01-01"}),
        ("rest_mode_periods", {"d": 20240101, "i": 1}),
        ("tags", {"t": "2024-01-01T00:00:00", "i": 1}),  # naive time
        ("tags", {"t": "9999-12-31T23:59:59.999999-23:59", "i": 1}),  # year 10000 in UTC
    ],
)
def test_a_malformed_cursor_of_the_endpoints_own_kind_gets_400(client_for, endpoint, position):
    kind = {"sleep_time": "sleep_time", "tags": "tags", "rest_mode_periods": "rest_mode_periods"}
    cursor = _cursor({"k": kind[endpoint], **position})

    response = client_for().get(url("user-a", endpoint), {**RANGE, "cursor": cursor})

    assert response.status_code == 400
    assert response.json()["detail"].startswith("cursor:")


@pytest.mark.parametrize("endpoint", ["sleep_time", "rest_mode_periods"])
def test_a_day_cursor_with_an_id_beyond_bigint_reads_an_empty_page_not_500(client_for, endpoint):
    cursor = _cursor({"k": endpoint, "d": "2024-01-01", "i": 10**30})

    response = client_for().get(url("user-a", endpoint), {**RANGE, "cursor": cursor})

    assert response.status_code == 200, response.json()


# --- Pagination ---------------------------------------------------------------------------


def test_sleep_time_pagination_visits_every_row_once_including_ties_on_day(client_for):
    rows = [SleepTimeFactory(oura_id=f"same-{n}", day=date(2024, 2, 1)) for n in range(4)]
    rows += [SleepTimeFactory(oura_id=f"d-{n}", day=date(2024, 2, 2 + n)) for n in range(4)]
    expected = [r.oura_id for r in sorted(rows, key=lambda r: (r.day, r.pk))]
    client = client_for()

    for limit in (1, 3, 4, 1000):
        assert [e["id"] for e in read_all(client, "user-a", "sleep_time", limit=limit)] == expected


def test_tag_pagination_visits_every_row_once_including_ties_on_start(client_for):
    moment = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    rows = [TagFactory(oura_id=f"tie-{n}", day=date(2024, 3, 1), start=moment) for n in range(5)]
    later = [moment + timedelta(days=1, minutes=n) for n in range(3)]
    rows += [
        TagFactory(oura_id=f"p-{n}", kind="tag", day=date(2024, 3, 2), start=start)
        for n, start in enumerate(later)
    ]
    expected = [r.oura_id for r in sorted(rows, key=lambda r: (r.start, r.pk))]
    client = client_for()

    for limit in (1, 2, 5, 1000):
        assert [e["id"] for e in read_all(client, "user-a", "tags", limit=limit)] == expected


def test_rest_mode_pagination_visits_every_row_once(client_for):
    rows = [
        RestModePeriodFactory(oura_id=f"r-{n}", day=date(2024, 4, 1 + n // 2)) for n in range(7)
    ]
    expected = [r.oura_id for r in sorted(rows, key=lambda r: (r.day, r.pk))]
    client = client_for()

    for limit in (1, 2, 3, 100):
        entries = read_all(client, "user-a", "rest_mode_periods", limit=limit)
        assert [e["id"] for e in entries] == expected
