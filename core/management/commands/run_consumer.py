"""`python manage.py run_consumer <name>`: run one registered bus consumer (core/consumers.py).

Runs until SIGTERM or SIGINT; then the batch in hand is finished, every message in it is acked
or nak'ed, and the process exits 0. Started while NATS is away, it waits for it (and still
exits at once on SIGTERM) rather than crash. Start several processes of the same consumer to
share the work: they bind to one durable consumer and JetStream hands each message to one of
them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.consumers import CONSUMERS, get_consumer, run_consumer
from core.metrics import dead_letters_total, process_started, serve_metrics
from core.stop_signal import stop_on_signals

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a bus consumer from the registry (e.g. normalizer)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=sorted(CONSUMERS))
        parser.add_argument("--batch", type=int, default=0, help="Messages per fetch.")
        parser.add_argument(
            "--concurrency", type=int, default=0, help="Messages handled at once (threads)."
        )
        parser.add_argument(
            "--max-messages", type=int, default=0, help="Exit after this many (tests, drills)."
        )
        parser.add_argument(
            "--idle-exit-s", type=float, default=0.0, help="Exit after this long with no message."
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
        spec = get_consumer(options["name"])
        if min(options["ack_wait"], options["batch"], options["concurrency"]) < 0:
            raise CommandError("--ack-wait, --batch and --concurrency must not be negative")
        if options["ack_wait"]:
            spec = dataclasses.replace(spec, ack_wait_s=options["ack_wait"])
        process_started(spec.name)
        dead_letters_total.labels(consumer=spec.name)  # the series exists from the start, at 0
        serve_metrics(options["metrics_port"])
        # core.consumers logs consumer_started and, with the counts, consumer_stopped: no
        # plain-text copy of either here.
        run_consumer(
            spec,
            batch_size=options["batch"] or None,
            concurrency=options["concurrency"] or None,
            max_messages=options["max_messages"] or None,
            idle_exit_s=options["idle_exit_s"] or None,
            should_stop=self.stopping.is_set,
        )
