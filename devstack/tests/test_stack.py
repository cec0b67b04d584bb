"""The embedded set: started twice it reuses what runs; a stuck folder is refused clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devstack.services import NatsService, ServiceError, ServiceState, pid_alive
from devstack.stack import Stack


@pytest.fixture
def nats_only(tmp_path: Path):
    stack = Stack(tmp_path / "stack")
    yield stack
    stack.down()


def test_starting_a_running_service_reuses_it(nats_only: Stack) -> None:
    nats_only.up(["nats"])
    first = nats_only.services["nats"].read_state()
    nats_only.up(["nats"])
    second = nats_only.services["nats"].read_state()
    assert first == second
    assert nats_only.status()["nats"] is True


def test_concurrent_starts_share_one_server(nats_only: Stack) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        urls = list(pool.map(lambda _: nats_only.up(["nats"]), range(3)))
    assert len({u["NATS_URL"] for u in urls}) == 1
    state = nats_only.services["nats"].read_state()
    assert state is not None
    assert pid_alive(state.pid)


def test_a_live_process_that_does_not_answer_is_refused_not_replaced(tmp_path: Path) -> None:
    service = NatsService(tmp_path)
    service.folder.mkdir(parents=True)
    impostor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        service.write_state(ServiceState(pid=impostor.pid, port=1, extra_port=1))
        with pytest.raises(ServiceError, match="does not answer"):
            service.start(timeout=1.0)
        assert impostor.poll() is None  # the process holding the folder was left alone
    finally:
        impostor.kill()


def test_a_stopped_service_restarts_on_its_port_with_its_data(nats_only: Stack) -> None:
    nats_only.up(["nats"])
    port = nats_only.services["nats"].port
    nats_only.down(["nats"])
    assert nats_only.status()["nats"] is False
    time.sleep(0.2)
    nats_only.up(["nats"])
    assert nats_only.services["nats"].port == port


def test_cli_status_reports_each_service(nats_only: Stack) -> None:
    nats_only.up(["nats"])
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "status", "--root", str(nats_only.root)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "nats      running" in result.stdout
    assert "postgres  stopped" in result.stdout
    assert result.returncode == 1


def _threads_nice(pid: int) -> set[int]:
    # On Linux a thread id names that one thread to getpriority (niceness is per thread).
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return {os.getpriority(os.PRIO_PROCESS, int(task.name)) for task in tasks}


def test_devstack_s3_nice_starts_the_embedded_s3_at_that_niceness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # make run sets it (devrun/__main__.py): the S3 serves mostly the niced relay.
    monkeypatch.setenv("DEVSTACK_S3_NICE", "13")
    stack = Stack(tmp_path / "stack")
    try:
        env = stack.up(["s3"])
        state = stack.services["s3"].read_state()
        assert state is not None
        # gunicorn's master and its worker (which answers), every thread of each
        workers = subprocess.run(
            ["pgrep", "-P", str(state.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert workers, "gunicorn started no worker"
        for pid in [state.pid, *map(int, workers)]:
            assert _threads_nice(pid) == {13}
        with urllib.request.urlopen(f"{env['S3_ENDPOINT_URL']}/moto-api/", timeout=5) as r:
            assert r.status == 200
    finally:
        stack.down()


def test_the_embedded_s3_runs_at_normal_priority_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEVSTACK_S3_NICE", raising=False)
    stack = Stack(tmp_path / "stack")
    try:
        stack.up(["s3"])
        state = stack.services["s3"].read_state()
        assert state is not None
        assert os.getpriority(os.PRIO_PROCESS, state.pid) == os.getpriority(
            os.PRIO_PROCESS, os.getpid()
        )
    finally:
        stack.down()


@pytest.mark.parametrize("value", ["-1", "20", "ten", "5.5"])
def test_a_bad_devstack_s3_nice_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DEVSTACK_S3_NICE", value)
    stack = Stack(tmp_path / "stack")
    try:
        with pytest.raises(ServiceError, match="DEVSTACK_S3_NICE must be a whole number"):
            stack.up(["s3"])
        assert stack.status()["s3"] is False
    finally:
        stack.down()
