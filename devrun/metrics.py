"""The folder where `make run`'s children write their metrics (prometheus_client multiprocess).

Every child gets PROMETHEUS_MULTIPROC_DIR; web's /metrics adds up every file in it, so any
granian worker answers a scrape with the series of every process. The folder is emptied at
each start: files of an earlier run (stopped by kill -9 or not) would otherwise be added to
this run's counters. Live gauges (job_backfill_inflight, health_processes, upkeep_leader)
must forget a process once it is gone: `mark_dead_processes` removes their files for every
pid that no longer runs, granian's own workers included (the supervisor only knows their
parent).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from devstack.services import pid_alive

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def fresh_metrics_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def mark_dead_processes(path: Path, pids: set[int] | None = None) -> set[int]:
    """Forget the live gauges of `pids`, and of every other process that is gone; their
    counters and histograms stay, as they must."""
    dead = set(pids or ())
    for file in path.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(file.name)
        if match and not pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
    return dead
