"""Prometheus metrics of the scheduled upkeep (docs/phase-3/metrics.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

upkeep_runs_total = Counter(
    "upkeep_runs_total",
    "Scheduled upkeep runs, by task and outcome (ok, incomplete, error, skipped).",
    ["task", "outcome"],
)
upkeep_run_duration_seconds = Histogram(
    "upkeep_run_duration_seconds",
    "Time one upkeep run took, in seconds.",
    ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
upkeep_last_success_timestamp = Gauge(
    "upkeep_last_success_timestamp",
    "Unix time at which the task last finished with outcome ok.",
    ["task"],
    multiprocess_mode="max",  # the latest success of any process, dead ones included
)
upkeep_leader = Gauge(
    "upkeep_leader",
    "Processes holding the scheduler lock and scheduling (1 in a healthy deployment).",
    multiprocess_mode="livesum",
)
