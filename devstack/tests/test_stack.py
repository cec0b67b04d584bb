"""The embedded set: started twice it reuses what runs; a stuck folder is refused clearly."""

from __future__ import annotations

import subprocess
import sys
import time
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
