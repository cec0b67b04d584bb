"""Webhook ingestion benchmark: accepted/s and latency of POST /v1/webhooks/oura.

Not a test. Needs the services' URLs in the environment (see bench/README.md):

    python -m devstack up --root .devstack-bench
    eval "$(python -m devstack env --root .devstack-bench)"
    python -m bench.webhooks
    python -m devstack down --root .devstack-bench

In one run it measures, against granian (the server of `make run`; `--server gunicorn` for
gunicorn gthread) on 127.0.0.1:
- a trivial 202 view served by the same Django stack (same middleware, same server);
- signed, unique Oura deliveries (verify + Postgres insert + audit + JetStream publish);
- the relay's backlog when the load stops and how long it takes to drain;
- the embedded S3's bare PUT rate, which bounds that drain.

This module is also the bench server's WSGI entry (`bench.webhooks:application`) and URL
conf: the trivial view must never be reachable in production, so it lives only here.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    cpu_seconds,
    machine_busy_seconds,
    niceness,
    s3_put_rate,
    service_pids,
    stop_processes,
)
from health_project.serving import (
    BACKGROUND_NICE,
    WEB_BLOCKING_THREADS,
    WEB_INTERFACE,
    WEB_WORKERS,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH_USER = "bench-oura-user"


# --- the bench server (imported by gunicorn) -------------------------------------------


def _trivial(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"eventId": "00000000-0000-0000-0000-000000000000"}, status=202)


def _urlpatterns() -> list[Any]:
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    from health_project.urls import urlpatterns

    return [path("bench/trivial", csrf_exempt(_trivial)), *urlpatterns]


def _application() -> Any:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")
    os.environ.setdefault("HEALTH_ENV", "development")  # unset would mean production
    import django
    from django.conf import settings

    django.setup()
    settings.ROOT_URLCONF = "bench.webhooks"  # this module's `urlpatterns` below
    # The application `make run` serves (its lean route for the webhook included), over this
    # module's URL conf.
    from health_project.wsgi import application

    return application


def __getattr__(name: str) -> Any:
    # Lazy, so that importing this module for the load generator does not build a server.
    if name == "application":
        return _application()
    if name == "asgi_application":
        from health_project.asgi import make_application

        return make_application(_application())
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


# --- load generator ---------------------------------------------------------------------


def _request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def signed_deliveries(count: int, secret: str) -> list[bytes]:
    """Unique notifications (so each one is accepted, not a 409), signed like Oura does."""
    ts = str(int(time.time()))
    out = []
    for _ in range(count):
        body = json.dumps(
            {"event_type": "update", "data_type": "daily_sleep", "object_id": str(uuid.uuid4()),
             "event_time": "2026-01-01T08:00:00+00:00", "user_id": BENCH_USER},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        mac = hmac.new(secret.encode(), ts.encode() + body, hashlib.sha256).hexdigest().upper()
        headers = {"x-oura-signature": mac, "x-oura-timestamp": ts}
        out.append(_request("/v1/webhooks/oura", body, headers))
    return out


async def _connection(
    port: int, queue: collections.deque[bytes], deadline: float, out: dict[str, Any]
) -> None:
    """One keep-alive HTTP/1.1 connection, one request at a time (a bare-bones client keeps
    the generator's own CPU use low on a 2-core machine)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while queue and time.perf_counter() < deadline:
            raw = queue.popleft()
            started = time.perf_counter()
            writer.write(raw)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and "close" in value.lower():
                    close = True
            if length:
                await reader.readexactly(length)
            out["latencies"].append(time.perf_counter() - started)
            out["statuses"][status] += 1
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


def run_load(
    port: int,
    requests: list[bytes],
    concurrency: int,
    seconds: float,
    server_pids: list[int] | None = None,
    other_pids: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "statuses": collections.Counter()}
    queue = collections.deque(requests)
    # Both the generator and the server share the machine's cores, so each one's CPU share
    # says who is eating the budget.
    client_cpu = time.process_time()
    server_cpu = cpu_seconds(server_pids or [])
    machine_busy = machine_busy_seconds()
    others = {name: cpu_seconds(pids) for name, pids in (other_pids or {}).items()}

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_connection(port, queue, deadline, out) for _ in range(concurrency)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    client_cpu = time.process_time() - client_cpu
    server_cpu = cpu_seconds(server_pids or []) - server_cpu
    machine_busy = machine_busy_seconds() - machine_busy
    others = {name: cpu_seconds(pids) - others[name] for name, pids in (other_pids or {}).items()}
    lat = sorted(out["latencies"])
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [0.0] * 99
    ok = sum(n for s, n in out["statuses"].items() if s == 202)
    return {
        "requests": len(lat),
        "elapsed_s": round(elapsed, 2),
        "accepted": ok,
        "accepted_per_s": round(ok / elapsed, 1),
        "statuses": dict(out["statuses"]),
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "client_cpu_cores": round(client_cpu / elapsed, 2),
        "server_cpu_cores": round(server_cpu / elapsed, 2),
        "server_cpu_ms_per_request": round(server_cpu * 1000 / max(len(lat), 1), 2),
        # Everything on the machine: Postgres, NATS, the relay, the embedded S3, and anything
        # else that happens to run (this is a shared VM).
        "machine_busy_cores": round(machine_busy / elapsed, 2),
        **{f"{name}_cpu_cores": round(cpu / elapsed, 2) for name, cpu in others.items()},
    }


def _trivial_requests(count: int) -> list[bytes]:
    return [_request("/bench/trivial", b"{}", {})] * count


# --- orchestration ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the bench server did not answer /healthz")


def prepare_server_env() -> dict[str, str]:
    """Django set up in this process, the bus and bucket provisioned and the bench's Oura
    user connected; the environment its server and relay run with."""
    missing = [v for v in ("DATABASE_URL", "NATS_URL", "S3_ENDPOINT_URL") if not os.environ.get(v)]
    if missing:
        raise SystemExit(f"set {', '.join(missing)} (see bench/README.md)")
    env = {**os.environ, "HEALTH_EMBEDDED_SERVICES": "false", "DJANGO_DEBUG": "false",
           "DJANGO_SETTINGS_MODULE": "health_project.settings"}  # fmt: skip
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from core.provisioning import provision_all
    from ingestion.models import OuraConnection

    provision_all()
    OuraConnection.objects.get_or_create(
        provider_user_id=BENCH_USER, defaults={"user_id": "bench-user"}
    )
    return env


def start_relay(env: dict[str, str], *, workers: int, nice: int) -> subprocess.Popen[bytes]:
    """`manage.py run_relay` polling every 0.2 s, as the webhook benches run it."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_relay", "--interval", "0.2",
         "--workers", str(workers), "--nice", str(nice)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_drained(limit_s: float) -> float:
    """Wait until the relay's two queues are empty, at most `limit_s`; the seconds waited."""
    from ingestion.relay import relay_backlog_counts

    began = time.monotonic()
    while any(relay_backlog_counts().values()) and time.monotonic() - began < limit_s:
        time.sleep(0.1)
    return time.monotonic() - began


def measure(
    env: dict[str, str],
    *,
    seconds: float = 15.0,
    concurrency: int = 16,
    server: str = "granian",
    interface: str = WEB_INTERFACE,
    worker_class: str = "gthread",
    workers: int = WEB_WORKERS,
    threads: int = WEB_BLOCKING_THREADS,
    relay_workers: int = 4,
    relay_after_load: bool = False,
    relay_nice: int = BACKGROUND_NICE,
    devstack_root: Path | None = None,
    trivial: bool = True,
    drain_limit_s: float = 600,
) -> dict[str, Any]:
    """One measurement on a fresh server: warm-up, the trivial phase (unless `trivial` is
    false), the signed deliveries, then the relay's drain. `env` is prepare_server_env()'s.

    Shared by this module's CLI and `bench.peers`, which runs it interleaved with the peer's.
    """
    from django.conf import settings

    from ingestion.relay import relay_backlog_counts

    port = _free_port()
    if server == "granian":
        # Rust HTTP/1.1 front. WSGI: the app on `threads` blocking threads per worker. ASGI
        # (health_project/asgi.py): the webhook on the worker's loop, the rest on a2wsgi's
        # WEB_BLOCKING_THREADS threads.
        if interface == "asgi":
            # granian runs ASGI on one thread per worker; `threads` size a2wsgi's pool.
            app, blocking = "bench.webhooks:asgi_application", "1"
        else:
            app, blocking = "bench.webhooks:application", str(threads)
        command = [sys.executable, "-m", "granian", "--interface", interface, app,
                   "--workers", str(workers), "--blocking-threads", blocking, "--host",
                   "127.0.0.1", "--port", str(port), "--no-log", "--http", "1"]  # fmt: skip
        server_name = f"granian {interface} {workers}x{threads}"
    else:
        command = [sys.executable, "-m", "gunicorn", "bench.webhooks:application",
                   "-k", worker_class, "-w", str(workers),
                   "--threads", str(threads), "--keep-alive", "30",
                   "-b", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
        server_name = f"gunicorn {worker_class} {workers}x{threads}"
    server_proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    relay: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores",
        "server": server_name,
        "relay": ("after the load" if relay_after_load else "during the load")
        + (f", nice {relay_nice}" if relay_nice else ""),
        "concurrency": concurrency,
    }
    try:
        _wait_http(port)
        secret = settings.OURA_CLIENT_SECRET
        run_load(port, _trivial_requests(2000), concurrency, 5)  # warm every worker
        run_load(port, signed_deliveries(1000, secret), concurrency, 5)

        if not relay_after_load:
            # A running service, as in production: started and idle (the warm-up's rows
            # archived) before the load, so its start-up is not part of the measurement.
            relay = start_relay(env, workers=relay_workers, nice=relay_nice)
            wait_drained(120)
        if trivial:
            results["trivial"] = run_load(
                port, _trivial_requests(200_000), concurrency, seconds, [server_proc.pid]
            )
        deliveries = signed_deliveries(int(seconds * 2500), secret)
        services = service_pids(devstack_root)
        if "s3" in services:  # make run starts it at BACKGROUND_NICE (DEVSTACK_S3_NICE)
            results["s3_nice"] = niceness(services["s3"][0])
        if relay is not None:
            services["relay"] = [relay.pid]
        results["webhook"] = run_load(
            port, deliveries, concurrency, seconds, [server_proc.pid], services
        )
        if relay is None:
            relay = start_relay(env, workers=relay_workers, nice=relay_nice)
        stopped = time.monotonic()
        results["backlog_at_stop"] = relay_backlog_counts()
        wait_drained(drain_limit_s)
        results["drain_s"] = round(time.monotonic() - stopped, 1)
        results["backlog_after_drain"] = relay_backlog_counts()
    finally:
        stop_processes(relay, server_proc)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--interface",
        default=WEB_INTERFACE,
        choices=["asgi", "wsgi"],
        help="granian's; make run's by default",
    )
    parser.add_argument(
        "--server", default="granian", choices=["granian", "gunicorn"], help="make run: granian"
    )
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    parser.add_argument("--workers", type=int, default=WEB_WORKERS)
    parser.add_argument("--threads", type=int, default=WEB_BLOCKING_THREADS)
    parser.add_argument("--relay-workers", type=int, default=4)
    parser.add_argument(
        "--relay-after-load", action="store_true", help="Start the relay only when load stops."
    )
    parser.add_argument(
        "--relay-nice",
        type=int,
        default=BACKGROUND_NICE,
        help=f"run_relay --nice N (make run uses {BACKGROUND_NICE}).",
    )
    parser.add_argument(
        "--devstack-root", type=Path, help="Also report the CPU of that root's services."
    )
    parser.add_argument(
        "--no-trivial", action="store_true", help="Skip the trivial view's phase (profiling)."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    env = prepare_server_env()
    from ingestion.relay import relay_backlog_counts

    relay_backlog_counts()

    results = measure(
        env,
        seconds=args.seconds,
        concurrency=args.concurrency,
        server=args.server,
        interface=args.interface,
        worker_class=args.worker_class,
        workers=args.workers,
        threads=args.threads,
        relay_workers=args.relay_workers,
        relay_after_load=args.relay_after_load,
        relay_nice=args.relay_nice,
        devstack_root=args.devstack_root,
        trivial=not args.no_trivial,
    )
    results["s3_put_per_s_1_thread"] = s3_put_rate(5, 1, size=1200)
    results["s3_put_per_s_4_threads"] = s3_put_rate(5, 4, size=1200)
    if "trivial" in results:
        results["ratio_to_trivial"] = round(
            results["webhook"]["accepted_per_s"] / max(results["trivial"]["accepted_per_s"], 1), 2
        )
    text = json.dumps(results, indent=2)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"webhooks-{int(time.time())}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
