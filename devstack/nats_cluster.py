"""A JetStream cluster of real `nats-server` processes, run the way production runs the bus.

`python -m devstack up --nats-cluster 3` starts it in place of the single server. Node
n1..nN lives in `<root>/nats-cluster/<node>/`: its store, config, log, and a state file with
its pid and its three ports (client, cluster route, monitoring). The ports are chosen once,
when no node runs, and kept: the seed list handed out as NATS_URL and the routes between the
nodes stay valid across a node's kill and restart.

Leaders are read from the servers themselves:

- the meta leader (the node that creates and places streams) from every live node's
  monitoring endpoint `/jsz` (`meta_cluster.leader`). It counts as known only when all live
  nodes name the same live node: just after a loss, survivors can still name the dead one.
- a stream's leader from the JetStream API, `$JS.API.STREAM.INFO.<stream>` (`cluster.leader`
  of the answer), which the stream's own leader answers: what clients act on.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors

from devstack.services import (
    STARTUP_TIMEOUT_S,
    NatsService,
    ServiceError,
    ServiceState,
    free_port,
    monitor_status,
    pid_alive,
    port_open,
)

CLUSTER_NAME = "devstack"

T = TypeVar("T")


@dataclass(frozen=True)
class NatsNodeInfo:
    name: str
    pid: int
    client_port: int
    cluster_port: int
    monitor_port: int
    running: bool

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


class NatsNode(NatsService):
    """One server of the cluster. Its ports are assigned by the cluster before it starts."""

    def __init__(self, cluster: NatsCluster, node_name: str) -> None:
        self.cluster = cluster
        self.node_name = node_name
        self.folder = cluster.folder / node_name
        self.state_file = self.folder / "state.json"
        self.log_file = self.folder / "server.log"

    def assigned(self) -> ServiceState:
        state = self.read_state()
        if state is None or not state.cluster_port:
            raise ServiceError(
                f"nats {self.node_name} has no ports in {self.folder}; start it first"
            )
        return state

    def pid(self) -> int | None:
        state = self.read_state()
        # pid 0 (never started) must not reach kill(0, ...), which means "my process group".
        return state.pid if state is not None and state.pid > 0 else None

    def alive(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def launch_if_dead(self) -> None:
        """Start this node's process on its assigned ports unless it already runs."""
        if self.alive():
            return
        state = self.assigned()
        busy = [p for p in (state.port, state.cluster_port, state.extra_port) if port_open(p)]
        if busy:
            raise ServiceError(
                f"nats {self.node_name}: port(s) {', '.join(map(str, busy))} are taken by "
                "another process; `python -m devstack down` then `up` chooses new ones"
            )
        pid = self.launch(state.port, state.extra_port)
        self.write_state(replace(state, pid=pid))

    def launch(self, port: int, extra_port: int) -> int:
        state = self.assigned()
        routes = ", ".join(
            f"nats-route://127.0.0.1:{peer.assigned().cluster_port}"
            for peer in self.cluster.nodes.values()
            if peer is not self
        )
        config = self.folder / "nats.conf"
        config.write_text(
            f"""
server_name: {self.node_name}
host: 127.0.0.1
port: {port}
http_port: {extra_port}
jetstream {{
  store_dir: "{self.folder / "store"}"
  max_memory_store: 256MB
  max_file_store: 8GB
}}
cluster {{
  name: {CLUSTER_NAME}
  host: 127.0.0.1
  port: {state.cluster_port}
  routes: [{routes}]
}}
"""
        )
        return self.spawn([self._binary(), "-c", str(config)])

    def healthy(self) -> bool:
        """JetStream's full health check: meta group and this node's streams are current."""
        state = self.read_state()
        return state is not None and monitor_status(state.extra_port, "healthz") == 200

    def info(self) -> NatsNodeInfo:
        state = self.assigned()
        return NatsNodeInfo(
            name=self.node_name,
            pid=state.pid,
            client_port=state.port,
            cluster_port=state.cluster_port,
            monitor_port=state.extra_port,
            running=self.alive() and self.probe(state.port),
        )


class NatsCluster(NatsService):
    """`size` nodes n1..n<size> under `<root>/nats-cluster/`, seen by Stack as service "nats"."""

    def __init__(self, root: Path, size: int) -> None:
        self.folder = root / "nats-cluster"
        self.state_file = self.folder / "n1" / "state.json"
        self.log_file = self.folder / "n1" / "server.log"
        self.size = size
        self.nodes = {f"n{i}": NatsNode(self, f"n{i}") for i in range(1, size + 1)}

    # -- what Stack reads ----------------------------------------------------------------

    def read_state(self) -> ServiceState | None:
        states = [node.read_state() for node in self.nodes.values()]
        return states[0] if all(s is not None for s in states) else None

    def url(self) -> str:
        """The seed list: every node's client URL, comma-separated (what NATS_URL takes)."""
        return ",".join(node.info().url for node in self.nodes.values())

    def is_running(self) -> bool:
        return all(node.is_running() for node in self.nodes.values())

    # -- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the nodes that are not running, then wait for a meta leader."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._assign_ports()
        for node in self.nodes.values():
            node.launch_if_dead()
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            self._wait_node(node, deadline)
        if self.wait_for_meta_leader(max(1.0, deadline - time.monotonic())) is None:
            raise ServiceError(f"nats cluster: no JetStream meta leader within {timeout:g} s")

    def stop(self) -> None:
        live = [pid for node in self.nodes.values() if (pid := node.pid()) and pid_alive(pid)]
        for pid in live:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while any(pid_alive(pid) for pid in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in live:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    def start_node(self, name: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Restart one node on its ports; return once it has caught up (its /healthz is 200)."""
        node = self._node(name)
        node.launch_if_dead()
        deadline = time.monotonic() + timeout
        self._wait_node(node, deadline)
        while not node.healthy():
            if time.monotonic() > deadline:
                raise ServiceError(f"nats {name} did not catch up within {timeout:g} s")
            time.sleep(0.2)

    def kill_node(self, name: str) -> None:
        """SIGKILL one node (a crash: no lame duck, no goodbye to its peers)."""
        node = self._node(name)
        pid = node.pid()
        if pid is None or not pid_alive(pid):
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def node_infos(self) -> list[NatsNodeInfo]:
        return [node.info() for node in self.nodes.values() if node.read_state() is not None]

    # -- leaders -------------------------------------------------------------------------

    def meta_leader(self) -> str | None:
        """The meta leader's name when every live node names the same live node, else None."""
        named: set[str] = set()
        live = [node for node in self.nodes.values() if node.alive()]
        for node in live:
            jsz = _monitor_json(node.assigned().extra_port, "jsz")
            if jsz is None:
                return None
            named.add(str((jsz.get("meta_cluster") or {}).get("leader") or ""))
        if len(named) != 1:
            return None
        leader = named.pop()
        return leader if leader in {node.node_name for node in live} else None

    def wait_for_meta_leader(self, timeout: float = 15.0) -> str | None:
        return _poll(self.meta_leader, timeout)

    def stream_leader(self, stream: str) -> str | None:
        """The node leading `stream` now, as the JetStream API says; None during an election."""
        urls = [node.info().url for node in self.nodes.values() if node.alive()]
        return _in_fresh_loop(_ask_stream_leader(urls, stream))

    def wait_for_stream_leader(self, stream: str, timeout: float = 15.0) -> str | None:
        live = {node.node_name for node in self.nodes.values() if node.alive()}

        def leader() -> str | None:
            name = self.stream_leader(stream)
            return name if name in live else None

        return _poll(leader, timeout)

    # -- internals -----------------------------------------------------------------------

    def _node(self, name: str) -> NatsNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise ServiceError(
                f"no NATS node {name!r}; the cluster has {', '.join(self.nodes)}"
            ) from None

    def _assign_ports(self) -> None:
        """Keep every node's ports while any node runs; choose all afresh when none does and
        a recorded port is now taken (or nothing is recorded yet)."""
        states = {name: node.read_state() for name, node in self.nodes.items()}
        if any(node.alive() for node in self.nodes.values()):
            if any(s is None or not s.cluster_port for s in states.values()):
                raise ServiceError(
                    f"nats cluster in {self.folder} runs with nodes missing their state; "
                    "`python -m devstack down` before starting again"
                )
            return
        recorded = [s for s in states.values() if s is not None and s.cluster_port]
        ports = [p for s in recorded for p in (s.port, s.cluster_port, s.extra_port)]
        if len(recorded) == self.size and not any(port_open(p) for p in ports):
            return
        fresh: set[int] = set()
        while len(fresh) < 3 * self.size:
            fresh.add(free_port())
        chosen = iter(sorted(fresh))
        for node in self.nodes.values():
            node.folder.mkdir(parents=True, exist_ok=True)
            node.write_state(
                ServiceState(pid=0, port=next(chosen), cluster_port=next(chosen),
                             extra_port=next(chosen))
            )  # fmt: skip

    def _wait_node(self, node: NatsNode, deadline: float) -> None:
        state = node.assigned()
        if not node.wait_until_ready(
            state.port, timeout=max(0.1, deadline - time.monotonic()), pid=state.pid
        ):
            tail = node.log_tail()
            raise ServiceError(
                f"nats {node.node_name} did not become ready on port {state.port}:\n{tail}"
            )


def _monitor_json(port: int, path: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=1) as response:
            data = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _poll(check: Callable[[], str | None], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        found: str | None = check()
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


async def _ask_stream_leader(urls: list[str], stream: str) -> str | None:
    for url in urls:
        try:
            nc = await nats.connect(
                servers=[url], connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0
            )
        except (OSError, nats.errors.Error, TimeoutError):
            continue
        try:
            reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2)
            info = json.loads(reply.data)
        except (nats.errors.Error, TimeoutError, ValueError):
            return None  # no stream leader answers: an election is under way
        finally:
            await nc.close()
        return str((info.get("cluster") or {}).get("leader") or "") or None
    return None


def _in_fresh_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on its own loop in its own thread: callable from sync or async code."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
