"""OAuth flow details, bearer validation, rate limits and failure injection."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from oura_simulator import OuraSimulator, SimulatorConfig

from .conftest import ApiClient

REDIRECT = "https://app.example/callback"


def authorize(sim: OuraSimulator, prefix: str = "/oauth/authorize", **extra: str) -> dict[str, Any]:
    params = {
        "response_type": "code",
        "client_id": sim.config.client_id,
        "redirect_uri": REDIRECT,
        "state": "st4te",
        "scope": "email personal daily",
        **extra,
    }
    resp = httpx.get(sim.base_url + prefix, params=params)
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def token(
    sim: OuraSimulator, prefix: str = "/oauth/token", auth: Any = None, **form: str
) -> httpx.Response:
    if auth is None:
        form = {
            "client_id": sim.config.client_id,
            "client_secret": sim.config.client_secret,
            **form,
        }
    return httpx.post(sim.base_url + prefix, data=form, auth=auth)


def exchange(sim: OuraSimulator, code: str, **extra: str) -> httpx.Response:
    return token(sim, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, **extra)


def test_authorize_redirect_and_token_response(oura_sim: OuraSimulator) -> None:
    user = oura_sim.add_user()
    q = authorize(oura_sim, scope="extapi:email personal spo2Daily")
    assert q["state"] == "st4te"
    assert q["iss"] == oura_sim.config.issuer
    assert q["scope"] == "extapi:email extapi:personal extapi:spo2"
    resp = exchange(oura_sim, q["code"])
    body = resp.json()
    assert resp.status_code == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 86400
    assert body["id_token"] is None
    assert body["scope"] == "extapi:email extapi:personal extapi:spo2"
    info = httpx.get(
        oura_sim.base_url + "/v2/usercollection/personal_info",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    ).json()
    assert info["id"] == user.oura_user_id
    assert info["email"] == user.email


def test_mirror_routes_and_basic_auth(oura_sim: OuraSimulator) -> None:
    oura_sim.add_user()
    q = authorize(oura_sim, "/oauth/v2/ext/oauth-authorize")
    resp = token(
        oura_sim,
        "/oauth/v2/ext/oauth-token",
        auth=(oura_sim.config.client_id, oura_sim.config.client_secret),
        grant_type="authorization_code",
        code=q["code"],
        redirect_uri=REDIRECT,
    )
    assert resp.status_code == 200
    revoke = httpx.post(
        oura_sim.base_url + "/oauth/v2/ext/oauth-revoke",
        params={"access_token": resp.json()["access_token"]},
    )
    assert revoke.status_code == 200
    assert revoke.json() == {}


def test_code_is_single_use_and_expires(oura_sim: OuraSimulator) -> None:
    oura_sim.add_user()
    code = authorize(oura_sim)["code"]
    assert exchange(oura_sim, code).status_code == 200
    reused = exchange(oura_sim, code)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert set(reused.json()) == {"error", "error_description", "status", "title", "detail"}
    oura_sim.config.auth_code_ttl_s = 0
    late = authorize(oura_sim)["code"]
    time.sleep(0.01)
    assert exchange(oura_sim, late).json()["error"] == "invalid_grant"


def test_refresh_rotation_and_reuse(oura_sim: OuraSimulator) -> None:
    user = oura_sim.add_user()
    first = oura_sim.issue_tokens(user.oura_user_id)
    second = token(oura_sim, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    again = token(oura_sim, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    third = token(
        oura_sim, grant_type="refresh_token", refresh_token=second.json()["refresh_token"]
    )
    assert third.status_code == 200


def test_client_and_grant_errors(oura_sim: OuraSimulator) -> None:
    wrong = httpx.post(
        oura_sim.base_url + "/oauth/token",
        data={"grant_type": "refresh_token", "client_id": "x", "client_secret": "y"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    cc = token(oura_sim, grant_type="client_credentials")
    assert cc.status_code == 400
    assert cc.json()["error"] == "unsupported_grant_type"


def test_denial_and_registered_redirect(oura_sim: OuraSimulator) -> None:
    oura_sim.add_user()
    oura_sim.deny_next_authorization()
    assert authorize(oura_sim) == {"error": "access_denied", "state": "st4te"}
    assert "code" in authorize(oura_sim)
    oura_sim.config.redirect_uris = ["https://elsewhere.example/cb"]
    bad = httpx.get(
        oura_sim.base_url + "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": oura_sim.config.client_id,
            "redirect_uri": REDIRECT,
        },
    )
    assert bad.status_code == 400


def test_set_login_picks_user(oura_sim: OuraSimulator) -> None:
    oura_sim.add_user()
    second = oura_sim.add_user("second-user")
    oura_sim.set_login("second-user")
    access = exchange(oura_sim, authorize(oura_sim)["code"]).json()["access_token"]
    info = httpx.get(
        oura_sim.base_url + "/v2/usercollection/personal_info",
        headers={"Authorization": f"Bearer {access}"},
    ).json()
    assert info["id"] == second.oura_user_id


def test_pkce(oura_sim: OuraSimulator) -> None:
    oura_sim.add_user()
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    pk = {"code_challenge": challenge.decode(), "code_challenge_method": "S256"}
    assert exchange(oura_sim, authorize(oura_sim, **pk)["code"]).status_code == 400
    assert (
        exchange(oura_sim, authorize(oura_sim, **pk)["code"], code_verifier="w" * 50).status_code
        == 400
    )
    ok = exchange(oura_sim, authorize(oura_sim, **pk)["code"], code_verifier=verifier)
    assert ok.status_code == 200


def test_revoke_kills_access_and_refresh(oura_sim: OuraSimulator) -> None:
    api = ApiClient(oura_sim, oura_sim.add_user(history_days=5))
    assert api.get("/v2/usercollection/daily_sleep").status_code == 200
    httpx.get(
        oura_sim.base_url + "/oauth/revoke", params={"access_token": api.tokens["access_token"]}
    )
    assert api.get("/v2/usercollection/daily_sleep").status_code == 401
    assert api.tokens["access_token"] in oura_sim.revoked_tokens
    refresh = token(oura_sim, grant_type="refresh_token", refresh_token=api.tokens["refresh_token"])
    assert refresh.json()["error"] == "invalid_grant"


def test_bearer_failures(oura_sim: OuraSimulator) -> None:
    user = oura_sim.add_user(history_days=5)
    api = ApiClient(oura_sim, user, scopes=["daily", "personal"])
    assert api.get("/v2/usercollection/daily_sleep").status_code == 200
    assert (
        httpx.get(
            oura_sim.base_url + "/v2/usercollection/daily_sleep",
            headers={"Authorization": "Bearer nope"},
        ).status_code
        == 401
    )
    stress = api.get("/v2/usercollection/daily_resilience")
    assert stress.status_code == 401
    assert stress.json() == {"detail": "Token is not authorized access stress scope."}
    assert api.get("/v2/usercollection/daily_spo2").json()["detail"].endswith("spo2 scope.")
    oura_sim.config.missing_scope_mode = "empty"
    assert api.get("/v2/usercollection/daily_spo2").json() == {"data": [], "next_token": None}
    assert api.get("/v2/usercollection/personal_info").json()["email"] is None
    oura_sim.set_membership_lapsed(user.oura_user_id)
    assert api.get("/v2/usercollection/daily_sleep").status_code == 403
    oura_sim.set_membership_lapsed(user.oura_user_id, False)
    oura_sim.expire_access_token(api.tokens["access_token"])
    assert api.get("/v2/usercollection/daily_sleep").status_code == 401
    assert api.get("/v2/usercollection/nope").status_code == 401  # auth before routing


def test_unknown_routes_and_sandbox(api: ApiClient) -> None:
    assert api.get("/v2/usercollection/nope").status_code == 404
    assert api.get("/v2/usercollection/heartrate/some-id").status_code == 404
    sandbox = httpx.get(
        api.sim.base_url + "/v2/sandbox/usercollection/daily_sleep",
        headers={"Authorization": "Bearer whatever"},
    ).json()["data"]
    assert sandbox[0]["id"].startswith("daily_sleep-1-")
    one = httpx.get(
        api.sim.base_url + f"/v2/sandbox/usercollection/daily_sleep/{sandbox[0]['id']}",
        headers={"Authorization": "Bearer whatever"},
    )
    assert one.json() == sandbox[0]
    assert httpx.get(api.sim.base_url + "/v2/sandbox/usercollection/daily_sleep").status_code == 401


def test_a_missing_collection_answers_the_bare_404_and_the_others_are_untouched(
    api: ApiClient,
) -> None:
    assert SimulatorConfig().missing_collections == set()  # every collection by default
    assert api.get("/v2/usercollection/vO2_max").status_code == 200
    api.sim.config.missing_collections = {"vO2_max"}

    for path in ("/v2/usercollection/vO2_max", "/v2/usercollection/vO2_max/some-id"):
        response = api.get(path, start_date="2024-01-01")
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
    sandbox = httpx.get(
        api.sim.base_url + "/v2/sandbox/usercollection/vO2_max",
        headers={"Authorization": "Bearer whatever"},
    )
    assert (sandbox.status_code, sandbox.json()) == (404, {"detail": "Not Found"})
    assert api.get("/v2/usercollection/daily_sleep").status_code == 200
    api.sim.config.missing_collections = set()
    assert api.get("/v2/usercollection/vO2_max").status_code == 200


@pytest.mark.parametrize("tier", ["token", "application"])
def test_rate_limit_429_headers(tier: str) -> None:
    cfg = SimulatorConfig(
        rate_limit_per_token=3 if tier == "token" else 100,
        rate_limit_per_app=3 if tier == "application" else 100,
    )
    with OuraSimulator(cfg) as sim:
        users = [sim.add_user(history_days=2) for _ in range(2)]
        clients = [ApiClient(sim, u) for u in users]
        statuses = [
            clients[i % 2 if tier == "application" else 0]
            .get("/v2/usercollection/daily_sleep")
            .status_code
            for i in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        resp = clients[0].get("/v2/usercollection/daily_sleep")
        assert resp.status_code == 429
        assert resp.json() == {"detail": "Rate limit exceeded"}
        assert resp.headers["X-RateLimit-Tier"] == tier
        assert resp.headers["X-RateLimit-Limit"] == "3"
        assert resp.headers["X-RateLimit-Window"] == "300"
        assert int(resp.headers["Retry-After"]) >= 1
        assert int(resp.headers["X-RateLimit-Reset"]) > time.time()
        per_window = [r for r in sim.requests if r.path == "/v2/usercollection/daily_sleep"]
        assert len(per_window) == 5
        assert [r.status for r in per_window][-1] == 429


def test_forced_statuses_and_error_rate(api: ApiClient) -> None:
    api.sim.config.force_next_statuses = [429, 500, 503]
    got = [api.get("/v2/usercollection/daily_sleep") for _ in range(4)]
    assert [r.status_code for r in got] == [429, 500, 503, 200]
    assert got[0].headers["X-RateLimit-Tier"] == "token"
    api.sim.config.error_rate = 1.0
    assert api.get("/v2/usercollection/daily_sleep").status_code in (500, 502, 503)
    api.sim.config.error_rate = 0.0


def test_error_rate_is_seeded() -> None:
    runs = []
    for _ in range(2):
        with OuraSimulator(SimulatorConfig(error_rate=0.5, seed=3)) as sim:
            api = ApiClient(sim, sim.add_user(history_days=2))
            runs.append([api.get("/v2/usercollection/daily_sleep").status_code for _ in range(12)])
    assert runs[0] == runs[1]
    assert 200 in runs[0]
    assert any(s >= 500 for s in runs[0])


def test_latency_and_timeout_injection(api: ApiClient) -> None:
    api.sim.config.latency_ms = 150
    started = time.perf_counter()
    api.get("/v2/usercollection/daily_sleep")
    assert time.perf_counter() - started >= 0.15
    api.sim.config.latency_ms = 0
    api.sim.config.timeout_rate, api.sim.config.timeout_hang_s = 1.0, 0.5
    with pytest.raises(httpx.ReadTimeout):
        api.http.get(
            "/v2/usercollection/daily_sleep",
            timeout=0.2,
            headers={"Authorization": f"Bearer {api.tokens['access_token']}"},
        )
    api.sim.config.timeout_rate = 0.0
