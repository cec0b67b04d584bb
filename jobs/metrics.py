"""Prometheus metrics of the missed-webhook watchdog (jobs/watchdog.py; docs/phase-3/metrics.md).

The backfill's own metrics are in core/metrics.py, written by the worker; these are written
by the scheduler, which runs the watchdog.
"""

from __future__ import annotations

from prometheus_client import Counter

watchdog_findings_total = Counter(
    "watchdog_findings_total",
    "What the watchdog found, by reason (stale_data, subscription_missing, "
    "subscription_expired), repaired or not.",
    ["reason"],
)
watchdog_repairs_total = Counter(
    "watchdog_repairs_total",
    "Repairs the watchdog started, by reason: a catch-up job per person (stale_data), a "
    "subscription sync per lapsed subscription (subscription_missing, subscription_expired).",
    ["reason"],
)
