"""The bus client: one URL or a cluster's seed list, and a clear failure without any."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import bus

PROJECT = Path(__file__).resolve().parents[2]


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_seed_list_reaches_the_cluster_through_any_live_node(settings) -> None:
    live = os.environ["NATS_URL"]
    settings.NATS_SERVERS = [f"nats://127.0.0.1:{_dead_port()}", live]

    async def connected_to() -> str:
        nc = await bus.connect(name="tests")
        try:
            return str(nc.connected_url.port) if nc.connected_url else ""
        finally:
            await nc.close()

    assert asyncio.run(connected_to()) == live.rsplit(":", 1)[1]


def test_no_nats_url_is_a_clear_bus_error(settings) -> None:
    settings.NATS_SERVERS = []
    with pytest.raises(bus.BusUnavailable, match="NATS_URL is not set"):
        asyncio.run(bus.connect(name="tests"))


def test_nats_url_takes_a_comma_separated_seed_list() -> None:
    env = {**os.environ, "NATS_URL": "nats://n1:4222, nats://n2:4222,nats://n3:4222"}
    result = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), "shell", "-c",
         "from django.conf import settings; print(settings.NATS_SERVERS)"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "['nats://n1:4222', 'nats://n2:4222', 'nats://n3:4222']" in result.stdout
