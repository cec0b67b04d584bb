"""`python manage.py reconcile_jobs [--every S]`: repair jobs whose message or worker is gone.

Once by default (cron-friendly); `--every S` loops until SIGTERM/SIGINT. See jobs_reconcile.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from jobs.services import JOB_STALE_AFTER_S, QUEUED_GRACE_S, jobs_reconcile


class Command(BaseCommand):
    help = "Re-enqueue queued jobs whose message is missing; resume jobs whose worker died."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=float, default=0.0, help="Loop, sleeping S seconds.")
        parser.add_argument("--stale-after", type=float, default=JOB_STALE_AFTER_S,
                            help="Seconds without heartbeat before a running job's worker "
                                 "is presumed dead.")  # fmt: skip
        parser.add_argument(
            "--queued-grace",
            type=float,
            default=QUEUED_GRACE_S,
            help="Seconds a queued job waits before its message is checked.",
        )

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        while True:
            close_old_connections()
            report = jobs_reconcile(
                stale_after_s=options["stale_after"], queued_grace_s=options["queued_grace"]
            )
            self.stdout.write(
                f"resent={len(report.resent)} resumed={len(report.resumed)} "
                f"cancelled={len(report.cancelled)} failed={len(report.failed)}"
            )
            if options["every"] <= 0 or self.stopping.wait(options["every"]):
                return
