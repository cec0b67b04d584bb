"""A 3-node JetStream cluster: started, found, killed node by node, and ridden over.

The project's client (core.bus) publishes through a seed list while nodes die; streams at R3
lose nothing, store nothing twice (Nats-Msg-Id), and a killed node rejoins when restarted.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, StreamConfig

from core import bus
from devstack.services import pid_alive, port_open
from devstack.stack import Stack

STREAM = "CHAOS_R3"


def devstack_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args, "--root", str(root)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path / "stack", nats_cluster=3)
    stack.up(["nats"])
    try:
        yield stack
    finally:
        stack.down()


def test_a_cluster_is_remembered_survives_a_kill_and_leaves_nothing_behind(
    cluster: Stack,
) -> None:
    root = cluster.root
    nodes = cluster.nats_nodes()
    assert [n.name for n in nodes] == ["n1", "n2", "n3"]
    assert len({p for n in nodes for p in (n.client_port, n.cluster_port, n.monitor_port)}) == 9
    assert cluster.nats_meta_leader() in {"n1", "n2", "n3"}

    # env and status, asked without --nats-cluster, follow what up recorded.
    env = devstack_cli(root, "env").stdout
    seeds = ",".join(f"nats://127.0.0.1:{n.client_port}" for n in nodes)
    assert f"export NATS_URL={seeds}\n" in env
    assert "export NATS_STREAM_REPLICAS=3\n" in env
    status = devstack_cli(root, "status").stdout
    assert "nats      running" in status
    assert status.count(" running  client ") == 3

    # After a kill -9 of a node, up again restarts it on the same ports.
    cluster.kill_nats_node("n2")
    assert not pid_alive(nodes[1].pid)
    assert "nats      stopped" in devstack_cli(root, "status").stdout
    assert Stack(root).up(["nats"])["NATS_URL"] == seeds
    assert [n.client_port for n in cluster.nats_nodes()] == [n.client_port for n in nodes]
    assert all(n.running for n in cluster.nats_nodes())

    # Switching to one server while the cluster runs is refused, not done behind its back.
    refused = devstack_cli(root, "up", "--nats-cluster", "1")
    assert refused.returncode == 2
    assert "stop it first" in refused.stderr

    down = devstack_cli(root, "down")
    assert down.returncode == 0
    after = Stack(root).nats_nodes()
    assert not any(pid_alive(n.pid) for n in after)
    assert not any(port_open(n.client_port) for n in after)


def test_publishes_and_a_pull_consumer_ride_over_the_loss_of_the_leader_and_the_client_node(
    cluster: Stack,
) -> None:
    seeds = cluster.env()["NATS_URL"].split(",")
    loop = asyncio.new_event_loop()

    def run(coro: Any, timeout: float = 5.0) -> Any:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    sent: list[str] = []
    received: list[str] = []
    with override_settings(NATS_SERVERS=seeds):
        bus.reset_bus()
        nc: NatsClient = run(bus.connect(name="test-consumer"))
        try:
            js = nc.jetstream(timeout=5)
            run(js.add_stream(StreamConfig(
                name=STREAM, subjects=["chaos.>"], num_replicas=3, duplicate_window=120.0,
            )))  # fmt: skip
            run(js.add_consumer(STREAM, ConsumerConfig(durable_name="reader", ack_wait=5)))
            sub = run(js.pull_subscribe_bind(durable="reader", stream=STREAM))

            def publish(count: int) -> None:
                # As callers do: retry on BusUnavailable with the same Nats-Msg-Id.
                for _ in range(count):
                    msg_id = f"m-{len(sent)}"
                    deadline = time.monotonic() + 20
                    while True:
                        try:
                            bus.get_bus().publish("chaos.event", {"id": msg_id}, msg_id=msg_id)
                            break
                        except bus.BusUnavailable:
                            assert time.monotonic() < deadline, f"{msg_id} never acknowledged"
                            time.sleep(0.2)
                    sent.append(msg_id)

            def consume_until(total: int) -> None:
                deadline = time.monotonic() + 20
                while len(set(received)) < total:
                    assert time.monotonic() < deadline, f"{len(set(received))}/{total} consumed"
                    try:
                        msgs = run(sub.fetch(50, timeout=1), 3)
                    except Exception:  # timeout, or no responders during the election
                        time.sleep(0.2)
                        continue
                    for msg in msgs:
                        received.append(json.loads(msg.data)["id"])
                        run(msg.ack_sync(timeout=2), 3)

            publish(100)
            consume_until(50)

            leader = cluster.nats_stream_leader(STREAM, timeout=5)
            assert leader is not None
            cluster.kill_nats_node(leader)
            publish(100)
            consume_until(200)
            new_leader = cluster.nats_stream_leader(STREAM, timeout=10)
            assert new_leader not in (None, leader)
            cluster.start_nats_node(leader)

            # Now the node the publisher is connected to (it may lead by now, or not).
            connected = bus.get_bus().connected_url  # set once published
            assert connected is not None
            victim = next(n.name for n in cluster.nats_nodes() if n.client_port == connected.port)
            cluster.kill_nats_node(victim)
            publish(100)
            consume_until(300)
            cluster.start_nats_node(victim)

            # The rejoined node catches up; the leader sees every replica current again.
            deadline = time.monotonic() + 10
            while True:
                info = run(js.stream_info(STREAM))
                replicas = (info.cluster.replicas or []) if info.cluster else []
                if all(r.current for r in replicas) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            bus.reset_bus()
            run(nc.close())
            loop.close()

    assert len(set(sent)) == 300
    assert set(received) == set(sent)  # none lost (a redelivery may repeat one: at-least-once)
    assert info.state.messages == 300  # retried publishes were stored once, by Nats-Msg-Id
    assert info.cluster is not None
    assert {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])} == {
        "n1",
        "n2",
        "n3",
    }
    assert all(r.current for r in info.cluster.replicas or [])
