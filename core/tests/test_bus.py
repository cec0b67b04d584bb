"""The bus client: one URL or a cluster's seed list, a clear failure without any, and a clean
close when the server has gone."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

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


def _pending(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks(loop) if not task.done()]


@pytest.mark.services
def test_closing_after_nats_went_away_ends_every_task_and_closes_the_loop(stack) -> None:
    """nats-py's close gives up part-way without its server, leaving its subscription
    readers pending. Left on a stopped loop, they would fail later inside a garbage
    collection, in the middle of unrelated code (what broke a CI run on Python 3.11.7)."""
    own = bus.Bus()
    own.ping()  # connected, with the request/reply subscription JetStream calls use
    loop = own._loop
    assert _pending(loop), "a connected client has tasks on its loop"
    stack.stop("nats")
    try:
        own.close()
        assert loop.is_closed()
        assert _pending(loop) == []
        own.close()  # twice is harmless
    finally:
        stack.start("nats")


def test_a_loop_thread_stopped_with_tasks_on_it_cancels_them_first() -> None:
    runner = bus.LoopThread("test-loop")
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), runner.loop).result(5)
    runner.loop.call_soon_threadsafe(runner.loop.create_task, forever())
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), runner.loop).result(5)

    runner.stop()

    assert cancelled.is_set()
    assert runner.loop.is_closed()
    runner.stop()
