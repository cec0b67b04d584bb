"""Running one upkeep task: claim its tick, run it, audit and measure the run.

A run never raises: a failing task is logged (error type only, never its message, which may
quote values) and recorded, and the scheduler simply fires it again at its next tick.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import close_old_connections, connection

from audit.models import AuditEntry
from audit.services import audit_record
from upkeep.metrics import (
    upkeep_last_success_timestamp,
    upkeep_run_duration_seconds,
    upkeep_runs_total,
)
from upkeep.models import UpkeepTick
from upkeep.tasks import TASKS

logger = logging.getLogger(__name__)

AUDIT_ACTION = AuditEntry.Action.UPKEEP_RUN
AUDIT_ACTOR = "scheduler"
SCHEDULER_ID = f"{socket.gethostname()}:{os.getpid()}"[:120]


@dataclass(frozen=True)
class RunRecord:
    task: str
    outcome: str  # ok | incomplete | error | skipped
    duration_ms: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def upkeep_tick_claim(*, task: str, tick: datetime) -> bool:
    """Move the task's last tick forward to `tick`; True only for the caller that moved it.

    Why a row and not an advisory lock per run: a lock held during the run only keeps two runs
    from overlapping; a second scheduler firing the same tick a moment after the first one had
    finished would take the free lock and run it again. One conditional upsert on the task's
    row makes the tick itself the unit: for a given (task, tick), exactly one caller ever gets
    a row back, whenever the others arrive, across restarts. A claimed tick whose run then
    fails is not rerun; its next tick is the retry.
    """
    table = connection.ops.quote_name(UpkeepTick._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS t (task, last_tick, claimed_by, claimed_at) "  # noqa: S608 - table name from the model
            "VALUES (%s, %s, %s, now()) "
            "ON CONFLICT (task) DO UPDATE SET last_tick = EXCLUDED.last_tick, "
            "claimed_by = EXCLUDED.claimed_by, claimed_at = EXCLUDED.claimed_at "
            "WHERE t.last_tick < EXCLUDED.last_tick "
            "RETURNING 1",
            [task, tick, SCHEDULER_ID],
        )
        return cursor.fetchone() is not None


def upkeep_run(*, task: str, tick: datetime | None) -> RunRecord:
    """Run `task` once for `tick` (None: an operator's run now, which claims no tick)."""
    spec = TASKS[task]
    started = time.monotonic()
    # Pool threads keep their connection between ticks hours apart; a Postgres restart in
    # between must not leave the run on a dead socket.
    close_old_connections()
    try:
        if tick is not None and not upkeep_tick_claim(task=task, tick=tick):
            logger.info("upkeep_tick_already_run", extra={"task": task, "tick": tick.isoformat()})
            upkeep_runs_total.labels(task=task, outcome="skipped").inc()
            return RunRecord(task=task, outcome="skipped")
        result = spec.run()
        outcome, counts = ("ok" if result.complete else "incomplete"), result.counts
    except Exception as exc:
        # Broad on purpose: whatever a task raises, the scheduler keeps going.
        logger.error(
            "upkeep_run_failed",
            extra={"task": task, "tick": _iso(tick), "error_type": type(exc).__name__},
        )
        outcome, counts = "error", {}
    duration = time.monotonic() - started
    record = RunRecord(
        task=task, outcome=outcome, duration_ms=round(duration * 1000), counts=counts
    )
    upkeep_runs_total.labels(task=task, outcome=outcome).inc()
    upkeep_run_duration_seconds.labels(task=task).observe(duration)
    if outcome == "ok":
        upkeep_last_success_timestamp.labels(task=task).set(time.time())
    log = logger.info if outcome == "ok" else logger.warning
    log(
        "upkeep_run_finished",
        extra={"task": task, "tick": _iso(tick), "outcome": outcome,
               "duration_ms": record.duration_ms, "counts": counts},
    )  # fmt: skip
    _audit(record, tick)
    close_old_connections()
    return record


def _audit(record: RunRecord, tick: datetime | None) -> None:
    try:
        audit_record(
            action=AUDIT_ACTION,
            actor=AUDIT_ACTOR,
            details={
                "task": record.task,
                "outcome": record.outcome,
                "duration_ms": record.duration_ms,
                "counts": record.counts,
                "tick": _iso(tick),
                "trigger": "schedule" if tick is not None else "manual",
                "scheduler": SCHEDULER_ID,
            },
        )
    except Exception as exc:
        # Postgres may be what failed the run; the metrics and the log line still tell.
        logger.error(
            "upkeep_audit_failed", extra={"task": record.task, "error_type": type(exc).__name__}
        )


def _iso(tick: datetime | None) -> str | None:
    return None if tick is None else tick.astimezone(UTC).isoformat()
