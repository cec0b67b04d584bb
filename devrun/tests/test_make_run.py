"""`make run` as a new user meets it: started and stopped again and again, however stopped.

These run `python -m devrun` (what `make run` runs) as a real process tree on an embedded
set of its own (DEVSTACK_ROOT), the way a developer's checkout would, and look at the
processes themselves: after every stop, no web, relay, normalizer, worker or scheduler may
be left, whatever stopped the supervisor.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.services import free_port, pid_alive
from health_project.serving import BACKGROUND_NICE

PROJECT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 150.0
# Every long-running command exits within 10 s of SIGTERM; the supervisor allows 12.
STOP_TIMEOUT_S = 30.0
CHILDREN = ("web", "relay", "normalizer", "worker", "scheduler")

pytestmark = pytest.mark.services


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (granian's workers included), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


_started: list[Run] = []


@dataclass
class Run:
    """One `python -m devrun` process, its output collected as it comes."""

    env: dict[str, str]
    process: subprocess.Popen[str] = field(init=False)
    lines: list[str] = field(default_factory=list)
    banner: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        _started.append(self)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devrun"],
            cwd=PROJECT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own group, like `make` in a terminal
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("Ctrl-C stops the system"):
                self.banner.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> dict[str, int]:
        """The children's pids from the banner, once the system said it is running."""
        if not self.banner.wait(START_TIMEOUT_S):
            self.process.kill()
            pytest.fail(f"make run did not come up:\n{self.output[-6000:]}")
        pids = {
            name: int(pid)
            for name, pid in re.findall(r"(\w+) \(pid (\d+)\)", self.output.split("children")[-1])
        }
        assert set(pids) == set(CHILDREN), self.output[-3000:]
        return pids

    def tree(self) -> set[int]:
        """The supervisor's processes: its descendants less the embedded services, which
        stay up by design until `python -m devstack down`."""
        root = Path(self.env["DEVSTACK_ROOT"])
        services: set[int] = set()
        for state in root.glob("*/state.json"):
            pid = int(json.loads(state.read_text())["pid"])
            services |= {pid} | _descendants(pid)
        return _descendants(self.process.pid) - services

    def wait_exit(self) -> int:
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"make run did not stop within {STOP_TIMEOUT_S}s:\n{self.output[-3000:]}")


def _assert_all_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.2)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids if pid_alive(pid)}
    assert not left, f"processes outlived make run: {left}"


@pytest.fixture(scope="module")
def devstack_root() -> Iterator[Path]:
    # Inside the project, like a developer's .devstack (git-ignored as .devstack-*).
    root = PROJECT / f".devstack-test-{os.getpid()}-makerun"
    yield root
    for run in _started:  # a failed test must not leave a system running
        if run.process.poll() is None:
            for pid in run.tree() | {run.process.pid}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run.process.wait(10)
    subprocess.run(
        [sys.executable, "-m", "devstack", "down", "--root", str(root)],
        cwd=PROJECT, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


def _run_env(root: Path, **extra: str) -> dict[str, str]:
    drop = {"DATABASE_URL", "NATS_URL", "S3_ENDPOINT_URL", "HEALTH_EMBEDDED_SERVICES", "HEALTH_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("OURA_")}
    return {
        **env,
        "DEVSTACK_ROOT": str(root),
        "WEB_PORT": str(free_port()),
        "OURA_SIMULATOR_PORT": str(free_port()),
        "LOG_LEVEL": "WARNING",
        "HEALTH_ENV": "development",  # as make run sets it; unset would mean production
        **extra,
    }


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), *args],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _ready(env: dict[str, str]) -> None:
    response = httpx.get(f"http://127.0.0.1:{env['WEB_PORT']}/readyz", timeout=10)
    assert response.status_code == 200, response.text


def _series(web: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    response = httpx.get(f"{web}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items()))
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def assert_every_scrape_has_every_process(web: str) -> None:
    """Ten scrapes in a row name the same series (whichever granian worker answers), and
    they include series written by the normalizer, the relay and the worker.

    While work is in flight a new label value (a first 429, a new endpoint) may appear
    between two scrapes; that is growth, not a worker answering alone, so a round with such
    a change is scraped again."""
    rounds: list[list[set[tuple[str, frozenset[tuple[str, str]]]]]] = []
    for _ in range(5):
        scrapes = [_series(web) for _ in range(10)]
        rounds.append(scrapes)
        if all(s == scrapes[0] for s in scrapes):
            break
        time.sleep(2)
    else:
        first = rounds[-1][0]
        differ = [sorted(map(str, first ^ s))[:10] for s in rounds[-1] if s != first]
        pytest.fail(f"no ten scrapes in a row agreed; last round differed by: {differ}")
    series = rounds[-1][0]
    for role in ("web", "relay", "normalizer", "worker", "scheduler"):
        assert ("health_processes", frozenset({("role", role)})) in series, role
    assert ("dead_letters_total", frozenset({("consumer", "normalizer")})) in series
    assert ("relay_events_total", frozenset({("kind", "publish"), ("outcome", "done")})) in series
    worker = ("backfill_job_duration_seconds_count", frozenset({("outcome", "succeeded")}))
    assert worker in series
    durable = frozenset({("stream", "HEALTH_RAW"), ("durable", "normalizer")})
    assert ("jetstream_consumer_pending", durable) in series
    for source in ("postgres", "nats"):
        assert ("metrics_source_up", frozenset({("source", source)})) in series


def test_make_run_starts_again_after_every_kind_of_stop(devstack_root: Path) -> None:
    # 1. A first start on a fresh set, stopped with Ctrl-C.
    env = _run_env(devstack_root)
    run = Run(env)
    pids = run.wait_ready()
    _ready(env)
    tree = run.tree()
    assert set(pids.values()) <= tree
    # Archiving yields to webhooks: the relay and the embedded S3 it writes to are niced.
    s3 = json.loads((devstack_root / "s3" / "state.json").read_text())["pid"]
    nice_of = functools.partial(os.getpriority, os.PRIO_PROCESS)
    assert nice_of(pids["relay"]) == nice_of(s3) == BACKGROUND_NICE
    assert nice_of(pids["web"]) == nice_of(os.getpid())
    run.process.send_signal(signal.SIGINT)
    assert run.wait_exit() == 0
    _assert_all_gone(tree)

    # 2. SIGTERM to the whole process group, as a terminal's close or `kill -- -PGID` sends.
    run = Run(env)
    run.wait_ready()
    _ready(env)
    tree = run.tree()
    os.killpg(run.process.pid, signal.SIGTERM)
    assert run.wait_exit() == 0
    _assert_all_gone(tree)

    # 3. kill -9 of the supervisor: its children must still go.
    run = Run(env)
    run.wait_ready()
    _ready(env)
    tree = run.tree()
    run.process.kill()
    run.wait_exit()
    _assert_all_gone(tree)

    # 4. After `python -m devstack down`, and with the demo user's Oura account taken over by
    #    another user through the API meanwhile.
    subprocess.run(
        [sys.executable, "-m", "devstack", "down"], cwd=PROJECT, env=env, check=True, timeout=120
    )
    run = Run(env)
    run.wait_ready()
    _ready(env)
    assert "demo             not set up" not in run.output
    web = f"http://127.0.0.1:{env['WEB_PORT']}"
    demo_key = (devstack_root / "demo-api-key").read_text().strip()
    other_key = (
        _manage(
            env, "create_api_key", "--name", "t", "--scopes", "health:connect", "--users", "other"
        )
        .strip()
        .splitlines()[-1]
    )
    gone = httpx.delete(
        f"{web}/v1/health/demo-user/oura/connection",
        headers={"Authorization": f"Bearer {demo_key}"},
        timeout=10,
    )
    assert gone.status_code == 204
    started = httpx.post(
        f"{web}/v1/health/other/oura/connection",
        headers={"Authorization": f"Bearer {other_key}"},
        timeout=10,
    )
    with httpx.Client(follow_redirects=True, timeout=30) as browser:  # keeps our start's cookie
        callback = browser.get(started.json()["authorizeUrl"])
    assert callback.status_code == 200  # "other" now holds the demo's Oura account
    tree = run.tree()
    run.process.send_signal(signal.SIGINT)
    assert run.wait_exit() == 0
    _assert_all_gone(tree)

    # 5. Up again with a connected demo; then a child dies and takes the system down cleanly.
    run = Run(env)
    pids = run.wait_ready()
    _ready(env)
    assert "demo             not set up" not in run.output
    assert re.search(r"90-day backfill job [0-9a-f-]{36}", run.output), run.output[-3000:]
    tree = run.tree()
    os.kill(pids["normalizer"], signal.SIGKILL)
    assert run.wait_exit() == 1
    assert "normalizer exited" in run.output
    _assert_all_gone(tree)


def test_make_run_uses_an_external_oura_from_the_oura_urls(devstack_root: Path) -> None:
    """A remote Oura (here the simulator as its own process on another port): no simulator
    and no demo in make run, and a user connected through it is backfilled from it.

    Its own seed gives it Oura accounts of its own: the first test's demo holds the default
    simulator's, and Oura accounts are linked to one user of ours at a time."""
    from oura_simulator import OuraSimulator, SimulatorConfig

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    oura = {
        "OURA_API_BASE_URL": base,
        "OURA_AUTHORIZE_URL": f"{base}/oauth/authorize",
        "OURA_TOKEN_URL": f"{base}/oauth/token",
        "OURA_REVOKE_URL": f"{base}/oauth/revoke",
    }
    env = _run_env(devstack_root, **oura)
    run = Run(env)
    remote: subprocess.Popen[str] | None = None
    try:
        run.wait_ready()
        # Oura is called only once a user connects; manage.py finds make run's services.
        remote = subprocess.Popen(
            [sys.executable, str(PROJECT / "manage.py"), "oura_simulator", "--port", str(port),
             "--history-days", "30", "--seed", "7"],
            cwd=PROJECT, env=_run_env(devstack_root), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert remote.stdout is not None
        assert "listening" in remote.stdout.readline()
        _ready(env)
        assert f"Oura             {base}  (external" in run.output
        assert "demo user" not in run.output
        assert "built-in simulator" not in run.output
        assert not (devstack_root / "demo-api-key").exists() or "demo API key" not in run.output

        web = f"http://127.0.0.1:{env['WEB_PORT']}"
        # The module shares one devstack root: the test before stops the built-in simulator
        # mid-flight, and the Oura breakers it opened (kept in Postgres) would refuse this
        # test's code exchange (OuraCircuitOpen) until they time out.
        _manage(env, "shell", "-c", "from ingestion.models import CircuitBreaker; "
                "CircuitBreaker.objects.all().delete()")  # fmt: skip
        key = _manage(
            env, "create_api_key", "--name", "remote", "--scopes",
            "health:connect,health:read,health:sync", "--users", "remote-user",
        ).strip().splitlines()[-1]  # fmt: skip
        auth = {"Authorization": f"Bearer {key}"}
        started = httpx.post(f"{web}/v1/health/remote-user/oura/connection", headers=auth)
        with httpx.Client(timeout=30) as browser:  # keeps our start step's cookie
            to_oura = browser.get(started.json()["authorizeUrl"])
            assert to_oura.headers["location"].startswith(base)
            callback = browser.get(to_oura.headers["location"], follow_redirects=True)
            assert callback.status_code == 200, callback.text[-600:]
        end = date.today() - timedelta(days=1)
        start = end - timedelta(days=6)
        job = httpx.post(
            f"{web}/v1/health/oura/sync",
            headers=auth,
            json={"userId": "remote-user", "range": {"start": str(start), "end": str(end)}},
        )
        assert job.status_code == 202, job.text
        daily: list[dict[str, object]] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            page = httpx.get(
                f"{web}/v1/health/remote-user/oura/daily",
                params={"start": str(start), "end": str(end)},
                headers=auth,
            ).json()
            daily = [e for e in page["data"] if e["readiness"] is not None]
            if len(daily) == 7:
                break
            time.sleep(1)
        # The same documents the remote server holds (its data is seeded, so a twin
        # computes them without a network).
        twin = OuraSimulator(SimulatorConfig(history_days=30, seed=7))
        user = twin.add_user()
        expected = {
            doc["day"]: doc["score"]
            for doc in twin.documents(user.oura_user_id, "daily_readiness", start, end)
        }
        assert {e["day"]: e["readiness"]["score"] for e in daily} == expected  # type: ignore[index]  # JSON

        # Metrics of every process, on every scrape, where the banner says.
        metrics_dir = devstack_root / "metrics"
        assert f"metrics          {web}/metrics" in run.output
        assert str(metrics_dir) in run.output
        assert any(metrics_dir.glob("*.db"))
        assert_every_scrape_has_every_process(web)
    finally:
        run.process.send_signal(signal.SIGINT)
        run.wait_exit()
        if remote is not None:
            remote.terminate()
            remote.wait(30)
