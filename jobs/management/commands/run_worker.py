"""`python manage.py run_worker [--threads N]`: one dramatiq worker process, in-process.

The same as `dramatiq dramatiq_postgres.django.worker --processes 1 --threads N --queues
backfill`, without the CLI's process supervisor: one process that stops cleanly on
SIGTERM/SIGINT (the message in hand is finished or, on a second signal, abandoned and
requeued by broker maintenance), which is what a container or `make run` wants.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import dramatiq
from django.core.management.base import BaseCommand, CommandParser
from django.utils.module_loading import autodiscover_modules

from core.metrics import serve_metrics


class Command(BaseCommand):
    help = "Run a dramatiq worker for the backfill queue (dramatiq-postgres broker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--threads", type=int, default=2, help="Worker threads.")
        parser.add_argument("--queues", default="backfill", help="Comma-separated queues.")
        parser.add_argument(
            "--metrics-port", type=int, default=0, help="Serve /metrics here (0: off)."
        )

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stdout.write(f"{signal.Signals(signum).name} received, stopping...")
        self.stopping.set()

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        serve_metrics(options["metrics_port"])
        autodiscover_modules("actors")  # every app's actors.py, as the dramatiq CLI entry does
        broker = dramatiq.get_broker()
        queues = {q.strip() for q in options["queues"].split(",") if q.strip()}
        worker = dramatiq.Worker(broker, queues=queues, worker_threads=max(1, options["threads"]))
        worker.start()
        self.stdout.write(f"run_worker is running (queues: {', '.join(sorted(queues))})")
        try:
            self.stopping.wait()
        finally:
            worker.stop(timeout=30_000)
            broker.close()
