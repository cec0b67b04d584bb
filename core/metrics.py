"""Prometheus metrics written by the processes (docs/phase-3/metrics.md).

The draft's five names (section 10) are here, beside what an operator needs from the
processes themselves. Values that live in stores (JetStream consumer lag, relay backlog,
open dead letters, rate budget, subscriptions, erasures) are read at scrape time instead:
core/scrape_metrics.py.

Under `make run` every child writes its values to PROMETHEUS_MULTIPROC_DIR and web's
/metrics adds up every process's files (prometheus_client's multiprocess mode), so each
gauge names how its processes' values combine (`multiprocess_mode`). Without that folder
(a container per process) each long-running command serves its own values on
`--metrics-port` through `serve_metrics()`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from django.conf import settings
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

webhook_accepted_total = Counter(
    "webhook_accepted_total", "Webhook deliveries accepted (202).", ["provider"]
)
webhook_invalid_total = Counter(
    "webhook_invalid_total", "Webhook deliveries rejected, by reason.", ["provider", "reason"]
)
webhook_duplicate_total = Counter(
    "webhook_duplicate_total", "Webhook deliveries answered 409 duplicate_event.", ["provider"]
)
webhook_commit_batch_size = Histogram(
    "webhook_commit_batch_size",
    "Deliveries written by one statement of the webhook path's group commit (per process).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
normalize_duration_ms = Histogram(
    "normalize_duration_ms",
    "Time to normalize one raw message, in milliseconds.",
    ["kind"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
# Written by the normalizer (normalized/): from Oura's webhook reaching us to the row.
webhook_to_row_seconds = Histogram(
    "webhook_to_row_seconds",
    "Time from a webhook's arrival to its normalized row being committed, in seconds.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Each worker process counts its own runs; /metrics shows the sum over live processes.
job_backfill_inflight = Gauge(
    "job_backfill_inflight", "Backfill jobs currently running.", multiprocess_mode="livesum"
)
# A counter: prometheus_client exposes the sample as provider_rate_limit_hits_total (the
# family, on the TYPE line, keeps this name); a recording rule gives back the bare name.
provider_rate_limit_hits = Counter(
    "provider_rate_limit_hits",
    "429 answers from the provider, and local budget waits.",
    ["provider", "source"],
)
dead_letters_total = Counter("dead_letters_total", "Messages dead-lettered.", ["consumer"])
backfill_job_duration_seconds = Histogram(
    "backfill_job_duration_seconds",
    "From a backfill job's first run to its terminal state, by outcome "
    "(succeeded, succeeded_with_errors, failed, cancelled), in seconds.",
    ["outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 48 * 3600),
)
oura_request_duration_seconds = Histogram(
    "oura_request_duration_seconds",
    "One HTTP attempt to Oura, by endpoint class and status (HTTP code, or error).",
    ["endpoint", "status"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# Coalesced webhook fetches (normalized/coalesce.py): how each webhook's document was read,
# and what each range request that stood in for several by-id fetches came to.
oura_webhook_documents_total = Counter(
    "oura_webhook_documents_total",
    "Webhook documents read from Oura, by how (by_id, or from a coalesced range request).",
    ["via"],
)
oura_range_fetches_total = Counter(
    "oura_range_fetches_total",
    "Coalesced range requests for webhooks, by outcome (ok, failed, needs_reauth).",
    ["outcome"],
)
http_responses_total = Counter(
    "http_responses_total",
    "Responses of the web process, by route (URL name, or unmatched) and status class.",
    ["route", "status_class"],
)
relay_events_total = Counter(
    "relay_events_total",
    "Raw events the relay handled, by queue (publish, archive) and outcome (done, failed).",
    ["kind", "outcome"],
)
health_processes = Gauge(
    "health_processes",
    "Live processes of each role (web worker, relay, normalizer, worker, scheduler).",
    ["role"],
    multiprocess_mode="livesum",
)


def process_started(role: str) -> None:
    """Count this process under `role`, so /metrics shows every role that is running."""
    health_processes.labels(role=role).set(1)


def multiprocess_dir() -> str:
    return os.environ.get(MULTIPROC_DIR_VARIABLE, "")


class _DefaultRegistry(Collector):
    """This process's own metrics, for a registry that adds collectors of its own."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def process_registry() -> CollectorRegistry:
    """Every process's metrics when they share a multiprocess folder, else this process's."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    else:
        registry.register(_DefaultRegistry())
    return registry


def serve_metrics(port: int) -> None:
    """This process's metrics on `port` (0: off), for deployments with no shared folder."""
    if port:
        start_http_server(port, addr=settings.METRICS_ADDR, registry=process_registry())
