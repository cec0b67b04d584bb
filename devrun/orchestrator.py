"""The body of `make run`: children, admin, demo, banner, then wait for a stop.

Every step is written to be run again on the state the last run left behind, whatever
stopped it (Ctrl-C, SIGTERM, `kill -9`, a crashed child) and whatever the API or the admin
did meanwhile: the in-process simulator starts empty each time, so the demo connects again,
and subscription sync reconciles our mirror with what the simulator reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from django.conf import settings

from devrun.metrics import fresh_metrics_dir
from devrun.oura import OuraTarget
from devrun.supervisor import STOP_GRACE_S, Supervisor, stop_with_parent
from devrun.watchdog import leftovers, reap
from devstack.stack import DEFAULT_ROOT
from health_project.serving import BACKGROUND_NICE, granian_args

if TYPE_CHECKING:
    from oura_simulator import OuraSimulator, SimUser

logger = logging.getLogger(__name__)

WEB_PORT = int(os.environ.get("WEB_PORT", "8000"))
SIM_PORT = int(os.environ.get("OURA_SIMULATOR_PORT", "8787"))
DEMO_USER = "demo-user"
DEMO_TICK_S = float(os.environ.get("DEMO_TICK_S", "20"))
READY_TIMEOUT_S = 90.0


class Stopped(Exception):
    """A stop was asked for (signal) or a child died while the system was starting."""


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_ready(url: str, supervisor: Supervisor, stop: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stop.is_set():
            raise Stopped("stop requested")
        problem = supervisor.check()
        if problem:
            raise Stopped(problem)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        stop.wait(0.3)
    raise Stopped(f"{url} did not answer 200 within {READY_TIMEOUT_S:.0f}s")


def _state_file(name: str) -> Path:
    DEFAULT_ROOT.mkdir(parents=True, exist_ok=True)
    return DEFAULT_ROOT / name


def _admin_password() -> str:
    """A local admin for the backoffice, with a password kept in the git-ignored state dir."""
    from django.contrib.auth import get_user_model

    path = _state_file("admin-password")
    password = path.read_text().strip() if path.exists() else ""
    if not password:
        password = secrets.token_urlsafe(12)
        path.write_text(password)
        path.chmod(0o600)
    admin, _ = get_user_model().objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    admin.is_staff = admin.is_superuser = admin.is_active = True
    admin.set_password(password)
    admin.save()
    return password


def _admin_totp() -> None:
    """Enrols the local admin in two-factor login: a confirmed TOTP device whose secret is
    kept beside the password (0600); `python -m devrun.totp` prints its current code.
    Also lifts an axes lockout of `admin` left by an earlier run."""
    from axes.utils import reset
    from django.contrib.auth import get_user_model
    from django_otp.plugins.otp_totp.models import TOTPDevice, default_key

    path = _state_file("admin-totp")
    key = path.read_text().strip() if path.exists() else ""
    if not key:
        key = default_key()
        path.write_text(key)
        path.chmod(0o600)
    admin = get_user_model().objects.get(username="admin")
    TOTPDevice.objects.filter(user=admin).exclude(name="make run").delete()
    TOTPDevice.objects.update_or_create(
        user=admin, name="make run", defaults={"key": key, "confirmed": True}
    )
    reset(username="admin")


def _demo_api_key() -> str:
    """The demo's key, reused while it is active; a revoked or expired one is replaced."""
    from access.models import ApiKey
    from access.services import api_key_create, hash_key

    path = _state_file("demo-api-key")
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


def _demo_oura_account(sim: OuraSimulator) -> SimUser:
    """A simulator account that no other user of ours holds.

    The simulator's accounts are the same on every run (seeded), and between runs someone
    may have linked the first one to another user through the API; Oura would then refuse it
    to the demo ("already connected"), so the demo takes the next account instead.
    """
    from ingestion.selectors import connection_for_provider_user

    for _ in range(100):
        account = sim.add_user()
        holder = connection_for_provider_user(provider_user_id=account.oura_user_id)
        if holder is None or holder.user_id == DEMO_USER:
            return account
    raise RuntimeError("no free simulator account for the demo user")


def _connect(api_key: str, user_id: str) -> None:
    """The steps a person takes: start, approve at Oura, come back to the callback."""
    base = f"http://127.0.0.1:{WEB_PORT}"
    started = httpx.post(
        f"{base}/v1/health/{user_id}/oura/connection",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    started.raise_for_status()
    # One browser: our start step sets the cookie the callback checks, the simulator
    # approves at once and redirects to the callback.
    with httpx.Client(follow_redirects=True, timeout=30) as browser:
        callback = browser.get(started.json()["authorizeUrl"])
    if callback.status_code != 200:
        raise RuntimeError(f"demo connect failed with {callback.status_code}")


def _start_backfill(api_key: str, user_id: str, days: int = 90) -> str:
    end = date.today()
    response = httpx.post(
        f"http://127.0.0.1:{WEB_PORT}/v1/health/oura/sync",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "userId": user_id,
            "range": {"start": str(end - timedelta(days=days)), "end": str(end)},
        },
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["jobId"])


def _ticker(sim: OuraSimulator, oura_user_id: str, stop: threading.Event) -> None:
    """Changes one of today's documents now and then, as a syncing ring would."""
    kinds = ["daily_readiness", "daily_activity", "daily_sleep", "workout"]
    i = 0
    while not stop.wait(DEMO_TICK_S):
        with contextlib.suppress(Exception):  # a demo nicety must never stop the system
            sim.put_document(oura_user_id, kinds[i % len(kinds)], day=date.today())
        i += 1


def _start_simulator() -> tuple[OuraSimulator, str]:
    from oura_simulator import OuraSimulator, SimulatorConfig

    sim = OuraSimulator(
        SimulatorConfig(
            client_id=settings.OURA_CLIENT_ID,
            client_secret=settings.OURA_CLIENT_SECRET,
            history_days=400,
        )
    )
    # The usual port when it is free; any port otherwise (URLs are handed to the children).
    url = sim.start(port=SIM_PORT if _port_free(SIM_PORT) else 0)
    urls = {
        "OURA_API_BASE_URL": url,
        "OURA_AUTHORIZE_URL": f"{url}/oauth/authorize",
        "OURA_TOKEN_URL": f"{url}/oauth/token",
        "OURA_REVOKE_URL": f"{url}/oauth/revoke",
    }
    os.environ.update(urls)
    for name, value in urls.items():  # this process calls Oura too (demo, subscriptions)
        setattr(settings, name, value)
    return sim, url


def _demo(sim: OuraSimulator, api_key: str, stop: threading.Event) -> str:
    """Connect the demo user, subscribe to webhooks, backfill 90 days, start the ticker."""
    from ingestion.subscription_services import subscriptions_sync

    account = _demo_oura_account(sim)
    sim.set_login(account.oura_user_id)
    _connect(api_key, DEMO_USER)  # again on every run: the fresh simulator forgot its tokens
    report = subscriptions_sync(callback_url=f"http://127.0.0.1:{WEB_PORT}/v1/webhooks/oura")
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} webhook subscription(s) failed")
    job_id = _start_backfill(api_key, DEMO_USER)
    threading.Thread(
        target=_ticker, args=(sim, account.oura_user_id, stop), name="demo-ticker", daemon=True
    ).start()
    return job_id


def run(*, target: OuraTarget, embedded: list[str], with_demo: bool = True) -> int:
    from django.core.management import call_command

    stop = threading.Event()
    reason: list[str] = []

    def _on_signal(signum: int, frame: object) -> None:
        reason.append(signal.Signals(signum).name)
        stop.set()

    # Before any child exists: a signal at any later point stops them all (finally below).
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    stop_with_parent()

    # What a last run killed with -9 left running (its watchdog may not have ended it yet):
    # it would hold the port, and write to the metrics folder emptied below.
    registry = _state_file("children.json")
    reap(leftovers(registry), STOP_GRACE_S, after="the last make run ended")
    if not _port_free(WEB_PORT):
        print(f"error: port {WEB_PORT} is in use; stop what holds it or set WEB_PORT",
              file=sys.stderr)  # fmt: skip
        return 2
    call_command("provision")
    call_command("collectstatic", interactive=False, verbosity=0)

    sim: OuraSimulator | None = None
    oura_url = target.api_base_url
    if not target.external:
        sim, oura_url = _start_simulator()
        # The simulator is new: breakers opened while the last run's was being stopped
        # would refuse this run's first calls (the demo's sign-in among them).
        from ingestion.circuit_breaker import reset_all

        reset_all()
    # Every child writes its metrics here and web's /metrics serves them all (devrun/metrics.py).
    metrics_dir = fresh_metrics_dir(_state_file("metrics"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    supervisor = Supervisor(metrics_dir=metrics_dir, registry=registry)
    bin_dir = Path(sys.executable).parent
    try:
        # granian: a Rust HTTP front; health_project/serving.py has the shape (ASGI, the
        # webhook on each worker's loop, the rest of Django on a thread pool).
        # It waits for requests in flight without limit unless told: 5 s, then its workers go.
        # Its logs use our formatter; the access log is ours (http_request, with request and
        # trace ids and the path's user id hashed: core/request_id.py), not granian's.
        granian_log_config = _state_file("granian-logging.json")
        granian_log_config.write_text(json.dumps(settings.GRANIAN_LOG_CONFIG))
        supervisor.start(
            "web",
            [str(bin_dir / "granian"), *granian_args(host="127.0.0.1", port=WEB_PORT),
             "--workers-kill-timeout", "5", "--no-access-log",
             "--log-config", str(granian_log_config)],
            env,
        )  # fmt: skip
        # Archiving yields the CPU to webhooks on a shared machine (docs/phase-3/webhooks.md).
        supervisor.start("relay", _manage("run_relay", "--nice", str(BACKGROUND_NICE)), env)
        supervisor.start("normalizer", _manage("run_consumer", "normalizer"), env)
        supervisor.start("worker", _manage("run_worker"), env)
        supervisor.start("scheduler", _manage("run_scheduler"), env)

        _wait_ready(f"http://127.0.0.1:{WEB_PORT}/readyz", supervisor, stop)
        password = _admin_password()
        _admin_totp()
        call_command("setup_staff_groups", verbosity=0)  # support, privacy officer, operator
        api_key = job_id = demo_problem = ""
        if sim is not None and with_demo:
            api_key = _demo_api_key()
            try:
                job_id = _demo(sim, api_key, stop)
            except (RuntimeError, httpx.HTTPError) as exc:
                # The system runs without the demo; say why instead of stopping everything.
                demo_problem = f"{type(exc).__name__}: {exc}"
        _print_banner(
            target=target, oura_url=oura_url, embedded=embedded, password=password,
            api_key=api_key, job_id=job_id, demo_problem=demo_problem,
            pids=supervisor.pids(), metrics_dir=metrics_dir,
        )  # fmt: skip
        while not stop.wait(1.0):
            problem = supervisor.check()
            if problem:
                raise Stopped(problem)
        print(f"{reason[0] if reason else 'stop'} received: stopping the children", flush=True)
        return 0
    except Stopped as exc:
        if stop.is_set():
            return 0
        print(f"stopping: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        try:
            supervisor.stop()
        finally:
            if sim is not None:
                sim.stop()


def _print_banner(
    *,
    target: OuraTarget,
    oura_url: str,
    embedded: list[str],
    password: str,
    api_key: str,
    job_id: str,
    demo_problem: str,
    pids: dict[str, int],
    metrics_dir: Path,
) -> None:
    web = f"http://127.0.0.1:{WEB_PORT}"
    where = {
        name: "embedded" if name in embedded else "external" for name in ("postgres", "nats", "s3")
    }
    lines = [
        "",
        "health integrations are running:",
        f"  web + REST v1    {web}        (readiness: {web}/readyz)",
        f"  admin            {web}/{settings.ADMIN_URL_PREFIX}  user: admin  password: {password}",
        "                   code (2FA): python -m devrun.totp  (.venv/bin/python; prints the "
        "current one)",
        f"  API docs         {web}/v1/schema/swagger/",
        f"  metrics          {web}/metrics  (every process; Prometheus text format)",
        f"                   written by each child to {metrics_dir} (emptied at each start)",
        f"  Postgres         {settings.DATABASE_URL}  ({where['postgres']})",
        f"  NATS JetStream   {settings.NATS_URL}  ({where['nats']})",
        f"  S3               {settings.S3_ENDPOINT_URL or 'AWS'}  bucket {settings.S3_BUCKET}"
        f"  ({where['s3']})",
        "  children         " + ", ".join(f"{name} (pid {pid})" for name, pid in pids.items()),
    ]
    if target.external:
        lines += [
            f"  Oura             {oura_url}  (external, from OURA_*: no simulator, no demo)",
            "  connect a user   POST /v1/health/{userId}/oura/connection with an API key",
            "                   (python manage.py create_api_key --help); webhooks need Oura to",
            "                   reach OURA_WEBHOOK_CALLBACK_URL: python manage.py "
            "oura_subscriptions sync",
        ]
    else:
        lines.append(
            f"  Oura             {oura_url}  (built-in simulator; set OURA_* for a real one)"
        )
        if demo_problem:
            lines.append(f"  demo             not set up: {demo_problem}")
        elif api_key:
            lines += [
                f"  demo user        {DEMO_USER} (connected; 90-day backfill job {job_id})",
                f"  demo API key     {api_key}",
                "",
                f"  curl -H 'Authorization: Bearer {api_key}' \\",
                f"    '{web}/v1/health/{DEMO_USER}/oura/daily?start="
                f"{date.today() - timedelta(days=30)}&end={date.today()}'",
            ]
    lines += [
        "",
        "Ctrl-C stops the system; `python -m devstack down` stops the embedded services.",
        "",
    ]
    print("\n".join(lines), flush=True)
