"""What a `make run` leaves running after it stopped: SIGKILLed once a grace period is over.

When the supervisor dies, however (`kill -9` included), every child gets SIGTERM from the
kernel (parent-death signal, devrun/supervisor.py) and normally stops within seconds; a
normal stop SIGKILLs what ignores its SIGTERM. After `kill -9` nothing did, and granian
2.8.7 was seen to stay up for good, holding the web port: its SIGTERM handler
(`AbstractServer.signal_handler_interrupt`) calls `threading.Event.set`, and a second signal
arriving while a handler holds the Event's lock runs the handler again on the same thread,
which then waits forever for the lock it holds itself (seen nested five deep). Nothing in
such a child can be relied on, so something outside it ends it:

- this module as a process (`python -m devrun.watchdog GRACE_S`), which the supervisor
  starts in a session of its own before its first child and tells each child it starts,
  one JSON line on the watchdog's stdin. The end of that pipe is the supervisor's end,
  whatever it was: the watchdog then gives the children the grace of a normal stop and
  SIGKILLs the process group (a child's own workers too) of each one still running;
- the next `make run`, which does the same with the children the last one named in its
  registry file, before it looks at its port: a start within the grace must not find the
  last run's web server holding it. A registry whose supervisor still runs (another
  `make run` on this state folder) is left alone.

No SIGTERM is sent again (a second signal is what wedges granian). A process is known by its
pid and its start time, so a pid the system has since given to another process is never
signalled. Standard library only: the watchdog starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

POLL_S = 0.1


@dataclass(frozen=True)
class Process:
    name: str
    pid: int
    start: int  # clock ticks after boot (/proc/<pid>/stat): with the pid, one process ever

    @classmethod
    def of(cls, name: str, pid: int) -> Process | None:
        """The process `pid` as it is now; None where there is no /proc (not Linux)."""
        stat = _stat(pid)
        return None if stat is None else cls(name, pid, stat.start)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, value: Any) -> Process:
        return cls(str(value["name"]), int(value["pid"]), int(value["start"]))


class _Stat(NamedTuple):
    state: str  # "Z": exited, not yet waited for
    group: int
    start: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After the command's closing parenthesis: state, ppid, pgrp, ... starttime (22nd field).
    fields = text.rsplit(")", 1)[1].split()
    return _Stat(fields[0], int(fields[2]), int(fields[19]))


def _same(process: Process) -> _Stat | None:
    """The process's state if `process` still exists (a zombie included), else None."""
    stat = _stat(process.pid)
    return stat if stat is not None and stat.start == process.start else None


def running(process: Process) -> bool:
    stat = _same(process)
    return stat is not None and stat.state != "Z"


def reap(children: Sequence[Process], grace_s: float, *, after: str) -> list[str]:
    """Waits up to `grace_s` for `children` to stop, then SIGKILLs the process group of each
    one still running; returns their names."""
    deadline = time.monotonic() + grace_s
    while any(running(child) for child in children) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    killed = []
    for child in children:
        stat = _same(child)
        if stat is None:
            continue  # gone, or its pid is another process's now
        if stat.state != "Z":
            killed.append(child.name)
            _say(f"{child.name} (pid {child.pid}) still running {grace_s:.0f}s after {after}: "
                 "killed")  # fmt: skip
        # Its group too (a zombie leader's included): granian's workers must not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if stat.group == child.pid:
                os.killpg(child.pid, signal.SIGKILL)
            else:
                os.kill(child.pid, signal.SIGKILL)
    return killed


def _say(line: str) -> None:
    with contextlib.suppress(OSError):  # whoever read our output may be gone too
        print(line, file=sys.stderr, flush=True)


# --- The registry file, for the next start ---------------------------------------------------


def write_registry(path: Path, supervisor: Process, children: Sequence[Process]) -> None:
    data = {"supervisor": asdict(supervisor), "children": [asdict(child) for child in children]}
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(json.dumps(data))
    partial.replace(path)  # whole or not at all: a kill -9 may come at any instant


def leftovers(path: Path) -> list[Process]:
    """The children named in `path` by a supervisor that no longer runs."""
    try:
        data = json.loads(path.read_text())
        supervisor = Process.from_dict(data["supervisor"])
        children = [Process.from_dict(child) for child in data["children"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # none yet, or not ours to read
    if running(supervisor):
        return []  # another make run on this state folder: its children are its own
    return children


# --- The watchdog process --------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    grace_s = float(argv[0])
    children: list[Process] = []
    # Until the supervisor's end closes the pipe: one line per child it starts.
    for line in sys.stdin.buffer:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            children.append(Process.from_dict(json.loads(line)))
    reap(children, grace_s, after="make run stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
