"""`manage.py run_scheduler` as operators run it: several replicas, one leader, prompt stops."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from audit.models import AuditEntry
from upkeep.scheduler import LEADER_LOCK_KEY

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
ALL_OFF = {"UPKEEP_RENEW_CRON": "off", "UPKEEP_PURGE_RAW_CRON": "off",
           "UPKEEP_RECONCILE_JOBS_CRON": "off"}  # fmt: skip


class SchedulerProcess:
    """A run_scheduler child whose output is read as it comes (two of them run at once)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, MANAGE, "run_scheduler", "--lock-retry", "0.3", *args],
            env=env | {"LOG_LEVEL": "INFO"},  # what the tests wait for are INFO records
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def records(self, event: str) -> list[dict[str, Any]]:
        """The JSON log records with this event id (the `message` field) logged so far."""
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("message") == event:
                    found.append(record)
        return found

    def logged(self, event: str, **fields: Any) -> bool:
        return any(
            all(record.get(key) == value for key, value in fields.items())
            for record in self.records(event)
        )

    def leads(self, task: str) -> bool:
        """It logged upkeep_leader_elected with `task` among the tasks it schedules."""
        return any(task in record["tasks"] for record in self.records("upkeep_leader_elected"))

    def wait_for(self, event: str, timeout: float = 60.0, **fields: Any) -> None:
        wait_until(lambda: self.logged(event, **fields), f"{event} {fields} from run_scheduler",
                   timeout, alive=self)  # fmt: skip

    def wait_until_leading(self, task: str, timeout: float = 60.0) -> None:
        wait_until(lambda: self.leads(task), f"run_scheduler leading {task}", timeout,
                   alive=self)  # fmt: skip

    def assert_json_lines_only(self) -> None:
        """One line per record: every line is a JSON record, no plain-text copy beside it."""
        for line in self.lines:
            if line.strip():
                assert isinstance(json.loads(line), dict), line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 60.0,
    alive: SchedulerProcess | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None:
            assert alive.proc.poll() is None, f"run_scheduler exited:\n{alive.output}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def scheduler_process(subprocess_env) -> Iterator[Callable[..., SchedulerProcess]]:
    started: list[SchedulerProcess] = []

    def start(env_overrides: dict[str, str], *args: str) -> SchedulerProcess:
        process = SchedulerProcess({**subprocess_env, **ALL_OFF, **env_overrides}, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def reconcile_runs() -> list[dict[str, Any]]:
    return [
        entry.details
        for entry in AuditEntry.objects.filter(action=AuditEntry.Action.UPKEEP_RUN).order_by("id")
        if entry.details["task"] == "reconcile_jobs"
    ]


def lock_holders() -> list[str]:
    """application_name ("upkeep-scheduler <os pid>") of each session holding the lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s",
            [LEADER_LOCK_KEY >> 32, LEADER_LOCK_KEY & 0xFFFFFFFF],
        )
        return [row[0] for row in cursor.fetchall()]


def test_two_schedulers_never_both_fire_and_the_standby_takes_over_when_the_leader_dies(
    scheduler_process,
) -> None:
    every_second = {"UPKEEP_RECONCILE_JOBS_CRON": "@every 1"}
    first = scheduler_process(every_second)
    first.wait_until_leading("reconcile_jobs")
    second = scheduler_process(every_second)
    second.wait_for("upkeep_standby", reason="lock_not_acquired")
    leader, standby = first, second

    wait_until(lambda: len(reconcile_runs()) >= 3, "three runs by the leader", alive=leader)
    assert lock_holders() == [f"upkeep-scheduler {leader.proc.pid}"]
    assert {run["scheduler"].rsplit(":", 1)[1] for run in reconcile_runs()} == {
        str(leader.proc.pid)
    }
    assert not standby.records("upkeep_leader_elected")

    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(timeout=10)
    standby.wait_until_leading("reconcile_jobs")
    runs_before = len(reconcile_runs())
    wait_until(lambda: len(reconcile_runs()) >= runs_before + 2, "runs by the new leader",
               alive=standby)  # fmt: skip

    runs = reconcile_runs()
    assert lock_holders() == [f"upkeep-scheduler {standby.proc.pid}"]
    assert str(standby.proc.pid) in runs[-1]["scheduler"]
    ticks = [run["tick"] for run in runs]
    assert len(ticks) == len(set(ticks)), "a tick ran twice"
    assert all(run["outcome"] == "ok" for run in runs)


def test_sigterm_stops_the_leader_and_releases_the_lock(scheduler_process) -> None:
    process = scheduler_process({"UPKEEP_RECONCILE_JOBS_CRON": "@every 1"})
    process.wait_until_leading("reconcile_jobs")

    process.proc.send_signal(signal.SIGTERM)
    process.proc.wait(timeout=10)
    process.stop()

    assert process.proc.returncode == 0, process.output
    assert process.logged("scheduler_stop_requested", signal="SIGTERM"), process.output
    assert process.logged("scheduler_stopped", abandoned=[]), process.output
    process.assert_json_lines_only()
    assert lock_holders() == []


def test_sigterm_stops_within_10_s_with_postgres_nats_and_s3_unreachable(
    scheduler_process,
) -> None:
    nothing_listens = {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "NATS_URL": "nats://127.0.0.1:1",
        "S3_ENDPOINT_URL": "http://127.0.0.1:1",
        "UPKEEP_RECONCILE_JOBS_CRON": "@every 1",
    }
    process = scheduler_process(nothing_listens)
    process.wait_for("upkeep_standby", reason="lock_not_acquired")

    process.proc.send_signal(signal.SIGTERM)
    process.proc.wait(timeout=10)
    process.stop()

    assert process.proc.returncode == 0, process.output
    assert process.logged("scheduler_stopped", abandoned=[]), process.output


def test_sigterm_stops_within_10_s_while_a_run_waits_on_a_silent_server(
    scheduler_process,
) -> None:
    # Oura here accepts connections and never answers: the renewal hangs in its HTTP read.
    held: list[socket.socket] = []  # accepted and never answered
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        process = scheduler_process(
            {"UPKEEP_RENEW_CRON": "@every 1", "OURA_API_BASE_URL": f"http://127.0.0.1:{port}"},
            "--grace", "1",
        )  # fmt: skip
        process.wait_until_leading("renew_subscriptions")
        wait_until(lambda: accepted(silent, held), "the renewal to connect",
                   alive=process)  # fmt: skip

        process.proc.send_signal(signal.SIGTERM)
        process.proc.wait(timeout=10)
        process.stop()
        for conn in held:
            conn.close()

    assert process.proc.returncode == 0, process.output
    # Logged before os._exit, which skips the interpreter's own flushes.
    assert process.logged("scheduler_stopped", abandoned=["renew_subscriptions"]), process.output


def accepted(server: socket.socket, held: list[socket.socket]) -> bool:
    server.settimeout(0)
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    held.append(conn)
    return True
