"""`python manage.py run_worker [--threads N]`: one dramatiq worker process, in-process.

The same as `dramatiq dramatiq_postgres.django.worker --processes 1 --threads N --queues
backfill`, without the CLI's process supervisor: one process that stops on SIGTERM/SIGINT
within about 8 s, Postgres up or not, which is what a container or `make run` wants.
A message that finishes inside MESSAGES_BUDGET_S is acked; one still running after it (a
backfill can take hours) is left to broker maintenance, which requeues it once this
worker's heartbeat is older than DRAMATIQ_HEARTBEAT_TTL_S, and the run resumes from its
checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils.module_loading import autodiscover_modules
from dramatiq_postgres import PostgresBroker

from core.metrics import backfill_job_duration_seconds, process_started, serve_metrics
from core.stop_signal import stop_on_signals

logger = logging.getLogger(__name__)

# From SIGTERM to exit, under the 10 s that supervisors (and `make run`) give before SIGKILL,
# so the stop is ours. Messages in hand get MESSAGES_BUDGET_S to finish and be acked; then
# the consumers get HOUSEKEEPING_S to hand back what they prefetched and let go.
MESSAGES_BUDGET_S = 6.0
HOUSEKEEPING_S = 2.0
# How long the broker's pool may wait for a connection. psycopg_pool's default is 30 s and
# dramatiq-postgres retries a failed checkout up to 10 times, sleeping up to 30 s between;
# every one of those waits is deaf to SIGTERM.
POOL_CHECKOUT_TIMEOUT_S = 2.0


def bound_broker_waits(broker: dramatiq.Broker) -> None:
    """Give the dramatiq-postgres pool the timeouts Django's own connections have.

    The app builds the pool from DATABASES' NAME/USER/PASSWORD/HOST/PORT only, so its
    connections have no connect_timeout: a server that accepts and never answers holds a
    connect (and the thread in it) until the OS gives up, minutes later. Done before the
    worker starts, while the pool has opened no connection yet.
    """
    if not isinstance(broker, PostgresBroker):
        return  # a test broker, or another one: nothing of ours to bound
    connect_timeout = settings.DATABASES["default"].get("OPTIONS", {}).get("connect_timeout")
    if connect_timeout is not None:
        broker.pool.kwargs.setdefault("connect_timeout", str(connect_timeout))
    broker.pool.timeout = POOL_CHECKOUT_TIMEOUT_S


def _in_background(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True, name=name)
    thread.start()
    return thread


def stop_within(
    worker: dramatiq.Worker,
    broker: dramatiq.Broker,
    *,
    messages_budget_s: float = MESSAGES_BUDGET_S,
    housekeeping_s: float = HOUSEKEEPING_S,
) -> bool:
    """Stop the worker and close the broker in bounded time; True if nothing was left behind.

    dramatiq's Worker.stop joins the worker threads, then the consumer threads, each with the
    whole timeout, then requeues prefetched messages through the pool. With Postgres away a
    consumer thread sits in dramatiq-postgres' checkout retries (sleeps that no stop reaches),
    so Worker.stop runs on a daemon thread and is waited for only so long: dramatiq's threads
    are daemons too, and what they leave (a claimed message) broker maintenance requeues.
    """
    stopper = _in_background(
        lambda: worker.stop(timeout=int((messages_budget_s + housekeeping_s) * 1000)),
        "worker-stop",
    )
    # The messages in hand: worker threads finish them and ack through the pool, so the pool
    # stays open until they are done.
    deadline = time.monotonic() + messages_budget_s
    for worker_thread in list(worker.workers):
        worker_thread.join(max(0.0, deadline - time.monotonic()))
    # Closing the pool fails every checkout still waiting (PoolClosed is not retried), so
    # consumers stuck on a Postgres that is down give up now instead of after their retries.
    closer = _in_background(broker.close, "broker-close")
    deadline = time.monotonic() + housekeeping_s
    for thread in (stopper, closer):
        thread.join(max(0.0, deadline - time.monotonic()))
    if stopper.is_alive() or closer.is_alive():
        logger.warning("worker_stop_incomplete", extra={"housekeeping_s": housekeeping_s})
        return False
    return True


class Command(BaseCommand):
    help = "Run a dramatiq worker for the backfill queue (dramatiq-postgres broker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--threads", type=int, default=2, help="Worker threads.")
        parser.add_argument("--queues", default="backfill", help="Comma-separated queues.")
        parser.add_argument(
            "--metrics-port", type=int, default=0, help="Serve /metrics here (0: off)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        stop_on_signals(self.stopping, event="worker_stop_requested", log=logger)
        process_started("worker")
        for outcome in ("succeeded", "succeeded_with_errors", "failed", "cancelled"):  # all series
            backfill_job_duration_seconds.labels(outcome=outcome)
        serve_metrics(options["metrics_port"])
        autodiscover_modules("actors")  # every app's actors.py, as the dramatiq CLI entry does
        broker = dramatiq.get_broker()
        bound_broker_waits(broker)
        queues = {q.strip() for q in options["queues"].split(",") if q.strip()}
        threads = max(1, options["threads"])
        worker = dramatiq.Worker(broker, queues=queues, worker_threads=threads)
        worker.start()
        # Supervisors and tests wait for this record; it comes with Postgres down too (the
        # worker's threads retry their connections in the background).
        logger.info("worker_started", extra={"queues": sorted(queues), "threads": threads})
        try:
            self.stopping.wait()
        finally:
            clean = stop_within(worker, broker)
            # clean=False: something was left to broker maintenance (worker_stop_incomplete).
            logger.info("worker_stopped", extra={"clean": clean})
