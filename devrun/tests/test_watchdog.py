"""A child that ignores SIGTERM (as granian 2.8.7 wedged in its own signal handler does) is
SIGKILLed after the grace: on a normal stop, after `kill -9` of the supervisor (the
watchdog), and by the next start if it is still there (devrun/watchdog.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devrun import watchdog
from devrun.supervisor import Supervisor
from devstack.services import pid_alive

PROJECT = Path(__file__).resolve().parents[2]
# Ignores SIGTERM, then says so by creating the file named by its argument.
STUCK = (
    "import pathlib, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "pathlib.Path(sys.argv[1]).touch()\n"
    "time.sleep(600)\n"
)
# A supervisor with one such child: prints the child's pid, then waits to be killed.
SUPERVISOR = (
    "import os, sys, time\n"
    "from pathlib import Path\n"
    "from devrun.supervisor import Supervisor\n"
    "supervisor = Supervisor(registry=Path(sys.argv[1]), grace_s=float(sys.argv[2]))\n"
    "supervisor.start('web', [sys.executable, '-c', sys.argv[3], sys.argv[4]], dict(os.environ))\n"
    "print(supervisor.pids()['web'], flush=True)\n"
    "time.sleep(600)\n"
)

_spawned: list[int] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A failed test must not leave a stuck child running for ten minutes."""
    yield
    for pid in _spawned:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    _spawned.clear()


def _wait_for(path: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _stuck_child(ready: Path) -> subprocess.Popen[bytes]:
    """A process of its own group, as the supervisor's children are, that ignores SIGTERM."""
    process = subprocess.Popen([sys.executable, "-c", STUCK, str(ready)], start_new_session=True)
    _spawned.append(process.pid)
    _wait_for(ready)
    return process


def _gone_within(pids: set[int], timeout_s: float) -> set[int]:
    """The pids of `pids` still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.1)
    return {pid for pid in pids if pid_alive(pid)}


def test_after_kill_9_of_the_supervisor_a_child_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path,
) -> None:
    grace_s = 2.0
    ready = tmp_path / "ready"
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path / "children.json"), str(grace_s),
         STUCK, str(ready)],
        cwd=PROJECT, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    _spawned.append(supervisor.pid)
    assert supervisor.stdout is not None
    child = int(supervisor.stdout.readline())
    _spawned.append(child)
    _wait_for(ready)
    below = _children_of(supervisor.pid)  # the child and the watchdog
    _spawned.extend(below)
    assert child in below
    assert len(below) == 2

    supervisor.kill()
    supervisor.wait()

    # The parent-death SIGTERM did not stop it (it would have stopped a well-behaved child).
    time.sleep(0.5)
    assert pid_alive(child)
    # Within the grace and a little: killed, and the watchdog has exited too.
    assert _gone_within(below, grace_s + 5.0) == set()


def test_the_next_start_kills_what_a_dead_supervisors_child_left_and_nothing_else(
    tmp_path: Path,
) -> None:
    stuck = _stuck_child(tmp_path / "ready")
    registry = tmp_path / "children.json"
    as_started = watchdog.Process.of("web", stuck.pid)
    assert as_started is not None
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_supervisor = watchdog.Process.of("supervisor", ended.pid)
    assert dead_supervisor is not None
    ended.wait()
    live_supervisor = watchdog.Process.of("supervisor", os.getpid())
    assert live_supervisor is not None

    # Another make run on the same state folder, still running: its children are its own.
    watchdog.write_registry(registry, live_supervisor, [as_started])
    assert watchdog.leftovers(registry) == []
    # The pid named once by another process (its start time differs): not ours to kill.
    reused = watchdog.Process("web", stuck.pid, as_started.start + 1)
    watchdog.write_registry(registry, dead_supervisor, [reused])
    assert watchdog.reap(watchdog.leftovers(registry), 0.2, after="test") == []
    assert stuck.poll() is None

    watchdog.write_registry(registry, dead_supervisor, [as_started])
    started = time.monotonic()
    killed = watchdog.reap(watchdog.leftovers(registry), 1.0, after="test")

    assert killed == ["web"]
    assert stuck.wait(5) == -signal.SIGKILL
    assert time.monotonic() - started >= 1.0  # given the grace to stop on its own first


def test_a_normal_stop_kills_a_child_ignoring_sigterm_after_the_grace_and_names_it(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "children.json"
    supervisor = Supervisor(registry=registry, grace_s=1.0)
    ready = tmp_path / "ready"
    before = _children_of(os.getpid())
    supervisor.start("web", [sys.executable, "-c", STUCK, str(ready)], dict(os.environ))
    child = supervisor.pids()["web"]
    below = _children_of(os.getpid()) - before  # the child and the watchdog
    _spawned.extend(below)
    assert child in below
    assert len(below) == 2
    _wait_for(ready)
    named = json.loads(registry.read_text())
    assert named["supervisor"]["pid"] == os.getpid()
    assert [(c["name"], c["pid"]) for c in named["children"]] == [("web", child)]

    started = time.monotonic()
    supervisor.stop()

    assert 1.0 <= time.monotonic() - started < 5.0
    assert supervisor.children[0].process.returncode == -signal.SIGKILL
    # The watchdog (a child of this process too) had nothing left to do and is gone.
    assert _gone_within(below, 5.0) == set()
