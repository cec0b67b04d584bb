"""The reduced chaos run: `python -m bench.chaos --reduced`, as `make test` runs it.

The whole system (granian, relay, two normalizers, worker, reconciler) on its own embedded
services with a 3-node JetStream cluster, 600 webhook deliveries and two small backfills, and
one fault of each kind: a SIGKILL of a normalizer, the relay, a web worker and the worker,
the HEALTH_RAW stream leader killed and restarted, Postgres restarted, S3 unreachable and
Oura answering 5xx, then 429, for 5 s each. bench/chaos.py proves the invariants from the
stores; this test holds it to them. The full run (30,000 deliveries) is bench/README.md's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
# The session's services are not the run's: it starts its own, cluster and all.
_SESSION_VARIABLES = (
    "DATABASE_URL",
    "NATS_URL",
    "NATS_STREAM_REPLICAS",
    "S3_ENDPOINT_URL",
    "DEVSTACK_ROOT",
    "DJANGO_SETTINGS_MODULE",
)


@pytest.mark.services
@pytest.mark.timeout(480)
def test_reduced_chaos_run_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    root = PROJECT_DIR / f".devstack-chaos-test-{os.getpid()}"
    summary_file = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if k not in _SESSION_VARIABLES}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "bench.chaos", "--reduced", "--root", str(root),
             "--summary", str(summary_file)],
            env=env, cwd=PROJECT_DIR, capture_output=True, timeout=450, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert summary_file.exists(), run.stderr.decode(errors="replace")[-4000:]
    summary = json.loads(summary_file.read_text())
    failed = {
        name: invariant.get("examples") or invariant
        for name, invariant in summary["invariants"].items()
        if not invariant["pass"]
    }
    assert failed == {}
    assert run.returncode == 0
    counts = summary["counts"]
    assert counts["deliveries_sent"] == 600
    assert counts["exact_duplicates"] == 30
    balance = summary["invariants"]["accepted_equals_stored_deadlettered_rejected"]
    assert balance["dead_lettered"] == counts["by_kind"]["poison"]
    # Every fault of the schedule happened.
    assert {fault["fault"] for fault in summary["faults"]} == {
        "kill", "nats", "postgres", "s3", "oura_5xx", "oura_429",
    }  # fmt: skip
    assert all("error" not in fault["note"] for fault in summary["faults"])
