"""Measurements shared by the benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def s3_put_rate(seconds: float, threads: int, size: int = 1024) -> float:
    """Bare PUTs per second against the configured S3 (the bound on anything that archives)."""
    from core import raw_store

    payload = os.urandom(size // 2).hex().encode()
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def loop(index: int) -> None:
        while time.perf_counter() < stop:
            raw_store.put(f"bench/put-{uuid.uuid4()}.json", payload)
            counts[index] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(threads)))
    return round(sum(counts) / (time.perf_counter() - started), 1)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of these processes and all their descendants (the server's workers),
    read from /proc (Linux only; 0 elsewhere)."""
    total, todo = 0.0, list(pids)
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle (first line of /proc/stat; 0 elsewhere)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / _TICK


def machine_iowait_seconds() -> float:
    """CPU time all cores sat idle with disk I/O outstanding (/proc/stat; 0 elsewhere)."""
    try:
        return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[5]) / _TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def service_pids(root: Path | None) -> dict[str, list[int]]:
    """{service: [pid]} from a devstack root's state files (postgres, nats, s3)."""
    if root is None:
        return {}
    found = {}
    for state in sorted(root.glob("*/state.json")):
        found[state.parent.name] = [int(json.loads(state.read_text())["pid"])]
    return found


def niceness(pid: int) -> int | None:
    """A process's nice value; None where it cannot be read (gone, not ours to see)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        return None


def stop_processes(*procs: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """SIGTERM every started process at once, then SIGKILL (and reap) each one that has not
    exited `timeout` seconds after its turn came."""
    started = [proc for proc in procs if proc is not None]
    for proc in started:
        proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
