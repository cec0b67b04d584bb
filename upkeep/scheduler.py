"""The upkeep scheduler: APScheduler for the timing, a Postgres advisory lock for the leader.

Every replica of `run_scheduler` builds the same schedule and starts it paused. The one that
holds a session-level advisory lock (on its own psycopg connection, held as long as that
session lives) resumes it; the others retry the lock every few seconds and take over when the
leader's session ends (the process died, or Postgres dropped it). Should two ever schedule at
once (the leader's session ended but it has not noticed yet), the tick claim in
services.upkeep_tick_claim still lets only one of them run a given tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.background import (
    BackgroundScheduler,
)
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from django.conf import settings
from django.db import connections

from upkeep.metrics import upkeep_leader
from upkeep.services import upkeep_run
from upkeep.tasks import TASKS

logger = logging.getLogger(__name__)

# "upkeep" in ASCII: one fixed key, used by no other advisory lock in this database.
LEADER_LOCK_KEY = 0x75706B656570
# A tick missed while no scheduler was leading (a takeover) still runs if the new leader
# resumes within this long; older ticks are skipped and the next one is the retry.
MISFIRE_GRACE_S = 300
_EVERY = re.compile(r"@every\s+(\d+(?:\.\d+)?)s?")
# Interval ticks count from a fixed origin, so every replica computes the same tick times
# (the tick claim compares them).
_INTERVAL_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


class ScheduleError(ValueError):
    pass


def schedule_trigger(spec: str, *, name: str) -> BaseTrigger | None:
    """A trigger for one schedule entry, or None for "off". `name` is what errors mention."""
    spec = spec.strip()
    if spec == "off":
        return None
    every = _EVERY.fullmatch(spec)
    if every:
        seconds = float(every.group(1))
        if seconds < 1:
            raise ScheduleError(f"{name}: @every needs at least 1 second")
        return IntervalTrigger(seconds=seconds, start_date=_INTERVAL_ORIGIN, timezone=UTC)
    fields = spec.split()
    rule = 'must be a 5-field crontab (UTC), "@every <seconds>" or "off"'
    if len(fields) != 5:
        raise ScheduleError(f"{name} {rule}")
    if any(char.isdigit() for char in fields[4]):
        # APScheduler 3 counts weekday 0 as Monday where cron means Sunday; names are unambiguous.
        raise ScheduleError(f"{name}: write the day of week as mon..sun, not as a number")
    try:
        return CronTrigger.from_crontab(spec, timezone=UTC)
    except ValueError:
        # The message is left out: errors name the variable, never its value.
        raise ScheduleError(f"{name} {rule}") from None


def schedule_triggers(schedule: Mapping[str, str]) -> dict[str, BaseTrigger]:
    """Triggers of the tasks that are on. A missing entry means off; an unknown one is an error."""
    unknown = sorted(set(schedule) - set(TASKS))
    if unknown:
        raise ScheduleError(f"UPKEEP_SCHEDULE names unknown tasks: {', '.join(unknown)}")
    triggers = {}
    for name, task in TASKS.items():
        trigger = schedule_trigger(schedule.get(name, "off"), name=task.env_var)
        if trigger is not None:
            triggers[name] = trigger
    return triggers


class _AtTick:
    """A job as APScheduler's run_job sees it, with its scheduled time added as `tick`."""

    def __init__(self, job: Job, tick: datetime) -> None:
        self._job = job
        self.kwargs = {**job.kwargs, "tick": tick}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


def _run_at_ticks(
    job: Job, jobstore_alias: str, run_times: list[datetime], logger_name: str
) -> Any:
    events = []
    for run_time in run_times:
        events.extend(run_job(_AtTick(job, run_time), jobstore_alias, [run_time], logger_name))
    return events


class TickExecutor(ThreadPoolExecutor):
    """A thread pool that tells each run which scheduled time it is for.

    APScheduler 3 keeps a run's scheduled time to itself, and the tick claim needs it: the
    time at which a run happens to start differs between two schedulers, the tick does not.
    This is BasePoolExecutor._do_submit_job (APScheduler 3.11, pinned) with run_job wrapped;
    test_a_task_fires_on_schedule_with_its_tick fails if an upgrade changes that.
    """

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        def callback(future: Any) -> None:
            exc = future.exception()
            if exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        future = self._pool.submit(
            _run_at_ticks, job, job._jobstore_alias, run_times, self._logger.name
        )
        future.add_done_callback(callback)


def _connect_params() -> dict[str, Any]:
    db = settings.DATABASES["default"]
    params: dict[str, Any] = {
        "dbname": db.get("NAME"),
        "user": db.get("USER"),
        "password": db.get("PASSWORD"),
        "host": db.get("HOST"),
        "port": db.get("PORT"),
    }
    params = {key: value for key, value in params.items() if value not in (None, "")}
    return params | {
        "application_name": f"upkeep-scheduler {os.getpid()}",  # who leads, in pg_stat_activity
        "connect_timeout": db.get("OPTIONS", {}).get("connect_timeout", 3),
        # A leader cut off from Postgres must notice within seconds (its lock is gone, or soon
        # will be), and a lock attempt must never hang the process past its SIGTERM deadline.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "tcp_user_timeout": 5000,
        "autocommit": True,
    }


class LeaderLock:
    """pg_try_advisory_lock on a dedicated connection: held for as long as that session lives."""

    def __init__(self, key: int = LEADER_LOCK_KEY) -> None:
        self.key = key
        self.held = False
        self._conn: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        """One attempt; never raises. A standby keeps its connection between attempts."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(**_connect_params())
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
            self.held = bool(row and row[0])
        except psycopg.Error as exc:
            logger.warning("upkeep_lock_attempt_failed", extra={"error_type": type(exc).__name__})
            self.release()
        return self.held

    def still_held(self) -> bool:
        """The session is alive, so its session-level lock is still ours."""
        if self._conn is None or not self.held:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error as exc:
            logger.warning("upkeep_lock_lost", extra={"error_type": type(exc).__name__})
            self.release()
        return self.held

    def release(self) -> None:
        """Close the session: Postgres releases the lock with it."""
        self.held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


class UpkeepScheduler:
    """Runs the schedule while this process is the leader, until `stopping` is set."""

    def __init__(
        self,
        triggers: Mapping[str, BaseTrigger],
        *,
        stopping: threading.Event,
        lock: LeaderLock | None = None,
        lock_retry_s: float = 5.0,
        check_every_s: float = 2.0,
    ) -> None:
        self.stopping = stopping
        self.lock = lock or LeaderLock()
        self.lock_retry_s = lock_retry_s
        self.check_every_s = check_every_s
        self._running: dict[str, int] = {}
        self._idle = threading.Condition()
        self._scheduler = BackgroundScheduler(
            executors={"default": TickExecutor(max_workers=max(len(triggers), 1))},
            job_defaults={
                "coalesce": True,  # after a pause, one run for all the ticks it missed
                "max_instances": 1,  # a slow run makes the next tick wait, not pile up
                "misfire_grace_time": MISFIRE_GRACE_S,
            },
            timezone=UTC,
        )
        for name, trigger in triggers.items():
            self._scheduler.add_job(self._run, trigger=trigger, id=name, name=name, args=[name])

    def _run(self, task: str, tick: datetime | None = None) -> None:
        # The default only satisfies APScheduler's signature check at add_job; TickExecutor
        # always passes the tick, and a run without one would escape the tick claim.
        if tick is None:
            raise RuntimeError("upkeep run without a tick: is TickExecutor in use?")
        with self._idle:
            self._running[task] = self._running.get(task, 0) + 1
        try:
            upkeep_run(task=task, tick=tick)
        finally:
            # Ticks are minutes to hours apart: a pool thread keeps no idle connection between.
            connections.close_all()
            with self._idle:
                self._running[task] -= 1
                self._idle.notify_all()

    def run(self) -> None:
        # Started paused: a standby keeps its next tick times, so that on taking over it runs
        # a tick the dead leader missed (within MISFIRE_GRACE_S; the tick claim skips it if
        # the leader had run it).
        self._scheduler.start(paused=True)
        standby_logged = False  # once per spell as a standby, not at every attempt
        try:
            while not self.stopping.is_set():
                if not self.lock.held:
                    if self.lock.try_acquire():
                        self._scheduler.resume()
                        upkeep_leader.set(1)
                        logger.info("upkeep_leader_elected", extra={"tasks": self.task_names})
                        standby_logged = False
                    else:
                        if not standby_logged:
                            logger.info("upkeep_standby", extra={"reason": "lock_not_acquired"})
                            standby_logged = True
                        self.stopping.wait(self.lock_retry_s)
                    continue
                if self.stopping.wait(self.check_every_s):
                    break
                if not self.lock.still_held():
                    self._scheduler.pause()
                    upkeep_leader.set(0)
                    logger.info("upkeep_standby", extra={"reason": "lock_lost"})
                    standby_logged = True
        finally:
            self._scheduler.pause()
            upkeep_leader.set(0)

    @property
    def task_names(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]

    def shutdown(self, *, grace_s: float) -> list[str]:
        """Stop scheduling, wait up to `grace_s` for runs in progress; return those still running.

        The lock is released only after the runs finished (or were abandoned), so a successor
        cannot start the same task while ours is still at it.
        """
        self._scheduler.shutdown(wait=False)
        with self._idle:
            self._idle.wait_for(lambda: not any(self._running.values()), timeout=grace_s)
            unfinished = [task for task, count in self._running.items() if count]
        self.lock.release()
        return unfinished
