"""Date semantics, paging, projection, latest (CONTRACT 3.3-3.5)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import time_machine

from oura_simulator import OuraSimulator, SimulatorConfig

from .conftest import ApiClient

# "Now" for every test here: the day and time a fresh clone once failed at (13:30 UTC). The
# history ends that day and the dates below are fixed, so no result depends on the wall clock.
NOW = datetime(2026, 12, 1, 13, 30, tzinfo=UTC)
D = (NOW.date() - timedelta(days=20)).isoformat()
D1 = (date.fromisoformat(D) + timedelta(days=1)).isoformat()


@pytest.fixture
def oura_sim_config() -> SimulatorConfig:
    return SimulatorConfig(history_end=NOW.date().isoformat())


@pytest.fixture(autouse=True)
def _clock_at_now() -> Iterator[None]:
    """The defaults under test (last 24 h, today and yesterday) are relative to the clock,
    which the simulator's server thread reads too: pin it (ticking) at NOW."""
    with time_machine.travel(NOW, tick=True):
        yield


def days(resp_json: dict[str, Any]) -> list[str]:
    return [d["day"] for d in resp_json["data"]]


@pytest.mark.parametrize(
    "dtype",
    [
        "daily_readiness",
        "daily_sleep",
        "daily_stress",
        "daily_spo2",
        "daily_resilience",
        "daily_cardiovascular_age",
        "sleep_time",
    ],
)
def test_midnight_stamped_daily_collections_are_end_inclusive(api: ApiClient, dtype: str) -> None:
    assert days(api.get(f"/v2/usercollection/{dtype}", start_date=D, end_date=D).json()) == [D]
    both = api.get(f"/v2/usercollection/{dtype}", start_date=D, end_date=D1).json()
    assert days(both) == [D, D1]


def test_daily_activity_is_end_exclusive(api: ApiClient) -> None:
    path = "/v2/usercollection/daily_activity"
    assert api.get(path, start_date=D, end_date=D).json()["data"] == []
    assert days(api.get(path, start_date=D, end_date=D1).json()) == [D]
    # The OW workaround: a date-time end includes the whole day (CONTRACT 3.3).
    assert days(api.get(path, start_date=D, end_date=f"{D}T23:59:59").json()) == [D]


def test_workout_and_sleep_filter_on_start_instant(api: ApiClient) -> None:
    for dtype, key in (
        ("workout", "start_datetime"),
        ("sleep", "bedtime_start"),
        ("session", "start_datetime"),
    ):
        docs = api.get(f"/v2/usercollection/{dtype}", start_date=D, end_date=D1).json()["data"]
        lo = datetime.fromisoformat(D).replace(tzinfo=UTC)
        for doc in docs:
            assert lo <= datetime.fromisoformat(doc[key]) <= lo + timedelta(days=1)


def test_documents_helper_matches_http(api: ApiClient) -> None:
    uid = api.user.oura_user_id
    for dtype in ("daily_activity", "sleep", "workout", "daily_readiness"):
        http = api.get(f"/v2/usercollection/{dtype}", start_date=D, end_date=D1).json()["data"]
        assert http == api.sim.documents(uid, dtype, D, D1)


def test_validation_errors(api: ApiClient) -> None:
    path = "/v2/usercollection/daily_sleep"
    impossible = api.get(path, start_date="2026-02-29")
    assert impossible.status_code == 422
    assert impossible.json()["detail"][0]["type"].endswith("parsing")
    reversed_range = api.get(path, start_date=D1, end_date=D)
    assert reversed_range.status_code == 400
    assert D1 in reversed_range.json()["detail"]
    assert api.get(path, start_date="garbage").status_code == 422
    assert api.get(path, next_token="!!!not-a-token").status_code == 400


def test_oldest_first_and_defaults(api: ApiClient) -> None:
    default = api.get("/v2/usercollection/daily_readiness").json()["data"]
    today = NOW.date()
    assert days({"data": default}) == [(today - timedelta(days=1)).isoformat(), today.isoformat()]
    hr = api.get("/v2/usercollection/heartrate").json()["data"]
    stamps = [r["timestamp_unix"] for r in hr]
    assert stamps == sorted(stamps)
    assert stamps[0] >= (datetime.now(UTC) - timedelta(hours=24, seconds=5)).timestamp() * 1000


@pytest.mark.parametrize("resend_params", [True, False])
def test_document_paging_visits_every_row_once(resend_params: bool) -> None:
    sim = OuraSimulator(SimulatorConfig(document_page_size=7))
    sim.start()
    try:
        api = ApiClient(sim, sim.add_user(history_days=60))
        params = {"start_date": "2000-01-01", "end_date": "2100-01-01"}
        ids: list[str] = []
        resp = api.get("/v2/usercollection/daily_sleep", **params).json()
        pages = 1
        while True:
            ids += [d["id"] for d in resp["data"]]
            if not resp["next_token"]:
                break
            query = (
                {**params, "next_token": resp["next_token"]}
                if resend_params
                else {"next_token": resp["next_token"]}
            )
            resp = api.get("/v2/usercollection/daily_sleep", **query).json()
            pages += 1
        expected = [d["id"] for d in sim.documents(api.user.oura_user_id, "daily_sleep")]
        assert ids == expected
        assert len(set(ids)) == 60
        assert pages == 9
        # An empty next_token= is the same as none (CONTRACT 3.3).
        assert (
            api.get("/v2/usercollection/daily_sleep", **params, next_token="").json()["data"][0][
                "id"
            ]
            == expected[0]
        )
    finally:
        sim.stop()


@pytest.mark.parametrize(
    "clock",
    [
        # Times of day (13:30 is when it once failed with 970 rows), and a year boundary.
        "2026-12-01T00:05:00+00:00",
        "2026-12-01T06:30:00+00:00",
        "2026-12-01T13:30:00+00:00",
        "2026-12-01T23:55:00+00:00",
        "2026-12-31T23:55:00+00:00",
        "2027-01-01T00:05:00+00:00",
    ],
)
def test_heartrate_pages_at_1000_rows(oura_sim_config: SimulatorConfig, clock: str) -> None:
    # A fixed three-day window of the pinned history (1356 rows): never the last N hours
    # before the clock, whose row count changes with the time of day.
    start = datetime(2026, 11, 26, tzinfo=UTC)
    end = start + timedelta(days=3)
    params = {"start_datetime": start.isoformat(), "end_datetime": end.isoformat()}
    with time_machine.travel(datetime.fromisoformat(clock), tick=True):
        sim = OuraSimulator(oura_sim_config)
        sim.start()
        api = ApiClient(sim, sim.add_user(history_days=60))
        try:
            first = api.get("/v2/usercollection/heartrate", **params).json()
            rows = api.collect("/v2/usercollection/heartrate", **params)
            expected = sim.documents(api.user.oura_user_id, "heartrate", start, end)
            alone = api.get("/v2/usercollection/heartrate", next_token=first["next_token"])
        finally:
            api.http.close()
            sim.stop()
    assert len(first["data"]) == 1000
    assert first["next_token"]
    assert rows == expected
    assert len(rows) == 1356
    assert len({r["timestamp_unix"] for r in rows}) == len(rows)
    assert alone.json()["data"][0] == rows[1000]


def test_fields_projection(api: ApiClient) -> None:
    doc = api.get(
        "/v2/usercollection/daily_readiness", start_date=D, end_date=D, fields="score,day,bogus"
    ).json()["data"][0]
    assert set(doc) == {"id", "score", "day"}
    full = api.get(
        "/v2/usercollection/daily_readiness", start_date=D, end_date=D, fields="bogus"
    ).json()["data"][0]
    assert "contributors" in full
    row = api.get("/v2/usercollection/heartrate", fields="bpm").json()["data"][0]
    assert set(row) == {"timestamp", "bpm"}


def test_latest_only_on_time_series(api: ApiClient) -> None:
    latest = api.get("/v2/usercollection/heartrate", latest="true").json()
    assert len(latest["data"]) == 1
    everything = api.get("/v2/usercollection/heartrate").json()["data"]
    assert latest["data"][0] == everything[-1]
    battery = api.get("/v2/usercollection/ring_battery_level", latest="true").json()["data"]
    assert len(battery) == 1
    ignored = api.get("/v2/usercollection/daily_sleep", start_date=D, end_date=D1, latest="true")
    assert len(ignored.json()["data"]) == 2


def test_five_years_served_lazily() -> None:
    import time

    sim = OuraSimulator()
    sim.start()
    try:
        api = ApiClient(sim, sim.add_user())
        started = time.perf_counter()
        docs = api.collect(
            "/v2/usercollection/daily_readiness",
            start_date="2000-01-01",
            end_date=NOW.date().isoformat(),
        )
        elapsed = time.perf_counter() - started
        assert 1820 <= len(docs) <= 1830
        assert elapsed < 5, elapsed
        # Nothing was materialised: overrides stay empty, generation is per request.
        assert not sim.store.overrides
    finally:
        sim.stop()


def test_same_user_same_day_is_deterministic() -> None:
    docs = []
    for _ in range(2):
        sim = OuraSimulator(SimulatorConfig(seed=7))
        user = sim.add_user()
        docs.append(
            (
                user.oura_user_id,
                sim.documents(user.oura_user_id, "sleep", D, D1),
                sim.documents(user.oura_user_id, "heartrate", D, D1),
            )
        )
    assert docs[0] == docs[1]
    other = OuraSimulator(SimulatorConfig(seed=8)).add_user("same-id")
    again = OuraSimulator(SimulatorConfig(seed=8)).add_user("same-id")
    assert other.profile == again.profile
