"""Shared helpers for the simulator's own tests.

The fixtures are imported (not registered with ``pytest_plugins``) so this package runs on
its own today and keeps working once the project's root conftest registers
``oura_simulator.pytest_plugin`` globally: a conftest-level fixture simply shadows the
plugin's identical one instead of registering the plugin twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oura_simulator import OuraSimulator, SimUser
from oura_simulator.pytest_plugin import (  # noqa: F401  re-exported fixtures
    oura_sim,
    oura_sim_config,
    oura_webhook_receiver,
)

CONTRACT_DIR = Path(__file__).parent / "contract_data"
FIXTURES = CONTRACT_DIR / "fixtures"


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


class ApiClient:
    """httpx client bound to one user's bearer token."""

    def __init__(self, sim: OuraSimulator, user: SimUser, scopes: list[str] | None = None) -> None:
        self.sim = sim
        self.user = user
        self.tokens = sim.issue_tokens(user.oura_user_id, scopes)
        self.http = httpx.Client(base_url=sim.base_url, timeout=30)

    def get(self, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens['access_token']}"}
        return self.http.get(path, params=params, headers=headers)

    def collect(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Follow next_token until exhausted, resending the original params."""
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        token = None
        while True:
            query = dict(params)
            if token:
                query["next_token"] = token
            resp = self.get(path, **query)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            rows.extend(body["data"])
            token = body.get("next_token")
            if not token:
                return rows
            assert token not in seen, "next_token cycle"
            seen.add(token)


@pytest.fixture
def api(oura_sim: OuraSimulator) -> Iterator[ApiClient]:  # noqa: F811  re-exported fixture
    client = ApiClient(oura_sim, oura_sim.add_user(history_days=60))
    yield client
    client.http.close()
