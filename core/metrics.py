"""Prometheus metrics named by the design draft (section 10), plus backlog gauges.

Served at /metrics by the web process; long-running commands expose their own port
(METRICS_PORT) through `serve_metrics()`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

webhook_accepted_total = Counter(
    "webhook_accepted_total", "Webhook deliveries accepted (202).", ["provider"]
)
webhook_invalid_total = Counter(
    "webhook_invalid_total", "Webhook deliveries rejected, by reason.", ["provider", "reason"]
)
webhook_duplicate_total = Counter(
    "webhook_duplicate_total", "Webhook deliveries answered 409 duplicate_event.", ["provider"]
)
normalize_duration_ms = Histogram(
    "normalize_duration_ms",
    "Time to normalize one raw message, in milliseconds.",
    ["kind"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
job_backfill_inflight = Gauge("job_backfill_inflight", "Backfill jobs currently running.")
provider_rate_limit_hits = Counter(
    "provider_rate_limit_hits",
    "429 answers from the provider, and local budget waits.",
    ["provider", "source"],
)
relay_backlog = Gauge("relay_backlog", "Accepted events not yet archived or published.", ["kind"])
dead_letters_total = Counter("dead_letters_total", "Messages dead-lettered.", ["consumer"])


def serve_metrics(port: int) -> None:
    if port:
        start_http_server(port, addr="127.0.0.1")
