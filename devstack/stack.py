"""The set of embedded services under one project-local folder."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.nats_cluster import NatsCluster, NatsNodeInfo
from devstack.services import (
    SERVICE_CLASSES,
    EmbeddedService,
    NatsService,
    ServiceError,
    pid_alive,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
# DEVSTACK_ROOT moves the whole set (and `make run`'s own state) elsewhere, e.g. for a test
# that runs `make run` beside the developer's own stack.
DEFAULT_ROOT = Path(os.environ.get("DEVSTACK_ROOT") or PROJECT_DIR / ".devstack").resolve()


class Stack:
    """The services under `root`. NATS is one server, or with `nats_cluster=N` (N > 1) a
    JetStream cluster of N; without the argument, the size `up` last recorded in the root's
    `stack.json` (so `env`, `status`, `down` and `make run` follow what `up` chose)."""

    def __init__(self, root: Path = DEFAULT_ROOT, *, nats_cluster: int | None = None) -> None:
        self.root = root
        self.nats_cluster_size = nats_cluster or self._recorded().get("nats_cluster", 1)
        self.services: dict[str, EmbeddedService] = {cls.name: cls(root) for cls in SERVICE_CLASSES}
        if self.nats_cluster_size > 1:
            self.services["nats"] = NatsCluster(root, self.nats_cluster_size)

    def _recorded(self) -> dict[str, int]:
        try:
            recorded = json.loads((self.root / "stack.json").read_text())
        except (OSError, ValueError):
            return {}
        return recorded if isinstance(recorded, dict) else {}

    def _record_nats_choice(self) -> None:
        """Remember the NATS size; refuse to switch while the other kind still runs."""
        recorded = self._recorded().get("nats_cluster", 1)
        if recorded != self.nats_cluster_size:
            other = self._nats_of_size(recorded)
            if other.is_running() or any(_alive(other)):
                were = f"a {recorded}-node cluster" if recorded > 1 else "a single server"
                raise ServiceError(
                    f"NATS in {self.root} runs as {were}; stop it first "
                    f"(python -m devstack down --root {self.root})"
                )
        tmp = self.root / "stack.json.tmp"
        tmp.write_text(json.dumps({"nats_cluster": self.nats_cluster_size}))
        tmp.replace(self.root / "stack.json")

    def _nats_of_size(self, size: int) -> EmbeddedService:
        return NatsCluster(self.root, size) if size > 1 else NatsService(self.root)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start and stop across processes, so two starts never share a data dir."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def up(self, names: list[str] | None = None) -> dict[str, str]:
        with self._locked():
            for name in names or list(self.services):
                if name == "nats":
                    self._record_nats_choice()
                self.services[name].start()
        return self.env()

    def down(self, names: list[str] | None = None) -> None:
        with self._locked():
            for name in names or list(self.services):
                self.services[name].stop()
                if name == "nats":  # and the other kind, should one be left from a switch
                    recorded = self._recorded().get("nats_cluster", 1)
                    if recorded != self.nats_cluster_size:
                        self._nats_of_size(recorded).stop()

    def start(self, name: str) -> None:
        self.up([name])

    def stop(self, name: str) -> None:
        self.down([name])

    def status(self) -> dict[str, bool]:
        return {name: service.is_running() for name, service in self.services.items()}

    def env(self) -> dict[str, str]:
        """Connection variables of the services started here, whether or not they answer now.

        On a cluster, NATS_URL is the seed list and NATS_STREAM_REPLICAS the cluster's size.
        """
        found = {
            service.env_var: service.url()
            for service in self.services.values()
            if service.read_state() is not None
        }
        if "NATS_URL" in found and self.nats_cluster_size > 1:
            found["NATS_STREAM_REPLICAS"] = str(self.nats_cluster_size)
        return found

    # -- the NATS cluster, node by node (for fault runs such as `python -m bench.chaos`) --

    def nats_cluster(self) -> NatsCluster:
        nats = self.services["nats"]
        if not isinstance(nats, NatsCluster):
            raise ServiceError(
                f"NATS in {self.root} is a single server; "
                "start a cluster with `python -m devstack up --nats-cluster 3`"
            )
        return nats

    def nats_nodes(self) -> list[NatsNodeInfo]:
        """Each node's name (n1..nN), pid, client/cluster/monitoring ports and liveness."""
        return self.nats_cluster().node_infos()

    def kill_nats_node(self, name: str) -> None:
        """SIGKILL one node and wait until its process is gone."""
        self.nats_cluster().kill_node(name)

    def start_nats_node(self, name: str, timeout: float = 30.0) -> None:
        """Start one node again on its own ports; return once it has caught up."""
        with self._locked():
            self.nats_cluster().start_node(name, timeout)

    def nats_meta_leader(self, timeout: float = 0.0) -> str | None:
        """The JetStream meta leader all live nodes agree on (waits up to `timeout`)."""
        return self.nats_cluster().wait_for_meta_leader(timeout)

    def nats_stream_leader(self, stream: str, timeout: float = 0.0) -> str | None:
        """The live node leading `stream`, from `$JS.API.STREAM.INFO` (waits up to `timeout`)."""
        return self.nats_cluster().wait_for_stream_leader(stream, timeout)


def _alive(service: EmbeddedService) -> list[bool]:
    """Whether any process of `service` is alive (a cluster with a killed node is not
    running, yet holds its folder)."""
    if isinstance(service, NatsCluster):
        return [node.alive() for node in service.nodes.values()]
    state = service.read_state()
    return [state is not None and state.pid > 0 and pid_alive(state.pid)]


def ensure_running(root: Path = DEFAULT_ROOT, *, only_missing_from: dict[str, str]) -> list[str]:
    """Start the embedded services whose URL variable is absent from `only_missing_from`,
    and put their URLs into os.environ so settings read them like any external service.

    Called only by commands whose job is to run the system (`python -m devrun`); importing
    settings never starts anything. Returns the names of the embedded services in use.
    """
    stack = Stack(root)
    wanted = [
        name for name, svc in stack.services.items() if not only_missing_from.get(svc.env_var)
    ]
    if not wanted:
        return []
    try:
        stack.up(wanted)
    except ServiceError as exc:
        raise SystemExit(f"embedded services could not start: {exc}") from exc
    for name in wanted:
        service = stack.services[name]
        os.environ[service.env_var] = service.url()
    _replicas_default(stack, wanted)
    return wanted


def _replicas_default(stack: Stack, in_use: list[str]) -> None:
    """On an embedded cluster, streams are provisioned with one replica per node (R3),
    unless NATS_STREAM_REPLICAS says otherwise."""
    if "nats" in in_use and stack.nats_cluster_size > 1:
        os.environ.setdefault("NATS_STREAM_REPLICAS", str(stack.nats_cluster_size))


def adopt_running(root: Path = DEFAULT_ROOT) -> list[str]:
    """Point unset URL variables at embedded services that are already running; start none.

    `manage.py` calls this, so that after `make run` (or `python -m devstack up`) an
    operator's `python manage.py erase_user ...` finds the same servers. A service that is
    not running stays unset, and settings then name the variable that is missing.
    """
    stack = Stack(root)
    adopted = []
    for name, service in stack.services.items():
        if os.environ.get(service.env_var) or service.read_state() is None:
            continue
        if service.is_running() or (isinstance(service, NatsCluster) and any(_alive(service))):
            # A cluster missing a node still serves: adopt it (chaos runs kill nodes).
            os.environ[service.env_var] = service.url()
            adopted.append(name)
    _replicas_default(stack, adopted)
    return adopted
