"""What ingestion's tables say at scrape time (core/scrape_metrics.py registers these)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Min
from prometheus_client.metrics_core import Metric

from core.scrape_metrics import gauge
from ingestion import circuit_breaker, rate_budget
from ingestion.models import WebhookSubscription
from ingestion.relay import relay_backlog_counts


def relay_backlog_family() -> Iterable[Metric]:
    family = gauge(
        "relay_backlog",
        "Accepted events not yet published (publish) or archived to S3 (archive).",
        ["kind"],
    )
    for kind, count in relay_backlog_counts().items():
        family.add_metric([kind], count)
    return [family]


def rate_budget_family() -> Iterable[Metric]:
    family = gauge(
        "oura_rate_budget_remaining",
        "Oura requests each priority may still take in the current window (0 in a 429 pause).",
        ["priority"],
    )
    for priority, left in rate_budget.remaining_in_current_window().items():
        family.add_metric([priority.value], left)
    return [family]


def subscription_expiry_family() -> Iterable[Metric]:
    """The earliest expiry of each data type's webhook subscriptions (all event types)."""
    family = gauge(
        "oura_subscription_expires_timestamp_seconds",
        "Unix time at which the first of a data type's webhook subscriptions expires.",
        ["data_type"],
    )
    rows = (
        WebhookSubscription.objects.order_by("data_type")
        .values("data_type")
        .annotate(first=Min("expiration_time"))
        .values_list("data_type", "first")
    )
    for data_type, first in rows:
        family.add_metric([data_type], first.timestamp())
    return [family]


def circuit_state_family() -> Iterable[Metric]:
    family = gauge(
        "oura_circuit_state",
        "Oura circuit breaker per endpoint class: 0 closed, 1 half-open (probing), 2 open.",
        ["endpoint"],
    )
    for endpoint, snapshot in circuit_breaker.states().items():
        family.add_metric([endpoint], circuit_breaker.STATE_VALUE[snapshot.state])
    return [family]


READERS = (
    relay_backlog_family,
    rate_budget_family,
    subscription_expiry_family,
    circuit_state_family,
)
