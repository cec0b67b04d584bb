"""`make run`: the whole system on one machine, supervised by one process.

Starts (in this order) the Oura simulator in-process, the web server, the relay, the
normalizer consumer and the backfill worker as child processes; then sets up a demo: a user
connected through the real OAuth flow, webhook subscriptions, a 90-day backfill, and a
ticker that changes the demo user's documents at the simulator so webhooks keep arriving.
Ctrl-C (or SIGTERM) stops the children, then exits; the embedded services keep running
(`python -m devstack down` stops them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import httpx
from django.conf import settings

from devstack.stack import DEFAULT_ROOT

logger = logging.getLogger(__name__)

WEB_PORT = int(os.environ.get("WEB_PORT", "8000"))
SIM_PORT = int(os.environ.get("OURA_SIMULATOR_PORT", "8787"))
DEMO_USER = "demo-user"
DEMO_TICK_S = 20.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None


@dataclass
class Supervisor:
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        child = Child(name, argv, process)
        assert process.stdout is not None
        child.pump = threading.Thread(target=self._pump, args=(name, process.stdout), daemon=True)
        child.pump.start()
        self.children.append(child)

    @staticmethod
    def _pump(name: str, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            sys.stdout.write(f"{name:>10} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    def check(self) -> str | None:
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return f"{child.name} exited with status {child.process.returncode}"
        return None

    def stop(self) -> None:
        self.stopping.set()
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            if child.process is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.1, deadline - time.monotonic()))
            if child.process.poll() is None:
                child.process.kill()


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _admin_password() -> str:
    """A local admin for the backoffice, with a password kept in the git-ignored state dir."""
    from django.contrib.auth import get_user_model

    path = DEFAULT_ROOT / "admin-password"
    if path.exists():
        password = path.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
        DEFAULT_ROOT.mkdir(exist_ok=True)
        path.write_text(password)
        path.chmod(0o600)
    user_model = get_user_model()
    admin, _ = user_model.objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    admin.set_password(password)
    admin.save()
    return password


def _demo_api_key() -> str:
    from access.models import ApiKey
    from access.services import api_key_create, hash_key

    path = DEFAULT_ROOT / "demo-api-key"
    if path.exists():
        secret = path.read_text().strip()
        key = ApiKey.objects.filter(key_hash=hash_key(secret)).first()
        if key is not None and key.is_active():
            return secret
    issued = api_key_create(
        name="demo (make run)",
        scopes=["health:read", "health:sync", "health:connect"],
        user_ids=[DEMO_USER],
    )
    path.write_text(issued.secret)
    path.chmod(0o600)
    return issued.secret


def _connect_demo_user(api_key: str) -> None:
    """The same steps a person takes: start, approve at Oura, come back to the callback."""
    from ingestion.models import OuraConnection

    if OuraConnection.objects.filter(user_id=DEMO_USER, status="active").exists():
        return
    base = f"http://127.0.0.1:{WEB_PORT}"
    started = httpx.post(
        f"{base}/v1/health/{DEMO_USER}/oura/connection",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    started.raise_for_status()
    approved = httpx.get(started.json()["authorizeUrl"], follow_redirects=False, timeout=10)
    query = parse_qs(urlsplit(approved.headers["location"]).query)
    callback = httpx.get(
        f"{base}/v1/oauth/oura/callback", params={k: v[0] for k, v in query.items()}, timeout=30
    )
    if callback.status_code != 200:
        raise RuntimeError(f"demo connect failed with {callback.status_code}")


def _start_demo_backfill(api_key: str) -> str:
    end = date.today()
    response = httpx.post(
        f"http://127.0.0.1:{WEB_PORT}/v1/health/oura/sync",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "userId": DEMO_USER,
            "range": {"start": str(end - timedelta(days=90)), "end": str(end)},
        },
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["jobId"])


def _ticker(sim: Any, oura_user_id: str, stop: threading.Event) -> None:
    """Changes one of today's documents now and then, as a syncing ring would."""
    kinds = ["daily_readiness", "daily_activity", "daily_sleep", "workout"]
    i = 0
    while not stop.wait(DEMO_TICK_S):
        with contextlib.suppress(Exception):  # a demo nicety must never stop the system
            sim.put_document(oura_user_id, kinds[i % len(kinds)], day=date.today())
        i += 1


def run(*, with_demo: bool = True) -> int:
    from django.core.management import call_command

    from oura_simulator import OuraSimulator, SimulatorConfig

    call_command("provision")
    call_command("collectstatic", interactive=False, verbosity=0)

    sim = OuraSimulator(
        SimulatorConfig(
            client_id=settings.OURA_CLIENT_ID,
            client_secret=settings.OURA_CLIENT_SECRET,
            history_days=400,
        )
    )
    sim_url = sim.start(port=SIM_PORT)
    demo_oura_user = sim.add_user()
    sim.set_login(demo_oura_user.oura_user_id)

    env = {
        **os.environ,
        "OURA_API_BASE_URL": sim_url,
        "OURA_AUTHORIZE_URL": f"{sim_url}/oauth/authorize",
        "OURA_TOKEN_URL": f"{sim_url}/oauth/token",
        "OURA_REVOKE_URL": f"{sim_url}/oauth/revoke",
        "PYTHONUNBUFFERED": "1",
    }
    supervisor = Supervisor()
    bin_dir = Path(sys.executable).parent
    # granian: a Rust HTTP front with the WSGI app on blocking threads; on this project's
    # webhook bench it answers ~20 % more webhooks per core than gunicorn (bench/README.md).
    supervisor.start(
        "web",
        [str(bin_dir / "granian"), "--interface", "wsgi", "health_project.wsgi:application",
         "--host", "127.0.0.1", "--port", str(WEB_PORT), "--workers", "2",
         "--blocking-threads", "8", "--access-log"],
        env,
    )  # fmt: skip
    # Archiving yields the CPU to webhooks on a shared machine (docs/phase-3/webhooks.md).
    supervisor.start("relay", _manage("run_relay", "--nice", "10"), env)
    supervisor.start("normalizer", _manage("run_consumer", "normalizer"), env)
    supervisor.start("worker", _manage("run_worker"), env)

    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    try:
        _wait_http(f"http://127.0.0.1:{WEB_PORT}/healthz")
        password = _admin_password()
        api_key = _demo_api_key()
        job_id = ""
        if with_demo:
            os.environ.update({k: v for k, v in env.items() if k.startswith("OURA_")})
            settings.OURA_API_BASE_URL = sim_url
            settings.OURA_TOKEN_URL = f"{sim_url}/oauth/token"
            settings.OURA_REVOKE_URL = f"{sim_url}/oauth/revoke"
            _connect_demo_user(api_key)
            from ingestion.subscription_services import subscriptions_sync

            subscriptions_sync(callback_url=f"http://127.0.0.1:{WEB_PORT}/v1/webhooks/oura")
            job_id = _start_demo_backfill(api_key)
            threading.Thread(
                target=_ticker, args=(sim, demo_oura_user.oura_user_id, stop), daemon=True
            ).start()
        _print_banner(sim_url, password, api_key, job_id)
        while not stop.wait(1.0):
            problem = supervisor.check()
            if problem:
                logger.error("child_exited", extra={"problem": problem})
                print(f"stopping: {problem}", file=sys.stderr)
                return 1
        return 0
    finally:
        supervisor.stop()
        sim.stop()


def _print_banner(sim_url: str, password: str, api_key: str, job_id: str) -> None:
    web = f"http://127.0.0.1:{WEB_PORT}"
    lines = [
        "",
        "health integrations are running:",
        f"  web + REST v1    {web}        (readiness: {web}/readyz)",
        f"  admin            {web}/admin/  user: admin  password: {password}",
        f"  API docs         {web}/v1/schema/swagger/",
        f"  Oura simulator   {sim_url}",
        f"  Postgres         {settings.DATABASE_URL}",
        f"  NATS JetStream   {settings.NATS_URL}",
        f"  S3               {settings.S3_ENDPOINT_URL}  bucket {settings.S3_BUCKET}",
        "  children         web (granian), relay, normalizer, worker",
        f"  demo user        {DEMO_USER} (connected; 90-day backfill job {job_id or '-'})",
        f"  demo API key     {api_key}",
        "",
        f"  curl -H 'Authorization: Bearer {api_key}' \\",
        f"    '{web}/v1/health/{DEMO_USER}/oura/daily?start="
        f"{date.today() - timedelta(days=30)}&end={date.today()}'",
        "",
        "Ctrl-C stops the system; `python -m devstack down` stops the embedded services.",
        "",
    ]
    print("\n".join(lines), flush=True)
