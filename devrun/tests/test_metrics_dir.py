"""The multiprocess metrics folder of `make run`: fresh at each start, dead pids forgotten."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devrun.metrics import fresh_metrics_dir, mark_dead_processes


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_start_empties_the_folder_an_earlier_run_left(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"left by a run stopped with kill -9")

    assert list(fresh_metrics_dir(folder).iterdir()) == []


def test_live_gauges_of_gone_processes_are_removed_and_counters_kept(tmp_path: Path) -> None:
    gone, alive = _exited_pid(), os.getpid()
    for name in (f"gauge_livesum_{gone}.db", f"gauge_livesum_{alive}.db", f"counter_{gone}.db"):
        (tmp_path / name).write_bytes(b"")

    assert mark_dead_processes(tmp_path) == {gone}

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"counter_{gone}.db",
        f"gauge_livesum_{alive}.db",
    ]
