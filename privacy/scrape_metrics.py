"""Erasure requests by state, read at scrape time (core/scrape_metrics.py registers it)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count
from prometheus_client.metrics_core import Metric

from core.scrape_metrics import gauge
from privacy.models import ErasureRequest


def erasure_requests_family() -> Iterable[Metric]:
    counts: dict[str, int] = dict(
        ErasureRequest.objects.order_by()
        .values("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    family = gauge(
        "erasure_requests",
        "Erasure requests in each state (requested, running, failed, done).",
        ["state"],
    )
    for state in ErasureRequest.Status.values:
        family.add_metric([state], counts.get(state, 0))
    return [family]
