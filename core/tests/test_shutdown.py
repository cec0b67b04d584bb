"""Every long-running process exits within 10 s of SIGTERM, even while every service is down.

Each command runs as it does under `make run` or in a container, as a child process: (a)
started with Postgres, NATS and S3 up, which are then stopped; (b) started with all three
pointing at ports where nothing listens; (c) started against a "black hole" that accepts
TCP connections and never answers, so every connect waits for its timeout.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from devstack.stack import Stack
from health_project.serving import granian_args

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
GRANIAN = str(Path(sys.executable).parent / "granian")

# What a supervisor allows between SIGTERM and SIGKILL: the requirement itself.
EXIT_WITHIN_S = 10.0
STARTUP_WITHIN_S = 60.0  # a Django process on a busy 2-core machine
# After the services stop: long enough for every process to notice (failed fetches, pool
# checkouts in their retry loops, reconnect storms) before it is told to stop.
SETTLE_S = 3.0

# granian waits without limit for requests in flight; one stuck on a service that never
# answers (a /readyz against an S3 black hole takes ~30 s) would hold the exit. This is the
# flag the web command must carry (devrun/orchestrator.py, Dockerfile, compose.yaml).
WEB_KILL_TIMEOUT = ("--workers-kill-timeout", "5")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port that completes TCP handshakes and never says a word.

    The kernel accepts connections into the listen backlog without `accept()`, so nothing
    here has to run: every client sees a connected socket that stays silent.
    """
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(128)
        yield server.getsockname()[1]


def unreachable(env: dict[str, str], port: int) -> dict[str, str]:
    """`env` with Postgres, NATS and S3 all at 127.0.0.1:`port`."""
    return env | {
        "DATABASE_URL": f"postgresql://health@127.0.0.1:{port}/health",
        "NATS_URL": f"nats://127.0.0.1:{port}",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }


class Child:
    """A command run as its own process, its output collected as it comes.

    The output is read all along, so a child logging a reconnect storm never blocks on a
    full pipe (which would look like a process ignoring SIGTERM).
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.process = subprocess.Popen(
            argv,
            # INFO: the ready markers below are INFO records.
            env=env | {"PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"},
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "".join(self.lines[-60:])

    def wait_for(self, *texts: str, timeout: float = STARTUP_WITHIN_S) -> None:
        """Until a line contains one of `texts`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines for text in texts):
                left = deadline - time.monotonic()
                assert self.process.poll() is None, f"{self.argv[2]} died:\n{self.output()}"
                assert left > 0, f"none of {texts} within {timeout:g} s:\n{self.output()}"
                self._changed.wait(min(left, 0.5))

    def sigterm_and_time_exit(self) -> float:
        """Send SIGTERM; the seconds until the process was gone (waits no longer than the bound)."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=EXIT_WITHIN_S)
        return time.monotonic() - sent

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._reader.join(timeout=5)


def manage(*args: str) -> list[str]:
    return [sys.executable, MANAGE, *args]


def web_command(port: int) -> list[str]:
    # As `make run` starts it, plus the kill timeout it needs (see WEB_KILL_TIMEOUT).
    return [
        GRANIAN, *granian_args(host="127.0.0.1", port=port), "--access-log", *WEB_KILL_TIMEOUT,
    ]  # fmt: skip


# name -> (argv, what it logs once it is running: each entry a tuple of texts, one of which
# comes even when the services are unreachable (cases (b) and (c)))
COMMANDS: dict[str, tuple[list[str], tuple[tuple[str, ...], ...]]] = {
    # consumer_started comes once NATS answered; without NATS, consumer_start_failed (and a
    # retry) is what says the process is up and in its start loop.
    "normalizer": (
        manage("run_consumer", "normalizer"),
        (("consumer_started", "consumer_start_failed"),),
    ),
    # Each logged before the command's first use of Postgres, NATS or S3.
    "relay": (manage("run_relay"), (("relay_started",),)),
    "worker": (manage("run_worker"), (("worker_started",),)),
    "scheduler": (manage("run_scheduler"), (("scheduler_started",),)),
    # argv built per test, on a free port
    "web": ([], (("Started worker-1",), ("Started worker-2",))),
}


@contextlib.contextmanager
def running(name: str, env: dict[str, str]) -> Iterator[Child]:
    argv, ready = COMMANDS[name]
    child = Child(argv or web_command(free_port()), env)
    try:
        for texts in ready:
            child.wait_for(*texts)
        yield child
    finally:
        child.kill()


def assert_exits_in_time(child: Child) -> None:
    took = child.sigterm_and_time_exit()
    assert child.process.poll() is not None, f"still running 10 s after SIGTERM:\n{child.output()}"
    assert took < EXIT_WITHIN_S, f"exited {took:.1f} s after SIGTERM:\n{child.output()}"
    assert child.process.returncode == 0, child.output()


@pytest.mark.services
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_exits_within_10_s_of_sigterm_after_every_service_went_down(
    name: str, subprocess_env: dict[str, str], stack: Stack
) -> None:
    with running(name, subprocess_env) as child:
        stack.down()  # the fixture starts them again after the test
        time.sleep(SETTLE_S)
        assert child.process.poll() is None, f"{name} died with the services:\n{child.output()}"
        assert_exits_in_time(child)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_exits_within_10_s_of_sigterm_when_started_with_every_service_down(
    name: str, subprocess_env: dict[str, str]
) -> None:
    with running(name, unreachable(subprocess_env, free_port())) as child:
        time.sleep(SETTLE_S)
        assert child.process.poll() is None, f"{name} gave up at start:\n{child.output()}"
        assert_exits_in_time(child)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_exits_within_10_s_of_sigterm_against_services_that_never_answer(
    name: str, subprocess_env: dict[str, str]
) -> None:
    with black_hole() as port, running(name, unreachable(subprocess_env, port)) as child:
        time.sleep(SETTLE_S)
        assert child.process.poll() is None, f"{name} gave up at start:\n{child.output()}"
        assert_exits_in_time(child)


def test_the_web_server_exits_within_10_s_with_a_request_stuck_on_a_silent_service(
    subprocess_env: dict[str, str],
) -> None:
    with black_hole() as silent:
        port = free_port()
        child = Child(web_command(port), unreachable(subprocess_env, silent))
        try:
            for texts in COMMANDS["web"][1]:
                child.wait_for(*texts)

            def readyz() -> None:
                # Answers only when the server gives up on it; the test does not need it to.
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=60)

            request = threading.Thread(target=readyz, daemon=True)
            request.start()
            time.sleep(SETTLE_S)  # the readiness checks are now waiting on the black hole
            assert request.is_alive(), "the request ended before SIGTERM: nothing was in flight"
            assert_exits_in_time(child)
        finally:
            child.kill()


def test_the_relay_exits_within_10_s_with_a_put_stuck_on_a_silent_s3(
    subprocess_env: dict[str, str],
) -> None:
    """Rows wait to be archived and S3 accepts the connection but never answers: the PUT in
    hand is bounded (core/raw_store.py's timeouts), so the relay still stops in time."""
    import uuid

    from django.utils import timezone

    from ingestion.models import RawEvent

    for _ in range(3):
        RawEvent.objects.create(
            event_id=uuid.uuid4(), kind="webhook", dedupe_key=uuid.uuid4().hex,
            user_id="relay-probe", envelope=b"{}", received_at=timezone.now(),
        )  # fmt: skip
    with black_hole() as silent:
        env = subprocess_env | {"S3_ENDPOINT_URL": f"http://127.0.0.1:{silent}"}
        with running("relay", env) as child:
            time.sleep(SETTLE_S)  # the PUTs are now waiting on the silent S3
            assert RawEvent.objects.filter(archived_at__isnull=True).count() == 3
            assert_exits_in_time(child)


@pytest.mark.parametrize("name", ["normalizer", "relay", "worker", "scheduler"])
def test_exits_within_10_s_of_sigterm_when_nobody_reads_its_output_any_more(
    name: str, subprocess_env: dict[str, str]
) -> None:
    """`make run`'s supervisor killed with -9: the children get SIGTERM from the kernel, and
    their output pipe has no reader left, so every write to it fails. The stop must not."""
    argv, ready = COMMANDS[name]
    process = subprocess.Popen(
        argv, env=subprocess_env | {"PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"},
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + STARTUP_WITHIN_S
        while not all(any(t in line for line in seen for t in texts) for texts in ready):
            assert time.monotonic() < deadline, "".join(seen[-40:])
            line = process.stdout.readline()
            assert line, f"{name} died:\n{''.join(seen[-40:])}"
            seen.append(line)
        process.stdout.close()  # the supervisor is gone: nobody reads this pipe any more
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=EXIT_WITHIN_S)
        assert process.poll() is not None, f"{name} still running 10 s after SIGTERM"
        assert time.monotonic() - sent < EXIT_WITHIN_S
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
