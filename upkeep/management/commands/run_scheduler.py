"""`python manage.py run_scheduler`: run the scheduled upkeep (settings.UPKEEP_SCHEDULE).

Runs until SIGTERM or SIGINT. Start one per replica: a Postgres advisory lock makes one of them
the leader and the others wait to take over (upkeep/scheduler.py). On a signal it stops
scheduling, gives a run in progress `--grace` seconds to finish, and exits; a run still going
then is abandoned (its next tick retries it), so the process is gone within 10 s of SIGTERM
even when Postgres, NATS or S3 stop answering. `--once TASK` runs one task now and exits.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.metrics import process_started, serve_metrics
from core.stop_signal import stop_on_signals
from upkeep.scheduler import ScheduleError, UpkeepScheduler, schedule_triggers
from upkeep.services import upkeep_run
from upkeep.tasks import TASKS

logger = logging.getLogger(__name__)

# Seconds from SIGTERM to the end of the grace given to runs in progress; 1 s is left for exit.
STOP_DEADLINE_S = 9.0


class Command(BaseCommand):
    signalled_at: float | None = None
    help = "Run the scheduled upkeep: subscription renewal, raw retention, job reconcile."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", choices=sorted(TASKS), metavar="TASK",
            help=f"Run this task now and exit ({', '.join(sorted(TASKS))}).",
        )  # fmt: skip
        parser.add_argument(
            "--metrics-port", type=int, default=0, help="Serve /metrics here (0: off)."
        )
        parser.add_argument(
            "--lock-retry", type=float, default=5.0,
            help="Seconds between a standby's attempts to take the scheduler lock.",
        )  # fmt: skip
        parser.add_argument(
            "--grace", type=float, default=5.0,
            help="Seconds a run in progress gets to finish after SIGTERM (at most 8; less if "
            "noticing the signal took a while, so that the process is gone within 10 s).",
        )  # fmt: skip

    def _signalled(self) -> None:
        # Inside the signal handler: an assignment, no lock (core/stop_signal.py).
        self.signalled_at = time.monotonic()

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        self.signalled_at = None
        stop_on_signals(
            self.stopping, event="scheduler_stop_requested", log=logger, on_signal=self._signalled
        )
        if not 0 <= options["grace"] <= 8:
            raise CommandError("--grace must be between 0 and 8 seconds (SIGTERM deadline: 10)")
        if options["lock_retry"] <= 0:
            raise CommandError("--lock-retry must be positive")
        if not options["once"]:
            process_started("scheduler")
        serve_metrics(options["metrics_port"])

        if options["once"]:
            record = upkeep_run(task=options["once"], tick=None)
            counts = " ".join(f"{key}={value}" for key, value in record.counts.items())
            self.stdout.write(
                f"{record.task}: {record.outcome} in {record.duration_ms} ms {counts}"
            )
            if record.outcome == "error":
                raise CommandError(f"{record.task} failed; see the log")
            return

        try:
            triggers = schedule_triggers(settings.UPKEEP_SCHEDULE)
        except ScheduleError as exc:
            raise CommandError(str(exc)) from None
        scheduler = UpkeepScheduler(
            triggers,
            stopping=self.stopping,
            lock_retry_s=options["lock_retry"],
        )
        # Before the first lock attempt (the first use of Postgres): supervisors and tests wait
        # for this record, which comes even with every service down. The scheduler then logs
        # upkeep_leader_elected (with the tasks it schedules) or upkeep_standby.
        logger.info("scheduler_started", extra={"tasks": sorted(triggers)})
        scheduler.run()
        grace = options["grace"]
        if self.signalled_at is not None:
            # A lock attempt or check in hand when the signal came may have used some of the
            # 10 s (each is bounded by connect and TCP timeouts, see scheduler._connect_params).
            grace = max(0.0, min(grace, self.signalled_at + STOP_DEADLINE_S - time.monotonic()))
        unfinished = scheduler.shutdown(grace_s=grace)
        if unfinished:
            # Pool threads cannot be interrupted and would hold the interpreter's exit past the
            # deadline. The abandoned run's tick stays claimed; its next tick is the retry.
            logger.warning("scheduler_stopped", extra={"abandoned": unfinished})
            # os._exit skips the interpreter's exit and its flushes: flush the root logger's
            # handlers, which carry this record, first.
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        logger.info("scheduler_stopped", extra={"abandoned": []})
