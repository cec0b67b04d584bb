"""Facade helpers and the management command."""

from __future__ import annotations

import http.client
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oura_simulator import OuraSimulator
from oura_simulator.data import DOCUMENT_TYPES


@pytest.mark.parametrize("dtype", DOCUMENT_TYPES)
def test_put_document_generates_each_type(dtype: str) -> None:
    sim = OuraSimulator()
    user = sim.add_user(history_days=0)
    doc = sim.put_document(user.oura_user_id, dtype, emit=False)
    assert sim.documents(user.oura_user_id, dtype) == [doc]
    assert sim.get_document(user.oura_user_id, dtype, doc["id"]) == doc
    sim.delete_document(user.oura_user_id, dtype, doc["id"], emit=False)
    assert sim.documents(user.oura_user_id, dtype) == []
    with pytest.raises(KeyError):
        sim.delete_document(user.oura_user_id, dtype, doc["id"], emit=False)


def test_override_and_tombstone_generated_history() -> None:
    sim = OuraSimulator()
    user = sim.add_user(history_days=10)
    before = sim.documents(user.oura_user_id, "daily_readiness")
    sim.put_document(user.oura_user_id, "daily_readiness", {**before[3], "score": 1}, emit=False)
    sim.delete_document(user.oura_user_id, "daily_readiness", before[4]["id"], emit=False)
    after = sim.documents(user.oura_user_id, "daily_readiness")
    assert len(after) == 9
    assert after[3]["score"] == 1


def test_management_command_smoke() -> None:
    root = Path(__file__).resolve().parents[2]
    code = (
        "import django; from django.conf import settings;"
        "settings.configure(INSTALLED_APPS=['oura_simulator']); django.setup();"
        "from django.core.management import call_command;"
        "call_command('oura_simulator', '--port', '0', '--seed-users', '2', '--exit-after', '0.2')"
    )
    env = {**os.environ, "OURA_CLIENT_ID": "cmd-client"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "listening on http://127.0.0.1:" in out.stdout
    assert "client_id=cmd-client" in out.stdout
    assert out.stdout.count("  user ") == 2


def _connect(sim: OuraSimulator) -> http.client.HTTPConnection:
    host, port = sim.base_url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=5)


def _get(conn: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response


def test_one_connection_serves_many_requests_as_at_oura() -> None:
    with OuraSimulator() as sim:
        conn = _connect(sim)
        try:
            for _ in range(3):
                response = _get(conn, "/v2/usercollection/daily_sleep")
                assert response.status == 401  # no token
                assert (response.getheader("Connection") or "").lower() != "close"
        finally:
            conn.close()


def test_the_access_log_is_opt_in_and_leaves_out_query_strings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="oura_simulator.app")
    path = "/v2/usercollection/daily_sleep?start_date=2024-01-01"
    for access_log in (False, True):
        sim = OuraSimulator()
        sim.start(access_log=access_log)
        conn = _connect(sim)
        try:
            _get(conn, path)
        finally:
            conn.close()
            sim.stop()
    # One line, from the logged server only: method, path and status, never the query string,
    # which may carry codes and tokens.
    assert [r.getMessage() for r in caplog.records if r.name == "oura_simulator.app"] == [
        "GET /v2/usercollection/daily_sleep 401"
    ]
