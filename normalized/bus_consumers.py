"""The normalizer's two lanes on the bus, registered with core.consumers from ready().

Webhooks and backfill pages are the same work (Oura documents to rows, one handler), but not
the same urgency: a person waits for a webhook's row, nobody waits for the 40th page of a
two-year backfill. On one durable they were first in, first out, so a fleet's backfill put
webhooks behind thousands of pages (bench/README.md, "Fleet backfill"). Each lane is its own
durable and its own thread in `run_consumer normalizer`; the Oura budget already gives
webhooks priority (ingestion/rate_budget.py), now the queue does too.
"""

from __future__ import annotations

import dataclasses

from core.consumers import ConsumerSpec
from core.messages import WEBHOOK_SUBJECT, page_subject
from ingestion.data_types import BACKFILL_TYPES

WEBHOOKS = ConsumerSpec(
    # The name (and durable) the single lane had: its dead letters, metrics and alerts keep
    # their labels, and the durable keeps its position (only its filter narrows).
    name="normalizer",
    process="normalizer",
    stream="HEALTH_RAW",
    durable="normalizer",
    filter_subject=WEBHOOK_SUBJECT,
    handler="normalized.consumers:handle_raw_message",
    # Webhook create/update messages of a batch share one transaction (one commit, one WAL
    # flush); everything else goes through handle_raw_message, one by one.
    batch_handler="normalized.consumers:handle_raw_batch",
    # While Oura's data routes are down (their circuit breaker is open), fetch nothing.
    pause="ingestion.circuit_breaker:normalizer_pause",
    description="raw Oura webhooks -> normalized rows",
    # A webhook costs one Oura fetch and one S3 PUT (~10-50 ms); 50 of them finish well
    # inside AckWait, and a SIGTERM waits for at most one batch.
    batch_size=50,
    # Handling a webhook is mostly waiting (Oura, S3, Postgres commit, NATS ack), so a few
    # threads per process multiply its throughput; correctness does not depend on the order
    # within a batch (per-user advisory lock, observation times, tombstones).
    concurrency=8,
    # Only decides how soon a crashed process's messages go to another process: the runner
    # sends progress heartbeats (+WPI) for every message it holds, so a slow Oura (5 retries,
    # Retry-After up to 120 s) never causes a duplicate delivery.
    ack_wait_s=30.0,
    # With the delays below, 20 deliveries span about 2 h 10 min of retrying: longer than
    # Oura's own webhook retry window (~1 h) and a typical S3/Postgres incident, short enough
    # that a stuck message reaches a person the same morning.
    max_deliver=20,
    retry_delays_s=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)

# The same handlers, AckWait and retries; its own durable, subjects and pace.
PAGES = dataclasses.replace(
    WEBHOOKS,
    # A page was fetched by the backfill worker and is read back from S3: an Oura outage
    # (its breaker open) is no reason to stop writing it.
    pause="",
    name="normalizer_pages",
    durable="normalizer_pages",
    filter_subject="",
    # Every collection a backfill pages, from the registry: one subject each, since the
    # webhook subject shares their prefix and JetStream filters cannot exclude one.
    filter_subjects=tuple(page_subject(name) for name in sorted(BACKFILL_TYPES)),
    takes_over="normalizer",
    description="raw Oura backfill pages -> normalized rows",
    # A page is an S3 read and up to a few hundred documents mapped and upserted: a small
    # batch keeps a SIGTERM's wait short, and four at a time leave the CPU to webhooks.
    batch_size=8,
    concurrency=4,
)
