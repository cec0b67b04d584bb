"""Side by side with Open Wearables (OW): webhook ingestion, ours and the peer's, interleaved.

    python -m bench.peers [--snapshot GIT_DIR] [--ow-root DIR] [--runs 3] [--seconds 15] [--n 3000]

Not a test. Each round measures ours (`bench.webhooks.measure`: granian as `make run` serves
it, the relay archiving during the load, signed unique Oura deliveries, 16 connections) and
then the peer (OW's single uvicorn process as shipped, driven by the shared `loadgen.py` with
its own signed unique deliveries, 16 connections), after waiting for the machine to be idle.
Every run is printed as it finishes; the last line is one JSON object with the medians and the
ratio, also saved under bench/results/.

The peer's build recipe is not part of this project: this module only invokes the shared
scripts in ../shared/peers/open-wearables (RUN.md there) with OW=<--ow-root> and, when the
peer is not installed yet, OW_GIT=<--snapshot>. At the end the peer is stopped with
`down.sh` without `--purge`, so the next invocation reuses its install and database.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common import machine_busy_seconds
from health_project.serving import (
    BACKGROUND_NICE,
    WEB_BLOCKING_THREADS,
    WEB_INTERFACE,
    WEB_WORKERS,
)

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = ROOT.parent / "shared" / "peers" / "open-wearables"
DEFAULT_OW_ROOT = Path("/work/.ow-peer")
DEFAULT_DEVSTACK_ROOT = ROOT / ".devstack-bench-peers"
# The commit RUN.md was measured at; used when the snapshot has it, else its HEAD.
PINNED_COMMIT = "44a268be623e81995e896b05ed93a56411ddf807"
PEER_URL = "http://127.0.0.1:8010/api/v1/oura/webhooks"
# Postgres, Redis and the API of the peer, as up.sh binds them (127.0.0.1 only).
PEER_PORTS = {"postgres": 5442, "redis": 6390, "api": 8010}
# Which process a pid file of $OW may name; a pid from an earlier boot or a kill -9 can
# belong to something else by now, and down.sh would signal it blindly.
PID_FILES = {"api.pid": ("fastapi", "uvicorn"), "worker.pid": ("celery",), "redis.pid": ("redis",)}


# --- summary (pure) ---------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each side's runs and ours/peer of the accepted-per-second medians."""
    sides: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        side = sides.setdefault(run["system"], {"rate": [], "p99": [], "p50": []})
        side["rate"].append(run["accepted_per_s"])
        side["p99"].append(run["p99_ms"])
        side["p50"].append(run["p50_ms"])
    out: dict[str, Any] = {}
    for name in ("ours", "peer"):
        side = sides.get(name, {"rate": [], "p99": [], "p50": []})
        out[f"{name}_accepted_per_s_median"] = _median(side["rate"])
        out[f"{name}_p99_ms_median"] = _median(side["p99"])
        out[f"{name}_p50_ms_median"] = _median(side["p50"])
    ours, peer = out["ours_accepted_per_s_median"], out["peer_accepted_per_s_median"]
    out["ratio"] = round(ours / peer, 2) if ours is not None and peer else None
    out["non_2xx"] = {
        name: sum(r["non_2xx"] + r["errors"] for r in runs if r["system"] == name)
        for name in ("ours", "peer")
    }
    out["all_accepted"] = all(r["non_2xx"] == 0 and r["errors"] == 0 for r in runs)
    return out


def non_2xx(statuses: dict[Any, int]) -> int:
    """Responses outside 2xx; keys are ints (ours) or strings (the peer's JSON)."""
    return sum(n for status, n in statuses.items() if not 200 <= int(status) < 300)


# --- helpers ----------------------------------------------------------------------------


def wait_idle(threshold_cores: float, timeout_s: float) -> dict[str, Any]:
    """Wait until one second passes with the machine below `threshold_cores` busy (the
    previous run's drain, another session's work), or give up after `timeout_s`."""
    began = time.monotonic()
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = machine_busy_seconds() - before
        waited = time.monotonic() - began
        if busy < threshold_cores or waited >= timeout_s:
            return {
                "busy_cores": round(busy, 2),
                "waited_s": round(waited, 1),
                "timed_out": busy >= threshold_cores,
            }


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _say(text: str) -> None:
    print(text, flush=True)


def _python313_works(path: str) -> bool:
    found = shutil.which("python3.13", path=path)
    return (
        found is not None
        and (
            subprocess.run([found, "-c", ""], capture_output=True, env={**os.environ, "PATH": path})
        ).returncode
        == 0
    )


def _python313_dir() -> Path | None:
    """A folder to put first on up.sh's PATH when `python3.13` is a pyenv shim that refuses
    to run because 3.13 is installed but not selected (pyenv's global is another version)."""
    if _python313_works(os.environ["PATH"]):
        return None
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(pyenv.glob("versions/3.13*/bin/python3.13"))
    return found[-1].parent if found else None


def _leftover_bench_processes(database_url: str) -> list[int]:
    """The bench server and relay of an earlier run on this devstack root that was killed
    before its clean-up (they outlive a SIGKILLed parent). Matched by the root's own
    DATABASE_URL, so another session's bench.webhooks is never touched."""
    marker = f"DATABASE_URL={database_url}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        command = _cmdline(int(proc.name))
        if marker in environ and (
            "bench.webhooks:application" in command or "run_relay" in command
        ):
            found.append(int(proc.name))
    return found


def _stop_pids(pids: list[int], grace_s: float = 10.0) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Terminated(Exception):
    """SIGTERM or SIGHUP: unwound like Ctrl-C so that everything started gets stopped."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextmanager
def _uninterruptible() -> Iterator[None]:
    """Clean-up that a second Ctrl-C must not cut short (it would leave the peer running)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


# --- the peer ---------------------------------------------------------------------------


class Peer:
    """Open Wearables under `root`, through the shared scripts only."""

    def __init__(self, root: Path, peer_dir: Path, snapshot: Path | None) -> None:
        self.root = root
        self.peer_dir = peer_dir
        self.snapshot = snapshot
        self.started = False

    def env(self) -> dict[str, str]:
        env = {**os.environ, "OW": str(self.root)}
        if self.snapshot is not None:
            env["OW_GIT"] = str(self.snapshot)
        # down.sh uses $PGBIN without a default; up.sh picks the newest installed. Pin 15,
        # the version RUN.md was measured with, when it is there.
        if "PGBIN" not in env and Path("/usr/lib/postgresql/15/bin").is_dir():
            env["PGBIN"] = "/usr/lib/postgresql/15/bin"
        elif "PGBIN" not in env:
            found = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
            if found:
                env["PGBIN"] = str(found[-1])
        python = _python313_dir()
        if python is not None:
            env["PATH"] = f"{python}{os.pathsep}{env['PATH']}"
        return env

    @property
    def backend(self) -> Path:
        return self.root / "src" / "backend"

    def installed(self) -> bool:
        return (self.backend / "pyproject.toml").is_file() and (
            self.root / "venv" / "bin" / "fastapi"
        ).exists()

    def commit(self) -> str:
        marker = self.root / "source-commit"
        return marker.read_text().strip() if marker.is_file() else "unknown (not recorded)"

    def check_prerequisites(self) -> None:
        missing = []
        for tool, hint in (
            ("redis-server", "apt-get install -y redis-server"),
            ("redis-cli", "apt-get install -y redis-server"),
            ("git", "apt-get install -y git"),
        ):
            if shutil.which(tool) is None:
                missing.append(f"{tool} not found; install it: {hint}")
        if not _python313_works(self.env()["PATH"]):
            missing.append("no python3.13; install it: pyenv install 3.13 (the peer needs >= 3.13)")
        if "PGBIN" not in self.env():
            missing.append(
                "no /usr/lib/postgresql/*/bin; install it: apt-get install -y postgresql-15"
            )
        if not (self.peer_dir / "scripts" / "up.sh").is_file():
            missing.append(f"{self.peer_dir}/scripts/up.sh not found (--peer-dir)")
        if os.geteuid() != 0:
            missing.append("up.sh creates the throwaway user owpg: run as root")
        if missing:
            raise SystemExit("bench.peers: " + "; ".join(missing))

    def prepare_source(self) -> None:
        """Extract the snapshot into $OW/src before up.sh, which then skips its own
        extraction (it would take HEAD): the pinned commit when the snapshot has it."""
        if (self.backend / "pyproject.toml").is_file():
            return
        if self.snapshot is None:
            raise SystemExit(
                f"bench.peers: the peer is not set up in {self.root}; "
                "pass --snapshot GIT_DIR (a bare clone of the-momentum/open-wearables)"
            )
        git = ["git", f"--git-dir={self.snapshot}"]
        has_pinned = (
            subprocess.run(
                [*git, "cat-file", "-e", f"{PINNED_COMMIT}^{{commit}}"], capture_output=True
            ).returncode
            == 0
        )
        commit = (
            PINNED_COMMIT
            if has_pinned
            else subprocess.run(
                [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        if has_pinned:
            _say(f"peer: source at the pinned commit {commit}")
        else:
            _say(f"peer: {PINNED_COMMIT} is not in {self.snapshot}; using its HEAD {commit}")
        src = self.root / "src"
        if src.exists():
            shutil.rmtree(src)  # a half-extracted tree from an interrupted set-up
        src.mkdir(parents=True)
        archive = subprocess.Popen([*git, "archive", commit], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(src)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"bench.peers: git archive {commit} failed")
        (self.root / "source-commit").write_text(commit + "\n")

    def leftovers(self) -> list[str]:
        """What an earlier run (killed before its clean-up) left running."""
        found = []
        for name, expected in PID_FILES.items():
            path = self.root / name
            if not path.is_file():
                continue
            try:
                pid = int(path.read_text().split()[0])
            except (ValueError, IndexError):
                pid = 0
            if pid and any(word in _cmdline(pid) for word in expected):
                found.append(f"{name} {pid}")
            else:
                path.unlink()  # stale: keep down.sh from signalling an unrelated process
        if (self.root / "pg" / "data" / "postmaster.pid").is_file():
            found.append("postgres (postmaster.pid)")
        found += [f"port {port} ({name})" for name, port in PEER_PORTS.items() if _port_open(port)]
        return found

    def up(self) -> None:
        self.check_prerequisites()
        self.root.mkdir(parents=True, exist_ok=True)
        left = self.leftovers()
        if left:
            _say(f"peer: left from an earlier run: {', '.join(left)}; down.sh first")
            self.down()
            busy = [f"{n} :{p}" for n, p in PEER_PORTS.items() if _port_open(p)]
            if busy:
                raise SystemExit(
                    f"bench.peers: still in use after down.sh: {', '.join(busy)}; "
                    "something other than the peer holds them"
                )
        fresh = not self.installed()
        self.prepare_source()
        # up.sh reads env.local and start_api.sh from $OW/scripts (RUN.md's layout); a copy
        # each time, so edits to the shared scripts are picked up.
        shutil.copytree(self.peer_dir / "scripts", self.root / "scripts", dirs_exist_ok=True)
        shutil.copy2(self.peer_dir / "loadgen.py", self.root / "loadgen.py")
        _say(
            f"peer: up.sh in {self.root}"
            + (" (first time: installs, a few minutes)" if fresh else "")
        )
        self.started = True  # from here on, down.sh at the end whatever happens
        up = subprocess.run(
            ["bash", str(self.peer_dir / "scripts" / "up.sh")],
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )
        if up.returncode != 0:
            raise SystemExit(f"bench.peers: up.sh failed ({up.returncode}); see {self.root}/logs")
        try:
            with urllib.request.urlopen("http://127.0.0.1:8010/", timeout=5) as response:
                ok = response.status == 200
        except OSError:
            ok = False
        if not ok:
            raise SystemExit(
                f"bench.peers: the peer's API does not answer; see {self.root}/logs/api.log"
            )

    def api_pid(self) -> int:
        return int((self.root / "api.pid").read_text().split()[0])

    def measure(self, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, str(self.peer_dir / "loadgen.py"), "bench", "--n", str(n),
             "--c", str(concurrency), "--warmup", str(warmup),
             "--server-pid", str(self.api_pid()), "--url", PEER_URL],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"bench.peers: loadgen.py failed:\n{proc.stderr[-2000:]}")
        phases = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        measured = next(p for p in phases if p.get("phase") == "measured")
        statuses = {int(k): v for k, v in measured["status_counts"].items()}
        return {
            "accepted_per_s": measured["accepted_rps"],
            "p50_ms": measured["p50_ms"],
            "p95_ms": measured["p95_ms"],
            "p99_ms": measured["p99_ms"],
            "requests": sum(statuses.values()),
            "accepted": measured["accepted"],
            "statuses": statuses,
            "non_2xx": non_2xx(statuses),
            "errors": measured["errors"],
            "elapsed_s": measured["wall_s"],
            "server_cpu_cores": measured.get("server_cpu_util"),
            "client_cpu_cores": measured.get("client_cpu_util"),
            "detail": measured,
        }

    def down(self) -> None:
        # Its own session, so a Ctrl-C at the terminal does not cut the clean-up short.
        subprocess.run(
            ["bash", str(self.peer_dir / "scripts" / "down.sh")],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started = False


# --- ours -------------------------------------------------------------------------------


class Ours:
    """This project on its own devstack root, measured by bench.webhooks."""

    def __init__(self, devstack_root: Path) -> None:
        self.root = devstack_root
        self.started = False
        self.env: dict[str, str] = {}

    def _devstack(self, action: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "devstack", action, "--root", str(self.root)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=action == "down",  # see Peer.down
            # The embedded S3 at make run's niceness (devrun/__main__.py).
            env={"DEVSTACK_S3_NICE": str(BACKGROUND_NICE), **os.environ},
        )
        if proc.returncode != 0:
            raise SystemExit(f"bench.peers: devstack {action} failed: {proc.stderr.strip()}")
        return proc.stdout

    def up(self) -> None:
        _say(f"ours: devstack up --root {self.root}")
        self.started = True
        self._devstack("up")
        for line in self._devstack("env").splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                name, _, value = words[1].partition("=")
                os.environ[name] = value
        os.environ["HEALTH_ENV"] = "development"  # unset would mean production
        left = _leftover_bench_processes(os.environ["DATABASE_URL"])
        if left:
            _say(f"ours: stopping a server/relay left from an earlier run: pids {left}")
            _stop_pids(left)
        # As bench/README runs it: the venv's tools first on PATH for the server and relay.
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        from bench.webhooks import prepare_server_env

        # Migrations, streams, bucket (what `manage.py provision` does) and the bench user.
        self.env = prepare_server_env()

    def measure(self, seconds: float, concurrency: int) -> dict[str, Any]:
        from bench.webhooks import measure

        # No trivial phase: the comparison is the webhook path; the drain is bounded so
        # a stuck relay cannot hold the whole comparison.
        result = measure(
            self.env,
            seconds=seconds,
            concurrency=concurrency,
            devstack_root=self.root,
            trivial=False,
            drain_limit_s=120,
        )
        web = result["webhook"]
        statuses = {int(k): v for k, v in web["statuses"].items()}
        return {
            "accepted_per_s": web["accepted_per_s"],
            "p50_ms": web["p50_ms"],
            "p95_ms": web["p95_ms"],
            "p99_ms": web["p99_ms"],
            "requests": web["requests"],
            "accepted": web["accepted"],
            "statuses": statuses,
            "non_2xx": non_2xx(statuses),
            "errors": 0,  # bench.webhooks' client raises on a broken connection
            "elapsed_s": web["elapsed_s"],
            "server_cpu_cores": web["server_cpu_cores"],
            "client_cpu_cores": web["client_cpu_cores"],
            "detail": result,
        }

    def down(self) -> None:
        self._devstack("down")
        self.started = False


# --- main -------------------------------------------------------------------------------


def _line(index: int, total: int, name: str, run: dict[str, Any]) -> str:
    idle = run["idle_before"]
    return (
        f"run {index}/{total} {name}: {run['accepted_per_s']} accepted/s, "
        f"P50 {run['p50_ms']} ms, P99 {run['p99_ms']} ms, {run['requests']} requests in "
        f"{run['elapsed_s']} s, non-2xx {run['non_2xx']}, errors {run['errors']}, "
        f"server {run['server_cpu_cores']} cores, client {run['client_cpu_cores']} cores "
        f"(idle wait {idle['waited_s']} s, {idle['busy_cores']} cores busy"
        + (", gave up waiting" if idle["timed_out"] else "")
        + ")"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--snapshot",
        type=Path,
        help="bare git clone of the-momentum/open-wearables; needed only to set the peer up",
    )
    parser.add_argument("--ow-root", type=Path, default=DEFAULT_OW_ROOT, help="the peer's folder")
    parser.add_argument(
        "--peer-dir", type=Path, default=PEER_DIR, help="the shared scripts and loadgen.py"
    )
    parser.add_argument("--devstack-root", type=Path, default=DEFAULT_DEVSTACK_ROOT)
    parser.add_argument("--runs", type=int, default=3, help="runs of each side, interleaved")
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="ours: length of the measured load"
    )
    parser.add_argument(
        "--n",
        type=int,
        default=3000,
        help="the peer: measured deliveries (loadgen.py is count-bound; ~17 s at ~180/s)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="the peer: warm-up deliveries")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--idle-cores", type=float, default=0.3, help="idle below this")
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    parser.add_argument(
        "--setup-only", action="store_true", help="set the peer up, stop it and exit"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)
    peer = Peer(args.ow_root.resolve(), args.peer_dir.resolve(), args.snapshot)
    ours = Ours(args.devstack_root.resolve())
    runs: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        peer.up()
        if args.setup_only:
            _say(f"peer: set up in {peer.root} at {peer.commit()}")
            return 0
        ours.up()
        total = 2 * args.runs
        for round_ in range(args.runs):
            for name in ("ours", "peer"):
                idle = wait_idle(args.idle_cores, args.idle_timeout)
                if name == "ours":
                    run = ours.measure(args.seconds, args.concurrency)
                else:
                    run = peer.measure(args.n, args.concurrency, args.warmup)
                run = {"system": name, "round": round_ + 1, "idle_before": idle, **run}
                runs.append(run)
                _say(_line(len(runs), total, name, run))
    except (KeyboardInterrupt, Terminated) as exc:
        _say(f"bench.peers: interrupted ({type(exc).__name__} {exc}); stopping what it started")
        return 130
    finally:
        with _uninterruptible():
            if peer.started:
                peer.down()
            if ours.started:
                ours.down()

    summary = {
        **summarize(runs),
        "runs": [{k: v for k, v in run.items() if k != "detail"} for run in runs],
        "concurrency": args.concurrency,
        "ours": f"granian {WEB_INTERFACE} {WEB_WORKERS}x{WEB_BLOCKING_THREADS}, relay during "
        f"the load (nice {BACKGROUND_NICE}, the embedded S3 too), {args.seconds:g} s of load "
        "per run",
        "peer": f"OW {peer.commit()}, one uvicorn process (fastapi run), "
        f"loadgen.py {args.n} deliveries + {args.warmup} warm-up per run",
        "ours_commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "machine": f"{os.cpu_count()} cores",
        "started": started,
    }
    if not summary["all_accepted"]:
        _say(f"bench.peers: not every delivery was accepted: non-2xx/errors {summary['non_2xx']}")
    line = json.dumps(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    details = {**summary, "details": [run["detail"] for run in runs]}
    (args.out / f"peers-{int(time.time())}.json").write_text(json.dumps(details, indent=2) + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
