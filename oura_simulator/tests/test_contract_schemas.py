"""Every response shape the simulator serves validates against openapi-1.37.json.

Routes are discovered by walking the spec, so a route added to the spec cannot be skipped
silently: the final test asserts that every spec route was exercised here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]  # no stubs installed
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from oura_simulator import OuraSimulator, SimulatorConfig
from oura_simulator.testing import WebhookReceiver

from .conftest import CONTRACT_DIR, ApiClient, load_json

SPEC: dict[str, Any] = load_json(CONTRACT_DIR / "openapi-1.37.json")
_SPEC_URI = "urn:oura:openapi-1.37"
_REGISTRY: Registry = Registry().with_resource(
    _SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
EXERCISED: set[tuple[str, str]] = set()


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    # Rebase local "#/components/..." refs onto the registered spec document.
    def rebase(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (_SPEC_URI + v if k == "$ref" and v.startswith("#") else rebase(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rebase(x) for x in node]
        return node

    return Draft202012Validator(rebase(schema), registry=_REGISTRY)


def component(name: str) -> Draft202012Validator:
    return _validator({"$ref": f"#/components/schemas/{name}"})


def success_schema(path: str, method: str) -> dict[str, Any]:
    responses = SPEC["paths"][path][method]["responses"]
    code = next(c for c in ("200", "201") if c in responses)
    schema: dict[str, Any] = responses[code]["content"]["application/json"]["schema"]
    # 200 schemas are anyOf[typed model, loose Dict]; the typed branch is the real check.
    if "anyOf" in schema:
        return dict(schema["anyOf"][0])
    return schema


def assert_valid(path: str, method: str, body: Any) -> None:
    errors = list(_validator(success_schema(path, method)).iter_errors(body))
    assert not errors, f"{method.upper()} {path}: {errors[0].message} at {list(errors[0].path)}"
    EXERCISED.add((method, path))


def usercollection_routes() -> list[str]:
    return sorted(p for p in SPEC["paths"] if "/usercollection/" in p)


NOW = datetime(2026, 12, 1, 13, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def world() -> Any:
    # One module-wide simulator keeps this spec walk fast (~70 routes).
    # The windows below are relative to "now": pin it (ticking) and end the history that
    # day, so what each route returns is the same on any date and at any time of day.
    with time_machine.travel(NOW, tick=True):
        cfg = SimulatorConfig(
            history_days=400, include_producer_timestamp=True, history_end=NOW.date().isoformat()
        )
        sim = OuraSimulator(cfg)
        sim.start()
        client = ApiClient(sim, sim.add_user(history_days=400))
        yield sim, client
        client.http.close()
        sim.stop()


def _list_params(path: str) -> dict[str, str]:
    names = {p["name"] for p in SPEC["paths"][path]["get"].get("parameters", [])}
    today = datetime.now(UTC).date()
    if "start_datetime" in names:
        end = datetime.now(UTC)
        return {
            "start_datetime": (end - timedelta(hours=30)).isoformat(),
            "end_datetime": end.isoformat(),
        }
    if "start_date" in names:
        # Sparse types need a long window to contain anything; dense ones stay short so
        # schema validation of 1440-item MET arrays does not dominate the run.
        sparse = any(t in path for t in ("rest_mode_period", "tag", "vO2_max", "session"))
        back = 399 if sparse else 10
        return {
            "start_date": (today - timedelta(days=back)).isoformat(),
            "end_date": today.isoformat(),
        }
    return {}


@pytest.mark.parametrize("path", usercollection_routes())
def test_usercollection_route_matches_spec(world: Any, path: str) -> None:
    client: ApiClient = world[1]
    sandbox = "/sandbox/" in path
    headers = {"Authorization": "Bearer any-string-works"} if sandbox else None

    def get(url: str, params: dict[str, str] | None = None) -> httpx.Response:
        if sandbox:
            return client.http.get(url, params=params, headers=headers)
        return client.get(url, **(params or {}))

    if path.endswith("{document_id}"):
        list_path = path.rsplit("/", 1)[0]
        listing = get(list_path, _list_params(list_path))
        assert listing.status_code == 200
        docs = listing.json()["data"]
        assert docs, f"no generated documents for {list_path}"
        resp = get(path.replace("{document_id}", docs[-1]["id"]))
        assert resp.status_code == 200, resp.text
        assert resp.json() == docs[-1]
        missing = get(path.replace("{document_id}", "not-existing"))
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Document not found."}
    else:
        resp = get(path, _list_params(path))
        assert resp.status_code == 200, resp.text
        if "personal_info" not in path:
            assert resp.json()["data"], f"{path} served no data"
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["cache-control"] == "no-cache"
    assert len(resp.headers["x-trace-id"]) == 32
    assert_valid(path, "get", resp.json())


def test_sandbox_has_no_personal_info(world: Any) -> None:
    _sim, client = world
    resp = client.http.get(
        "/v2/sandbox/usercollection/personal_info", headers={"Authorization": "Bearer x"}
    )
    assert resp.status_code == 404


def test_webhook_routes_match_spec(world: Any) -> None:
    sim, _client = world
    receiver = WebhookReceiver()
    url = receiver.start()
    creds = {"x-client-id": sim.config.client_id, "x-client-secret": sim.config.client_secret}
    try:
        with httpx.Client(base_url=sim.base_url, headers=creds) as http:
            body = {
                "callback_url": url,
                "verification_token": receiver.verification_token,
                "event_type": "create",
                "data_type": "vo2_max",
            }
            created = http.post("/v2/webhook/subscription", json=body)
            assert created.status_code == 201, created.text
            assert_valid("/v2/webhook/subscription", "post", created.json())
            sub_id = created.json()["id"]
            listing = http.get("/v2/webhook/subscription")
            assert_valid("/v2/webhook/subscription", "get", listing.json())
            one = http.get(f"/v2/webhook/subscription/{sub_id}")
            assert_valid("/v2/webhook/subscription/{id}", "get", one.json())
            upd = http.put(
                f"/v2/webhook/subscription/{sub_id}",
                json={"verification_token": receiver.verification_token, "event_type": "update"},
            )
            assert_valid("/v2/webhook/subscription/{id}", "put", upd.json())
            renewed = http.put(f"/v2/webhook/subscription/renew/{sub_id}")
            assert_valid("/v2/webhook/subscription/renew/{id}", "put", renewed.json())
            bad = http.post("/v2/webhook/subscription", json={**body, "data_type": "heartrate"})
            assert bad.status_code == 422
            assert not list(component("HTTPValidationError").iter_errors(bad.json()))
            deleted = http.delete(f"/v2/webhook/subscription/{sub_id}")
            assert deleted.status_code == 204
            assert deleted.content == b""
            EXERCISED.add(("delete", "/v2/webhook/subscription/{id}"))
    finally:
        receiver.stop()


def test_error_bodies_match_spec(world: Any) -> None:
    _sim, client = world
    bad = client.get("/v2/usercollection/daily_sleep", start_date="2026-02-29")
    assert bad.status_code == 422
    assert not list(component("HTTPValidationError").iter_errors(bad.json()))
    assert bad.json()["detail"][0]["loc"][:2] == ["query", "start_date"]
    bool_err = client.get("/v2/usercollection/heartrate", latest="maybe")
    assert bool_err.status_code == 422
    assert not list(component("HTTPValidationError").iter_errors(bool_err.json()))
    assert client.get("/v2/usercollection/sleep/nope").json() == load_json(
        CONTRACT_DIR / "fixtures/errors/404_document_not_found.json"
    )


def test_token_response_shape(world: Any) -> None:
    sim, _client = world
    documented = load_json(CONTRACT_DIR / "fixtures/oauth/token_response.observed-2026-07.json")
    body = sim.issue_tokens(sim.users[0].oura_user_id)
    assert set(body) == set(documented)
    assert body["token_type"] == "bearer"
    assert body["id_token"] is None
    assert isinstance(body["expires_in"], int)
    assert all(s.startswith("extapi:") for s in body["scope"].split())


def test_every_spec_route_was_exercised() -> None:
    """Runs last in this module (pytest keeps file order)."""
    spec_routes = {(m, p) for p, ops in SPEC["paths"].items() for m in ops}
    missing = spec_routes - EXERCISED
    assert not missing, f"spec routes without a contract test: {sorted(missing)}"
