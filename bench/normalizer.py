"""Normalizer benchmark. Not a test: it prints figures and asserts nothing about them.

Needs the services' URLs in the environment and a provisioned database (bench/README.md):

    python -m devstack up --root .devstack-bench
    eval "$(python -m devstack env --root .devstack-bench)"
    python manage.py provision
    python -m bench.normalizer
    python -m devstack down --root .devstack-bench

One run measures, on the same services:
1. the embedded S3's bare PUT rate (the ceiling for anything that PUTs per event);
2. a bare fetch-and-ack loop on HEALTH_RAW through the same PullConsumer the runner uses;
3. backfill pages: documents normalized per second by one process (the real handler and
   runner: S3 GET, sha256, contract validation, one upsert transaction per page, publish);
4. webhook end to end at a fixed rate: granian (`POST /v1/webhooks/oura`, signed), the
   relay, and `manage.py run_consumer normalizer` against an in-process Oura simulator;
   latency from the 202 to the row being visible in Postgres, at P50/P95/P99.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    cpu_seconds,
    machine_busy_seconds,
    machine_iowait_seconds,
    s3_put_rate,
    service_pids,
    stop_processes,
)
from health_project.serving import BACKGROUND_NICE, granian_args

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FIXTURES = Path("/work/shared/oura/fixtures")
if not FIXTURES.exists():
    FIXTURES = ROOT / "oura_simulator/tests/contract_data/fixtures"


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")
    os.environ.setdefault("HEALTH_ENV", "development")  # unset would mean production
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("OURA_APP_RATE_LIMIT", "1000000")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 1)


# --- 1. S3 bare PUT ------------------------------------------------------------------------


# --- 2. bare fetch-and-ack -----------------------------------------------------------------


def fetch_and_ack(messages: int, batch: int) -> dict[str, float]:
    import dataclasses

    from core import bus
    from core.consumers import PullConsumer, get_consumer

    subject = "health.raw.bench.fetchack"
    spec = dataclasses.replace(
        get_consumer("normalizer"),
        name="bench-fetchack",
        durable=f"bench-fetchack-{uuid.uuid4().hex[:8]}",
        filter_subject=subject,
    )
    envelope = json.dumps({"event_id": "x" * 36, "kind": "webhook", "provider": "oura"}).encode()
    publisher = bus.get_bus()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: publisher.publish(subject, envelope), range(messages)))
    puller = PullConsumer(spec)
    puller.start()
    done = 0
    started = time.perf_counter()
    try:
        while done < messages:
            msgs = puller.fetch(batch, timeout=1.0)
            if not msgs:
                break
            for msg in msgs:
                puller.ack(msg)
                done += 1
        elapsed = time.perf_counter() - started
    finally:
        puller.close()
        _delete_durable(spec.stream, spec.durable)
    return {"messages": done, "per_s": round(done / elapsed, 1), "batch": batch}


def _purge_oura_raw() -> None:
    """Empty health.raw.oura.> so that a phase reads only what it published itself."""
    import asyncio

    from core import bus

    async def _purge() -> None:
        nc = await bus.connect(name="bench")
        try:
            await nc.jetstream().purge_stream("HEALTH_RAW", subject="health.raw.oura.>")
        finally:
            await nc.close()

    asyncio.run(_purge())


def _delete_durable(stream: str, durable: str) -> None:
    import asyncio

    from core import bus

    async def _delete() -> None:
        nc = await bus.connect(name="bench")
        try:
            await nc.jetstream().delete_consumer(stream, durable)
        except Exception:
            pass
        finally:
            await nc.close()

    asyncio.run(_delete())


# --- 3. backfill pages ---------------------------------------------------------------------


def _template(collection: str) -> dict[str, Any]:
    body = json.loads((FIXTURES / f"{collection}.json").read_text())
    document: dict[str, Any] = body["data"][0]
    return document


def _page_documents(collection: str, size: int, first_day: date) -> list[dict[str, Any]]:
    template = _template(collection)
    documents = []
    for n in range(size):
        document = copy.deepcopy(template)
        document["id"] = str(uuid.uuid4())
        document["day"] = (first_day + timedelta(days=n)).isoformat()
        documents.append(document)
    return documents


def backfill_pages(pages_per_collection: int, page_size: int) -> dict[str, Any]:
    import dataclasses

    from core import bus, raw_store
    from core.consumers import get_consumer, run_consumer
    from normalized.models import Activity, DailyActivity, DailyReadiness, SleepPeriod

    collections = ("daily_readiness", "daily_activity", "sleep", "workout")
    models = {"daily_readiness": DailyReadiness, "daily_activity": DailyActivity,
              "sleep": SleepPeriod, "workout": Activity}  # fmt: skip
    spec = dataclasses.replace(
        get_consumer("normalizer"),
        durable=f"bench-pages-{uuid.uuid4().hex[:8]}",
        filter_subject="health.raw.oura.>",
    )
    run_id = uuid.uuid4().hex[:8]
    envelopes = []
    total_documents = 0
    for collection in collections:
        for page in range(pages_per_collection):
            # A user per page keeps (user, day) unique for the daily tables.
            user_id = f"bench-pages-{run_id}-{page}"
            documents = _page_documents(collection, page_size, date(2015, 1, 1))
            data = json.dumps({"data": documents, "next_token": None}).encode()
            event_id = str(uuid.uuid4())
            stored = raw_store.put(
                raw_store.object_key(
                    provider="oura", day=date.today(), user_id=user_id, event_id=event_id
                ),
                data,
            )
            envelopes.append(
                (
                    f"health.raw.oura.{collection}",
                    {"event_id": event_id, "provider": "oura", "kind": "page",
                     "user_id": user_id, "provider_user_id": f"oura-{user_id}",
                     "collection": collection, "object_key": stored.key,
                     "sha256": stored.sha256, "document_count": len(documents),
                     "job_id": str(uuid.uuid4()),
                     "window": {"start": "2015-01-01", "end": "2018-01-01"},
                     "received_at": datetime.now(UTC).isoformat()},
                )
            )  # fmt: skip
            total_documents += len(documents)
    _purge_oura_raw()
    for subject, envelope in envelopes:
        bus.get_bus().publish(subject, envelope, msg_id=str(envelope["event_id"]))

    started = time.perf_counter()
    stats = run_consumer(spec, max_messages=len(envelopes), idle_exit_s=5.0)
    elapsed = time.perf_counter() - started
    _delete_durable(spec.stream, spec.durable)
    _purge_oura_raw()  # the webhook phase's `normalizer` durable must not see these pages
    written = (
        sum(
            models[c]._default_manager.filter(user_id__startswith=f"bench-pages-{run_id}").count()
            for c in collections
            if c != "workout"
        )
        + Activity.objects.filter(user_id__startswith=f"bench-pages-{run_id}").count()
    )
    return {
        "pages": len(envelopes),
        "documents": total_documents,
        "rows_written": written,
        "acked": stats.acked,
        "dead_lettered": stats.dead_lettered,
        "seconds": round(elapsed, 2),
        "documents_per_s": round(total_documents / elapsed, 1),
        "collections": list(collections),
        "page_size": page_size,
    }


def backfill_per_collection(page_size: int) -> dict[str, float]:
    """One page of each collection, timed alone: where the per-document cost differs."""
    out = {}
    for collection in ("daily_readiness", "daily_activity", "sleep", "workout", "session"):
        from normalized import services

        documents = _page_documents(collection, page_size, date(2010, 1, 1))
        started = time.perf_counter()
        services.normalize_documents(
            user_id=f"bench-col-{uuid.uuid4().hex[:8]}",
            collection=collection,
            documents=documents,
            raw_object_key="bench",
        )
        out[collection] = round(page_size / (time.perf_counter() - started), 1)
    return out


# --- 4. webhook end to end -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def webhooks_end_to_end(
    rate: float,
    seconds: float,
    consumers: int,
    workers: int,
    relay_nice: int = 0,
    devstack_root: Path | None = None,
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    from django.conf import settings
    from django.utils import timezone

    from ingestion import crypto
    from ingestion.models import OuraConnection
    from oura_simulator import OuraSimulator
    from oura_simulator.config import SimulatorConfig

    # The durable `normalizer` would otherwise first work through whatever other runs left
    # on the stream (bench.webhooks leaves tens of thousands of events for a user without
    # tokens), and that backlog would be measured as latency.
    _purge_oura_raw()
    config = SimulatorConfig(
        client_id=settings.OURA_CLIENT_ID,
        client_secret=settings.OURA_CLIENT_SECRET,
        rate_limit_per_token=0,
        rate_limit_per_app=0,
        history_days=30,
    )
    sim = OuraSimulator(config)
    base = sim.start()
    sim_user = sim.add_user()
    tokens = sim.issue_tokens(sim_user.oura_user_id)
    user_id = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    # Simulator ids repeat across runs (fixed seed); an earlier run's connection goes.
    OuraConnection.objects.filter(provider_user_id=sim_user.oura_user_id).delete()
    OuraConnection.objects.create(
        user_id=user_id,
        provider_user_id=sim_user.oura_user_id,
        access_token_enc=crypto.encrypt(tokens["access_token"]),
        refresh_token_enc=crypto.encrypt(tokens["refresh_token"]),
        access_token_expires_at=timezone.now() + timedelta(days=1),
    )
    env = os.environ | {
        "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "OURA_API_BASE_URL": base,
        "OURA_TOKEN_URL": f"{base}/oauth/token",
        "OURA_AUTHORIZE_URL": f"{base}/oauth/authorize",
        "OURA_REVOKE_URL": f"{base}/oauth/revoke",
        "OURA_APP_RATE_LIMIT": "1000000",
        "WEBHOOK_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    processes = [
        subprocess.Popen(
            [str(bin_dir / "granian"), *granian_args(host="127.0.0.1", port=port, workers=workers),
             "--no-log"],
            cwd=ROOT, env=env,
        ),
        subprocess.Popen(
            [sys.executable, "manage.py", "run_relay", "--grace", "2",
             "--nice", str(relay_nice)], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL,
        ),
    ] + [
        subprocess.Popen(
            [sys.executable, "manage.py", "run_consumer", "normalizer"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(consumers)
    ]  # fmt: skip
    accepted: dict[str, float] = {}
    statuses: dict[int, int] = {}
    request_ms: list[float] = []
    visible: dict[str, float] = {}
    lock = threading.Lock()
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        time.sleep(2)  # consumers bound and fetching
        secret = settings.OURA_CLIENT_SECRET
        clients = threading.local()
        pending: set[str] = set()  # accepted, not yet visible

        def send(object_id: str) -> None:
            body = json.dumps(
                {"event_type": "create", "data_type": "workout", "object_id": object_id,
                 "event_time": datetime.now(UTC).isoformat(), "user_id": sim_user.oura_user_id},
                separators=(",", ":"),
            ).encode()  # fmt: skip
            ts = str(int(time.time()))
            mac = hmac.new(secret.encode(), ts.encode() + body, hashlib.sha256).hexdigest()
            # http.client with keep-alive, not httpx: the load generator shares the two cores
            # with what it measures, and httpx took ~1 ms of CPU per request here.
            client = getattr(clients, "client", None)
            if client is None:
                client = clients.client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            started = time.time()
            try:
                client.request(
                    "POST", "/v1/webhooks/oura", body=body,
                    headers={"content-type": "application/json",
                             "x-oura-signature": mac.upper(), "x-oura-timestamp": ts},
                )  # fmt: skip
                response = client.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                client.close()
                clients.client = None
                status = 0  # no answer: counted under status 0, never as accepted
            done = time.time()
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 202:
                    accepted[object_id] = done
                    pending.add(object_id)
                    request_ms.append((done - started) * 1000)

        stop_polling = threading.Event()

        def poll() -> None:
            # Its own psycopg connection with a prepared statement: every 5 ms, so it should
            # cost Postgres and this process as little as it can.
            import psycopg

            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as pg:
                while not stop_polling.is_set():
                    with lock:
                        ids = list(pending)
                    if ids:
                        rows = pg.execute(
                            "SELECT oura_id FROM health.oura_activities "
                            "WHERE user_id = %s AND oura_id = ANY(%s)",
                            [user_id, ids],
                            prepare=True,
                        ).fetchall()
                        now = time.time()
                        with lock:
                            for (oura_id,) in rows:
                                visible[oura_id] = now
                                pending.discard(oura_id)
                    time.sleep(0.005)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        total = int(rate * seconds)
        warmup = int(rate * warmup_s)
        documents = [
            sim.put_document(sim_user.oura_user_id, "workout", None, emit=False,
                             day=date(2020, 1, 1) + timedelta(days=n % 1500))["id"]
            for n in range(warmup + total)
        ]  # fmt: skip
        interval = 1.0 / rate

        def offer(object_ids: list[str]) -> float:
            """Send at `rate`, open loop; returns the seconds it took."""
            began = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                for n, object_id in enumerate(object_ids):
                    delay = began + n * interval - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    pool.submit(send, object_id)
            return time.perf_counter() - began

        def wait_all_visible(timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with lock:
                    if len(visible) >= len(accepted):
                        return
                time.sleep(0.1)

        # Warm-up at the same rate, not counted: every process opens its connections (web
        # threads to Postgres, clients to S3 and the simulator) and imports lazily on its
        # first requests, which put ~1 s on the first second of a cold run.
        if warmup:
            offer(documents[:warmup])
            wait_all_visible(60)
            with lock:
                warm_statuses = dict(statuses)
                accepted.clear()
                visible.clear()
                statuses.clear()
                request_ms.clear()
            time.sleep(1)
        # CPU of every part, from the first request until every row is visible.
        parts = {"web": [processes[0].pid], "relay": [processes[1].pid],
                 "normalizers": [p.pid for p in processes[2:]],
                 **service_pids(devstack_root)}  # fmt: skip
        cpu_before = {name: cpu_seconds(pids) for name, pids in parts.items()}
        own_before, busy_before = time.process_time(), machine_busy_seconds()
        iowait_before = machine_iowait_seconds()
        started = time.perf_counter()
        accepted_first = time.time()
        offered_s = offer(documents[warmup:])
        wait_all_visible(120)
        window = time.perf_counter() - started
        cpu = {
            name: round((cpu_seconds(pids) - cpu_before[name]) / window, 2)
            for name, pids in parts.items()
        }
        cpu["bench_process (load, simulator, poller)"] = round(
            (time.process_time() - own_before) / window, 2
        )
        cpu["machine_busy"] = round((machine_busy_seconds() - busy_before) / window, 2)
        cpu["machine_iowait"] = round((machine_iowait_seconds() - iowait_before) / window, 2)
        stop_polling.set()
        poller.join(5)
        latencies = [(visible[o] - accepted[o]) * 1000 for o in accepted if o in visible]
        # The worst latency of each second of the run: shows whether a high P95 is a steady
        # queue or a few stalls.
        by_second: dict[int, float] = {}
        for o in accepted:
            if o in visible:
                second = int(accepted[o] - accepted_first)
                by_second[second] = max(by_second.get(second, 0.0), visible[o] - accepted[o])
        return {
            "offered_rate_per_s": rate,
            "offered_seconds": round(offered_s, 1),
            "warmup_seconds_not_counted": warmup_s,
            "warmup_statuses": warm_statuses if warmup else {},
            "sent": total,
            "statuses": statuses,
            "accepted": len(accepted),
            "visible": len(visible),
            "consumer_processes": consumers,
            "relay_nice": relay_nice,
            "cpu_cores_until_all_visible": cpu,
            "web_workers": workers,
            "webhook_202_ms": {"p50": percentile(request_ms, 50),
                               "p95": percentile(request_ms, 95),
                               "p99": percentile(request_ms, 99)},
            "first_second_at_unix": round(accepted_first, 3),
            "worst_ms_by_second": [round(by_second.get(n, 0.0) * 1000)
                                   for n in range(max(by_second, default=-1) + 1)],
            "accepted_to_visible_ms": {"p50": percentile(latencies, 50),
                                       "p95": percentile(latencies, 95),
                                       "p99": percentile(latencies, 99),
                                       "mean": round(statistics.fmean(latencies), 1)
                                       if latencies else None},
        }  # fmt: skip
    finally:
        stop_processes(*processes)
        sim.stop()


def _bench_simulator_and_connection(user_id: str) -> tuple[Any, Any, Any]:
    from django.conf import settings
    from django.utils import timezone

    from ingestion import crypto
    from ingestion.models import OuraConnection
    from oura_simulator import OuraSimulator
    from oura_simulator.config import SimulatorConfig

    config = SimulatorConfig(
        client_id=settings.OURA_CLIENT_ID,
        client_secret=settings.OURA_CLIENT_SECRET,
        rate_limit_per_token=0,
        rate_limit_per_app=0,
        history_days=30,
        seed=int(time.time()),
    )
    sim = OuraSimulator(config)
    base = sim.start()
    sim_user = sim.add_user()
    tokens = sim.issue_tokens(sim_user.oura_user_id)
    conn = OuraConnection.objects.create(
        user_id=user_id,
        provider_user_id=sim_user.oura_user_id,
        access_token_enc=crypto.encrypt(tokens["access_token"]),
        refresh_token_enc=crypto.encrypt(tokens["refresh_token"]),
        access_token_expires_at=timezone.now() + timedelta(days=1),
    )
    return sim, base, conn


def webhook_drain(count: int, concurrency: int) -> dict[str, Any]:
    """The consumer alone: a backlog of webhook messages drained by one process (in this
    one), each one a real Oura fetch from the simulator, S3 PUT, upsert and publish."""
    import dataclasses

    from django.conf import settings

    from core import bus
    from core.consumers import get_consumer, run_consumer

    user_id = f"bench-drain-{uuid.uuid4().hex[:8]}"
    sim, base, conn = _bench_simulator_and_connection(user_id)
    settings.OURA_API_BASE_URL = base
    settings.OURA_TOKEN_URL = f"{base}/oauth/token"
    try:
        _purge_oura_raw()
        for n in range(count):
            document = sim.put_document(
                conn.provider_user_id, "workout", None, emit=False,
                day=date(2020, 1, 1) + timedelta(days=n % 1500),
            )  # fmt: skip
            # Every key of the bus contract's RawWebhookEnvelope (core/messages.py).
            notification = {
                "event_type": "create",
                "data_type": "workout",
                "object_id": document["id"],
                "event_time": datetime.now(UTC).isoformat(),
                "user_id": conn.provider_user_id,
            }
            envelope = {
                "envelope_version": 1, "event_id": str(uuid.uuid4()), "provider": "oura",
                "kind": "webhook", "received_at": datetime.now(UTC).isoformat(),
                "dedupe_key": "0" * 64, "status": "accepted", "user_id": user_id,
                "notification": notification, "body": json.dumps(notification), "headers": {},
                "signature": {"algorithm": "hmac-sha256", "timestamp": "0",
                              "secret": "current", "form": "raw"},
            }  # fmt: skip
            bus.get_bus().publish(
                "health.raw.oura.webhook", envelope, msg_id=str(envelope["event_id"])
            )
        spec = dataclasses.replace(
            get_consumer("normalizer"), durable=f"bench-drain-{uuid.uuid4().hex[:8]}"
        )
        started = time.perf_counter()
        stats = run_consumer(spec, max_messages=count, concurrency=concurrency, idle_exit_s=5)
        elapsed = time.perf_counter() - started
        _delete_durable(spec.stream, spec.durable)
        return {"messages": count, "acked": stats.acked, "concurrency": concurrency,
                "seconds": round(elapsed, 2), "per_s": round(count / elapsed, 1)}  # fmt: skip
    finally:
        sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.normalizer")
    parser.add_argument("--s3-seconds", type=float, default=5.0)
    parser.add_argument("--fetch-ack-messages", type=int, default=10000)
    parser.add_argument("--pages-per-collection", type=int, default=5)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument(
        "--rates", default="100,30", help="webhooks per second, comma-separated; one phase each"
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--warmup", type=float, default=3.0,
        help="seconds of webhooks at the same rate before each end-to-end phase, not counted",
    )  # fmt: skip
    parser.add_argument("--consumers", type=int, default=2, help="run_consumer processes")
    parser.add_argument("--workers", type=int, default=2, help="granian workers")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["s3", "fetchack", "pages", "drain", "webhooks"])  # fmt: skip
    parser.add_argument("--drain-messages", type=int, default=1000)
    parser.add_argument(
        "--relay-nice", type=int, default=BACKGROUND_NICE, help="run_relay --nice N"
    )
    parser.add_argument(
        "--devstack-root", type=Path, help="Also report the CPU of that root's services."
    )
    args = parser.parse_args(argv)
    setup_django()
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "cpus": os.cpu_count()}
    if "s3" not in args.skip:
        results["s3_bare_put_per_s"] = {
            "1_thread": s3_put_rate(args.s3_seconds, 1),
            "4_threads": s3_put_rate(args.s3_seconds, 4),
        }
        print(json.dumps(results["s3_bare_put_per_s"]), flush=True)
    if "fetchack" not in args.skip:
        results["fetch_and_ack"] = fetch_and_ack(args.fetch_ack_messages, 50)
        print(json.dumps(results["fetch_and_ack"]), flush=True)
    if "pages" not in args.skip:
        results["backfill_pages"] = backfill_pages(args.pages_per_collection, args.page_size)
        print(json.dumps(results["backfill_pages"]), flush=True)
        results["backfill_per_collection_docs_per_s"] = backfill_per_collection(args.page_size)
        print(json.dumps(results["backfill_per_collection_docs_per_s"]), flush=True)
    if "drain" not in args.skip:
        results["webhook_drain"] = [
            webhook_drain(args.drain_messages, concurrency) for concurrency in (1, 8)
        ]
        print(json.dumps(results["webhook_drain"]), flush=True)
    if "webhooks" not in args.skip:
        results["webhooks_end_to_end"] = []
        for rate in (float(r) for r in args.rates.split(",")):
            phase = webhooks_end_to_end(
                rate,
                args.seconds,
                args.consumers,
                args.workers,
                args.relay_nice,
                args.devstack_root,
                args.warmup,
            )
            results["webhooks_end_to_end"].append(phase)
            print(json.dumps(phase), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"normalizer-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
