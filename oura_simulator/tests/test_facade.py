"""Facade helpers and the management command."""

from __future__ import annotations

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
