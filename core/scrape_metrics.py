"""Metrics read from the stores at scrape time, for /metrics only.

Some values live in Postgres or JetStream, not in any process: how far the consumers are
behind, what the relay has not yet handled, the dead letters nobody has replayed, the Oura
budget left in this window. Reading them when Prometheus asks gives the same answer whichever
process serves the scrape, and still answers while the process that would have set them is
down (which is when a backlog grows).

Each app registers the readers of its own tables in `AppConfig.ready` (core cannot import the
apps above it); core reads its dead letters and the JetStream consumers of its registry
itself. A scrape builds a fresh registry with this collector (core/metrics_view.py), so the
values are read once per scrape, with short timeouts. A source that fails is reported as
`metrics_source_up{source} 0` and its series are left out; the scrape still answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Literal

from django.db import connection, transaction
from django.db.models import Count
from nats.js.errors import NotFoundError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from core import bus
from core.consumers import CONSUMERS
from core.models import DeadLetter

logger = logging.getLogger(__name__)

Source = Literal["postgres", "nats"]
SOURCES: tuple[Source, ...] = ("postgres", "nats")
PostgresReader = Callable[[], Iterable[Metric]]

# Each source gets about this long: a scrape must answer well inside Prometheus' timeout
# (10 s by default) with a store down. Postgres' own connect timeout is
# DATABASE_CONNECT_TIMEOUT (a refused connection fails at once).
STATEMENT_TIMEOUT_MS = 1000
NATS_TIMEOUT_S = 1.0

_postgres_readers: list[PostgresReader] = []


def register_postgres_reader(reader: PostgresReader) -> None:
    """Add a reader of Postgres tables; it returns metric families, each with all its series."""
    if reader not in _postgres_readers:
        _postgres_readers.append(reader)


def gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def dead_letters_open_family() -> Iterable[Metric]:
    """Dead letters not replayed or resolved, per consumer (every registered one, 0 too)."""
    # The same rows as core.services.dead_letters_open, which this layer cannot import
    # without pulling in the audit port's wiring.
    counts: dict[str, int] = dict(
        DeadLetter.objects.filter(resolved=False)
        .order_by()
        .values("consumer")
        .annotate(n=Count("id"))
        .values_list("consumer", "n")
    )
    family = gauge(
        "dead_letters_open",
        "Dead-lettered messages not yet replayed or resolved, per consumer.",
        ["consumer"],
    )
    for consumer in sorted(set(CONSUMERS) | set(counts)):
        family.add_metric([consumer], counts.get(consumer, 0))
    return [family]


def _read_postgres() -> list[Metric]:
    families: list[Metric] = []
    for reader in _postgres_readers:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
            families.extend(reader())
    return families


async def _jetstream_families(timeout_s: float) -> list[Metric]:
    nc = await bus.connect(
        name="metrics-scrape",
        first_connect_timeout=timeout_s,
        connect_timeout=timeout_s,
        allow_reconnect=False,
        max_reconnect_attempts=0,
    )
    try:
        js = nc.jetstream(timeout=timeout_s)
        specs = list(CONSUMERS.values())
        infos = await asyncio.gather(
            *(js.consumer_info(spec.stream, spec.durable) for spec in specs),
            return_exceptions=True,
        )
    finally:
        await nc.close()
    labels = ["stream", "durable"]
    pending = gauge(
        "jetstream_consumer_pending", "Messages not yet delivered to the durable.", labels
    )
    ack_pending = gauge(
        "jetstream_consumer_ack_pending", "Messages delivered and not yet acked.", labels
    )
    redelivered = gauge(
        "jetstream_consumer_redelivered", "Messages delivered more than once, unacked.", labels
    )
    for spec, info in zip(specs, infos, strict=True):
        if isinstance(info, NotFoundError):
            continue  # not created yet: its consumer process creates it when it starts
        if isinstance(info, BaseException):
            raise info
        key = [spec.stream, spec.durable]
        pending.add_metric(key, info.num_pending or 0)
        ack_pending.add_metric(key, info.num_ack_pending or 0)
        redelivered.add_metric(key, info.num_redelivered or 0)
    return [pending, ack_pending, redelivered]


def _read_nats() -> list[Metric]:
    return asyncio.run(
        asyncio.wait_for(_jetstream_families(NATS_TIMEOUT_S), timeout=2 * NATS_TIMEOUT_S)
    )


_READ: dict[Source, Callable[[], list[Metric]]] = {"postgres": _read_postgres, "nats": _read_nats}


class StoreCollector(Collector):
    """What the registered readers and the JetStream consumers report, read now."""

    def collect(self) -> Iterable[Metric]:
        up = gauge(
            "metrics_source_up",
            "1 if the last scrape read this store, 0 if it failed (its series are missing).",
            ["source"],
        )
        for source in SOURCES:
            try:
                families = _READ[source]()
            except Exception as exc:  # any failure of a store must leave the scrape standing
                logger.warning(
                    "metrics_source_failed",
                    extra={"source": source, "error_type": type(exc).__name__},
                )
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up
