"""Child processes that never outlive their supervisor.

Each child is started with the kernel's parent-death signal (PR_SET_PDEATHSIG): when the
supervisor dies, however it dies (SIGKILL included), every child gets SIGTERM and stops
the way it does on any SIGTERM. A normal stop sends SIGTERM itself, in reverse start order
(the web server first, so nothing new arrives while the rest finish), and SIGKILLs what is
still running after STOP_GRACE_S. A child that ignores the parent-death SIGTERM (granian can
be wedged by its own signal handler) is SIGKILLed after the same grace by the watchdog, or by
the next start, whichever comes first (devrun/watchdog.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devrun import watchdog
from devrun.metrics import mark_dead_processes

STOP_GRACE_S = 12.0  # every long-running command exits within 10 s of SIGTERM
_PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def stop_with_parent() -> None:
    """Get SIGTERM when this process's parent dies (`make`, killed): the tree stops as one."""
    if sys.platform.startswith("linux"):
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that ties the child to this process, or None where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    libc = _libc()  # loaded before the fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    pump: threading.Thread
    known_as: watchdog.Process | None = None  # None where there is no /proc


@dataclass
class Supervisor:
    children: list[Child] = field(default_factory=list)
    # The children's PROMETHEUS_MULTIPROC_DIR, whose live gauges forget processes that exit.
    metrics_dir: Path | None = None
    # Where the children are named for the next start; with it, a watchdog outlives this
    # process to SIGKILL what its death's SIGTERM does not stop (devrun/watchdog.py).
    registry: Path | None = None
    grace_s: float = STOP_GRACE_S
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        # Not a thread: the parent-death signal fires when the *thread* that forked exits.
        assert threading.current_thread() is threading.main_thread()
        if "OTEL_SERVICE_NAME" not in env:
            # Each child is its own service in a trace (health-web, health-relay, ...).
            env = env | {"OTEL_SERVICE_NAME": f"health-{name}"}
        if self.registry is not None and self._watchdog is None:
            self._watchdog = self._start_watchdog()
        process = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # A terminal's Ctrl-C reaches only the supervisor, which stops the children in
            # order; the parent-death signal covers the supervisor's own sudden end.
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # prctl only: nothing that could deadlock after fork
        )
        assert process.stdout is not None
        pump = threading.Thread(target=self._pump, args=(name, process.stdout), daemon=True)
        pump.start()
        child = Child(name, process, pump, watchdog.Process.of(name, process.pid))
        self.children.append(child)
        self._register(child)

    def _start_watchdog(self) -> subprocess.Popen[bytes] | None:
        if not sys.platform.startswith("linux"):
            return None  # no parent-death signal, no /proc: nothing for it to do
        return subprocess.Popen(
            [sys.executable, "-m", "devrun.watchdog", str(self.grace_s)],
            cwd=Path(__file__).resolve().parents[1],  # where `devrun` is importable
            stdin=subprocess.PIPE,  # its end is this process's end; the children never hold it
            # Out of reach of what stops this process's group (Ctrl-C, kill -- -PGID).
            start_new_session=True,
        )

    def _register(self, child: Child) -> None:
        """A new child, for the watchdog and in the registry file."""
        if child.known_as is None:
            return
        if self._watchdog is not None and self._watchdog.stdin is not None:
            # A watchdog that is gone (killed by hand) only takes its fallback with it.
            with contextlib.suppress(BrokenPipeError):
                self._watchdog.stdin.write(child.known_as.to_json().encode() + b"\n")
                self._watchdog.stdin.flush()
        known = [each.known_as for each in self.children if each.known_as is not None]
        me = watchdog.Process.of("supervisor", os.getpid())
        if self.registry is not None and me is not None:
            watchdog.write_registry(self.registry, me, known)

    @staticmethod
    def _pump(name: str, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            sys.stdout.write(f"{name:>10} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    def pids(self) -> dict[str, int]:
        return {child.name: child.process.pid for child in self.children}

    def check(self) -> str | None:
        """The first child that has exited, described; None while all run."""
        exited = [child for child in self.children if child.process.poll() is not None]
        if self.metrics_dir is not None:
            mark_dead_processes(self.metrics_dir, {child.process.pid for child in exited})
        for child in exited:
            return f"{child.name} exited with status {child.process.returncode}"
        return None

    def stop(self, grace_s: float | None = None) -> None:
        grace_s = self.grace_s if grace_s is None else grace_s
        for child in reversed(self.children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.1, deadline - time.monotonic()))
            if child.process.poll() is None:
                print(f"{child.name} ignored SIGTERM for {grace_s:.0f}s: killed", file=sys.stderr)
            # The whole group: a child's own workers (granian's) must not outlive it either.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        for child in self.children:
            child.pump.join(timeout=1)
        if self._watchdog is not None:
            # Nothing left for it: it finds every child gone and exits at once.
            with contextlib.suppress(OSError):
                if self._watchdog.stdin is not None:
                    self._watchdog.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(5)
