"""Recorded fixtures replay through the simulator unchanged (CONTRACT 7.4).

Each fixture is loaded into a user with no synthetic history, then fetched back over HTTP
with the recorded request's own query string; the response must equal the recording.
Provenance matters: vO2_max and tag fixtures are SYNTHETIC/HAND-EDITED (see
_provenance.json), daily_cardiovascular_age is the 2024 id-less shape, and heartrate rows
lack timestamp_unix (2024 behaviour).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from oura_simulator import OuraSimulator, SimulatorConfig

from .conftest import FIXTURES, ApiClient, load_json

PROVENANCE: dict[str, Any] = load_json(FIXTURES / "_provenance.json")
SINGLE = sorted(FIXTURES.glob("*.single.json"))
COLLECTIONS = [
    p
    for p in sorted(FIXTURES.glob("*.json"))
    if p.name.count(".") == 1
    and p.stem not in ("personal_info", "empty_collection", "heartrate", "_provenance")
] + [FIXTURES / "vO2_max.SYNTHETIC.json", FIXTURES / "tag.SYNTHETIC.json"]


def _dtype(path: Path) -> str:
    return path.name.split(".")[0]


@pytest.fixture
def replay() -> Any:
    # 2024-era switches so id-less cardiovascular_age and unix-less heartrate replay as-is.
    sim = OuraSimulator(SimulatorConfig(omit_cardiovascular_age_id=True, omit_timestamp_unix=True))
    sim.start()
    client = ApiClient(sim, sim.add_user(history_days=0))
    yield sim, client
    client.http.close()
    sim.stop()


@pytest.mark.parametrize("path", SINGLE, ids=lambda p: p.name)
def test_single_document_replays(replay: Any, path: Path) -> None:
    sim, client = replay
    doc = load_json(path)
    dtype = _dtype(path)
    sim.put_document(client.user.oura_user_id, dtype, doc, emit=False)
    resp = client.get(f"/v2/usercollection/{dtype}/{doc['id']}")
    assert resp.status_code == 200
    assert resp.json() == doc


@pytest.mark.parametrize("path", COLLECTIONS, ids=lambda p: p.name)
def test_collection_replays_with_recorded_query(replay: Any, path: Path) -> None:
    sim, client = replay
    recorded = load_json(path)
    dtype = _dtype(path)
    for doc in recorded["data"]:
        sim.put_document(client.user.oura_user_id, dtype, doc, emit=False)
    request = (PROVENANCE.get(path.name) or {}).get("request")
    params = dict(parse_qsl(urlsplit(request).query, keep_blank_values=True)) if request else {}
    if "SYNTHETIC" in path.name:  # no real query produced these bodies: cover their days
        days = sorted(d["day"] for d in recorded["data"])
        params = {"start_date": days[0], "end_date": days[-1] + "T23:59:59"}
    resp = client.get(f"/v2/usercollection/{dtype}", **params)
    assert resp.status_code == 200
    assert resp.json() == recorded
    assert resp.headers["content-type"] == "application/json"


def test_personal_info_replays(replay: Any) -> None:
    sim, _ = replay
    recorded = load_json(FIXTURES / "personal_info.json")
    user = sim.add_user(recorded["id"], email=recorded["email"], history_days=0)
    for key in ("age", "weight", "height", "biological_sex"):
        setattr(user, key, recorded[key])
    client = ApiClient(sim, user)
    assert client.get("/v2/usercollection/personal_info").json() == recorded
    client.http.close()


def test_heartrate_2024_replays_across_pages(replay: Any) -> None:
    sim, client = replay
    recorded = load_json(FIXTURES / "heartrate.json")
    assert "timestamp_unix" not in recorded["data"][0]
    for row in recorded["data"]:
        sim.put_document(client.user.oura_user_id, "heartrate", row, emit=False)
    first, last = recorded["data"][0]["timestamp"], recorded["data"][-1]["timestamp"]
    rows = client.collect("/v2/usercollection/heartrate", start_datetime=first, end_datetime=last)
    # 1101 rows at 1000 per page: the 2026 page size splits what 2024 sent in one page.
    assert rows == recorded["data"]


def test_invalid_looking_dates_answer_like_the_recording(api: ApiClient) -> None:
    empty = load_json(FIXTURES / "empty_collection.json")
    assert api.get("/v2/usercollection/sleep", start_date="1", end_date="2").json() == empty
    whole = api.get("/v2/usercollection/daily_readiness", start_date="0024-11-11")
    assert whole.status_code == 200
    assert len(whole.json()["data"]) == 60
