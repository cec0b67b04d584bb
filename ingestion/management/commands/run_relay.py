"""`python manage.py run_relay`: archive raw events to S3 and publish what is unpublished.

Runs until SIGTERM or SIGINT, then finishes the row in hand, commits the batch's bookkeeping
and exits (the way healthchecks' sendalerts does). `--once` drains both queues and exits.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import InterfaceError, OperationalError, close_old_connections, connections

from core.metrics import process_started, relay_events_total, serve_metrics
from core.stop_signal import stop_on_signals
from ingestion.relay import PassResult, relay_backlog_counts, relay_drain, relay_step

logger = logging.getLogger(__name__)


def _count(kind: str, result: PassResult) -> None:
    relay_events_total.labels(kind=kind, outcome="done").inc(result.done)
    relay_events_total.labels(kind=kind, outcome="failed").inc(result.failed)


class Command(BaseCommand):
    help = "Archive accepted raw events to S3 and publish the ones not yet on JetStream."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Drain both queues and exit.")
        parser.add_argument("--batch-size", type=int, default=100)
        parser.add_argument(
            "--interval", type=float, default=1.0, help="Seconds to sleep when idle."
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=2.0,
            help="Leave rows younger than this to the request path that is publishing them.",
        )
        parser.add_argument("--workers", type=int, default=4, help="Parallel S3 PUTs.")
        parser.add_argument(
            "--metrics-port", type=int, default=0, help="Serve /metrics here (0: off)."
        )
        parser.add_argument(
            "--nice",
            type=int,
            default=0,
            help="Raise this process's niceness by N (0-19). On a host shared with the web "
            "server, archiving then takes only the CPU that webhooks leave idle: a burst "
            "builds an archive backlog (metric relay_backlog) instead of slower 202s.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        stop_on_signals(self.stopping, event="relay_stop_requested", log=logger)
        process_started("relay")
        for kind in ("publish", "archive"):  # every series from the start, at 0
            _count(kind, PassResult())
        serve_metrics(options["metrics_port"])
        batch_size: int = options["batch_size"]
        grace: float = options["grace"]
        workers: int = options["workers"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if not 0 <= options["nice"] <= 19:
            raise CommandError("--nice must be between 0 and 19")
        if options["nice"]:
            os.nice(options["nice"])

        if options["once"]:
            totals = relay_drain(
                batch_size=batch_size, grace_s=grace, workers=workers,
                should_stop=self.stopping.is_set,
            )  # fmt: skip
            backlog = relay_backlog_counts()
            self.stdout.write(
                f"published={totals.published} archived={totals.archived} "
                f"failed={totals.failed} backlog_publish={backlog['publish']} "
                f"backlog_archive={backlog['archive']}"
            )
            if totals.unavailable:
                raise CommandError("NATS or S3 was unavailable; the backlog remains")
            return

        # Before the loop's first database access: supervisors and tests wait for this record,
        # which comes even with every service down.
        logger.info(
            "relay_started",
            extra={"batch_size": batch_size, "grace_s": grace, "workers": workers,
                   "interval_s": options["interval"], "nice": options["nice"]},
        )  # fmt: skip
        while not self.stopping.is_set():
            close_old_connections()  # a Postgres restart must not leave us on a dead socket
            try:
                published, archived = relay_step(
                    batch_size=batch_size, grace_s=grace, workers=workers,
                    should_stop=self.stopping.is_set,
                )  # fmt: skip
                _count("publish", published)
                _count("archive", archived)
            except (OperationalError, InterfaceError):
                # Postgres is away: nothing can be claimed; try again after the interval.
                connections.close_all()
                self.stopping.wait(options["interval"])
                continue
            idle = not published.done and not archived.done
            if idle or published.unavailable or archived.unavailable:
                self.stopping.wait(options["interval"])
        logger.info("relay_stopped")
