"""`python manage.py run_consumer <name>`: run one registered bus consumer (core/consumers.py).

A name may stand for several registry entries ("lanes": `normalizer` runs its webhook lane
and its backfill-page lane), each on its own durable and thread, so one lane's backlog never
holds up the other. Runs until SIGTERM or SIGINT; then each lane finishes the batch in hand,
every message in it is acked or nak'ed, and the process exits 0. Started while NATS is away,
it waits for it (and still exits at once on SIGTERM) rather than crash. Start several
processes of the same consumer to share the work: they bind to the same durables and
JetStream hands each message to one of them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from core.consumers import ConsumerSpec, RunStats, processes, run_consumer
from core.metrics import dead_letters_total, process_started, serve_metrics
from core.stop_signal import stop_on_signals

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a bus consumer from the registry (e.g. normalizer)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=sorted(processes()))
        parser.add_argument("--batch", type=int, default=0, help="Messages per fetch.")
        parser.add_argument(
            "--concurrency", type=int, default=0, help="Messages handled at once (threads)."
        )
        parser.add_argument(
            "--max-messages",
            type=int,
            default=0,
            help="Exit after this many, per lane (tests, drills).",
        )
        parser.add_argument(
            "--idle-exit-s",
            type=float,
            default=0.0,
            help="Exit after this long with no message (every lane idle).",
        )
        parser.add_argument(
            "--ack-wait",
            type=float,
            default=0.0,
            help="Override AckWait in seconds (drills and tests of crash redelivery).",
        )
        parser.add_argument(
            "--metrics-port", type=int, default=0, help="Serve /metrics here (0: off)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        stop_on_signals(self.stopping, event="consumer_stop_requested", log=logger)
        if min(options["ack_wait"], options["batch"], options["concurrency"]) < 0:
            raise CommandError("--ack-wait, --batch and --concurrency must not be negative")
        lanes = processes()[options["name"]]
        if options["ack_wait"]:
            lanes = [dataclasses.replace(spec, ack_wait_s=options["ack_wait"]) for spec in lanes]
        process_started(options["name"])
        for spec in lanes:
            dead_letters_total.labels(consumer=spec.name)  # each series exists from the start
        serve_metrics(options["metrics_port"])
        # core.consumers logs consumer_started and, with the counts, consumer_stopped, per
        # lane: no plain-text copy of either here.
        failures: list[BaseException] = []

        def run_lane(spec: ConsumerSpec) -> RunStats | None:
            try:
                return run_consumer(
                    spec,
                    batch_size=options["batch"] or None,
                    concurrency=options["concurrency"] or None,
                    max_messages=options["max_messages"] or None,
                    idle_exit_s=options["idle_exit_s"] or None,
                    should_stop=self.stopping.is_set,
                )
            except BaseException as exc:
                failures.append(exc)
                # One lane down is the process down: a supervisor restarts it whole, rather
                # than a lane quietly missing while the other keeps the process looking alive.
                self.stopping.set()
                return None
            finally:
                connections.close_all()

        if len(lanes) == 1:
            run_lane(lanes[0])
        else:
            threads = [
                threading.Thread(target=run_lane, args=(spec,), name=f"lane-{spec.name}")
                for spec in lanes
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if failures:
            raise failures[0]
