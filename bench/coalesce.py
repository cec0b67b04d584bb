"""Coalesced webhook fetches (#18): Oura requests per 1,000 webhooks, and webhook -> row latency.

Not a test: it prints figures and asserts nothing about them. Needs the services' URLs in the
environment and a provisioned database (bench/README.md, "Coalesced webhook fetches"):

    python -m devstack up --root .devstack-bench-co
    eval "$(python -m devstack env --root .devstack-bench-co)"
    python manage.py provision
    python -m bench.coalesce --devstack-root .devstack-bench-co
    python -m devstack down --root .devstack-bench-co

The load is a morning burst (`MORNING_SYNC`): each user's app syncs once, and Oura announces
what changed with one notification per document, all within `--jitter` seconds of the sync;
the users' syncs are spread over `--burst-seconds`, so their notifications interleave on the
stream. Every phase runs twice, with OURA_COALESCE_FETCHES off ("before") and on ("after"),
the same code and new users (and so new documents) each time:

1. backlog: the whole burst is on the stream first, then drained by one in-process consumer
   (the normalizer's own runner and batch handler, batches of 50, 8 threads); Oura data
   requests counted at the simulator. This is the burst that outruns the consumers, where
   batches are full and a user's notifications share a batch.
2. live: signed webhooks POSTed at `--rate` per second to granian, the relay and two
   `run_consumer normalizer` processes (as bench.normalizer's end-to-end phase), in the
   burst's order; Oura data requests, and the latency from the 202 to the row being written
   (the row's `updated_at` at or after the webhook was sent: an update of a row that
   already exists counts only once it is rewritten).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import math
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, machine_busy_seconds, service_pids, stop_processes
from bench.normalizer import (
    RESULTS,
    ROOT,
    _delete_durable,
    _free_port,
    _purge_oura_raw,
    _wait_http,
    percentile,
    setup_django,
)
from health_project.serving import BACKGROUND_NICE, granian_args

# One user's morning sync: (webhook data_type, event_type, day offset from today, document).
# Documents with the same tag are one document (a sleep created by the background analysis
# and updated when the app opens: Oura's `background_created_foreground_updated`). This is an
# assumption, not a recording: no real burst of notifications was found (CONTRACT 5.4 says
# only that sleep, readiness and sleep_time sync when the app opens, activity and stress in
# the background). Three types come twice (yesterday's final and today's first daily
# activity and stress; one sleep created then updated): at best 13 webhooks cost 10 requests.
MORNING_SYNC: tuple[tuple[str, str, int, str], ...] = (
    ("sleep", "create", 0, "night"),
    ("daily_sleep", "create", 0, ""),
    ("daily_readiness", "create", 0, ""),
    ("sleep", "update", 0, "night"),
    ("daily_activity", "update", -1, ""),
    ("daily_activity", "create", 0, ""),
    ("daily_stress", "update", -1, ""),
    ("daily_stress", "create", 0, ""),
    ("daily_spo2", "create", 0, ""),
    ("sleep_time", "create", 0, ""),
    ("daily_resilience", "create", 0, ""),
    ("daily_cardiovascular_age", "create", 0, ""),
    ("workout", "create", 0, ""),
)
# The same types, each once: nothing in it can be coalesced (a contrast, `--mix single`).
SINGLE_SYNC: tuple[tuple[str, str, int, str], ...] = tuple(
    dict.fromkeys((t, "create", 0, "") for t, _, _, _ in MORNING_SYNC)
)
MIXES = {"morning": MORNING_SYNC, "single": SINGLE_SYNC}


def floor_per_1000(mix: str) -> float:
    """Requests per 1,000 webhooks if every sync's webhooks of one type shared a batch: one
    request per type and sync (the types in a mix are all coalesced ones)."""
    sync = MIXES[mix]
    return round(len({data_type for data_type, _, _, _ in sync}) * 1000 / len(sync), 1)


@dataclass(frozen=True)
class Notification:
    at: float  # seconds into the burst
    user_id: str  # ours
    oura_user_id: str
    data_type: str  # the webhook's
    collection: str  # the REST collection (the registry name)
    event_type: str
    object_id: str


def _setup_users(sim: Any, users: int, label: str) -> list[tuple[str, str]]:
    from django.utils import timezone

    from ingestion import crypto
    from ingestion.models import OuraConnection

    made = []
    for n in range(users):
        sim_user = sim.add_user()
        tokens = sim.issue_tokens(sim_user.oura_user_id)
        user_id = f"bench-co-{label}-{n}-{uuid.uuid4().hex[:6]}"
        OuraConnection.objects.filter(provider_user_id=sim_user.oura_user_id).delete()
        OuraConnection.objects.create(
            user_id=user_id,
            provider_user_id=sim_user.oura_user_id,
            access_token_enc=crypto.encrypt(tokens["access_token"]),
            refresh_token_enc=crypto.encrypt(tokens["refresh_token"]),
            access_token_expires_at=timezone.now() + timedelta(days=1),
        )
        made.append((user_id, sim_user.oura_user_id))
    return made


def burst(
    sim: Any,
    users: list[tuple[str, str]],
    mix: tuple[tuple[str, str, int, str], ...],
    burst_s: float,
    jitter_s: float,
    rng: random.Random,
) -> list[Notification]:
    """Each user's documents at the simulator (no webhook sent), and the notifications that
    announce them, in the order they would reach us."""
    from ingestion.data_types import WEBHOOK_TYPES

    today = datetime.now(UTC).date()
    out: list[Notification] = []
    for user_id, oura_user_id in users:
        sync = rng.uniform(0, burst_s)
        tagged: dict[str, str] = {}
        for data_type, event_type, offset, tag in mix:
            collection = WEBHOOK_TYPES[data_type]
            object_id = tagged.get(tag) if tag else None
            if object_id is None:
                day: date = today + timedelta(days=offset)
                document = sim.put_document(oura_user_id, collection, None, emit=False, day=day)
                object_id = str(document["id"])
                if tag:
                    tagged[tag] = object_id
            out.append(
                Notification(
                    at=sync + rng.uniform(0, jitter_s),
                    user_id=user_id,
                    oura_user_id=oura_user_id,
                    data_type=data_type,
                    collection=collection,
                    event_type=event_type,
                    object_id=object_id,
                )
            )
    out.sort(key=lambda n: n.at)
    return out


def _simulator() -> Any:
    from django.conf import settings

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
    sim.start()
    return sim


def _data_requests(sim: Any, since: int) -> dict[str, int]:
    paths = [r.path for r in sim.requests[since:] if r.path.startswith("/v2/usercollection/")]
    ranged = sum(1 for p in paths if p.count("/") == 3)
    return {"total": len(paths), "range": ranged, "by_id": len(paths) - ranged}


def _envelope(note: Notification) -> dict[str, Any]:
    """What webhook ingestion publishes: every key of core.messages.RawWebhookEnvelope."""
    notification = {
        "event_type": note.event_type,
        "data_type": note.data_type,
        "object_id": note.object_id,
        "event_time": datetime.now(UTC).isoformat(),
        "user_id": note.oura_user_id,
    }
    return {
        "envelope_version": 1, "event_id": str(uuid.uuid4()), "provider": "oura",
        "kind": "webhook", "received_at": datetime.now(UTC).isoformat(),
        "dedupe_key": "0" * 64, "status": "accepted", "user_id": note.user_id,
        "notification": notification, "body": json.dumps(notification), "headers": {},
        "signature": {"algorithm": "hmac-sha256", "timestamp": "0", "secret": "current",
                      "form": "raw"},
    }  # fmt: skip


def backlog(
    coalesce: bool, users: int, mix: str, burst_s: float, jitter_s: float, seed: int
) -> dict[str, Any]:
    """Phase 1: the burst already on the stream, drained by one in-process consumer."""
    import dataclasses

    from django.conf import settings

    from core import bus
    from core.consumers import get_consumer, run_consumer

    sim = _simulator()
    settings.OURA_API_BASE_URL = sim.base_url
    settings.OURA_TOKEN_URL = f"{sim.base_url}/oauth/token"
    settings.OURA_COALESCE_FETCHES = coalesce
    try:
        _purge_oura_raw()
        made = _setup_users(sim, users, "backlog")
        notes = burst(sim, made, MIXES[mix], burst_s, jitter_s, random.Random(seed))
        for note in notes:
            envelope = _envelope(note)
            bus.get_bus().publish("health.raw.oura.webhook", envelope, msg_id=envelope["event_id"])
        spec = dataclasses.replace(
            get_consumer("normalizer"), durable=f"bench-co-{uuid.uuid4().hex[:8]}"
        )
        before = len(sim.requests)
        started = time.perf_counter()
        stats = run_consumer(spec, max_messages=len(notes), idle_exit_s=5)
        elapsed = time.perf_counter() - started
        _delete_durable(spec.stream, spec.durable)
        requests = _data_requests(sim, before)
        return {
            "coalesce": coalesce, "mix": mix, "users": users, "webhooks": len(notes),
            "acked": stats.acked, "naked": stats.naked, "dead_lettered": stats.dead_lettered,
            "oura_requests": requests,
            "oura_requests_per_1000_webhooks": round(requests["total"] * 1000 / len(notes), 1),
            "drain_seconds": round(elapsed, 2),
            "drain_per_s": round(len(notes) / elapsed, 1),
        }  # fmt: skip
    finally:
        sim.stop()


def live(
    coalesce: bool,
    rate: float,
    seconds: float,
    mix: str,
    burst_s: float,
    jitter_s: float,
    seed: int,
    consumers: int,
    workers: int,
    relay_nice: int,
    devstack_root: Path | None,
    warmup_s: float,
) -> dict[str, Any]:
    """Phase 2: signed webhooks at `rate`/s through the whole pipeline, as in production."""
    from django.conf import settings

    from normalized.mappers import TABLES

    _purge_oura_raw()
    sim = _simulator()
    base = sim.base_url
    per_user = len(MIXES[mix])
    made = _setup_users(sim, math.ceil(rate * seconds / per_user), "live")
    notes = burst(sim, made, MIXES[mix], burst_s, jitter_s, random.Random(seed))
    # Warm-up users of their own, sent first and not counted: on a cold start every process
    # opens its connections and imports lazily on its first requests.
    warm_users = _setup_users(sim, math.ceil(rate * warmup_s / per_user), "warm")
    warm = burst(sim, warm_users, MIXES[mix], burst_s, jitter_s, random.Random(seed + 1000))
    env = os.environ | {
        "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "OURA_API_BASE_URL": base,
        "OURA_TOKEN_URL": f"{base}/oauth/token",
        "OURA_AUTHORIZE_URL": f"{base}/oauth/authorize",
        "OURA_REVOKE_URL": f"{base}/oauth/revoke",
        "OURA_APP_RATE_LIMIT": "1000000",
        "WEBHOOK_RATE_LIMIT_PER_MINUTE": "1000000",
        "OURA_COALESCE_FETCHES": "true" if coalesce else "false",
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
             "--nice", str(relay_nice)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        ),
    ] + [
        subprocess.Popen(
            [sys.executable, "manage.py", "run_consumer", "normalizer"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(consumers)
    ]  # fmt: skip
    table_of = {name: mapping.model._meta.db_table for name, mapping in TABLES.items()}
    lock = threading.Lock()
    sent_at: dict[int, float] = {}
    accepted: dict[int, float] = {}
    visible: dict[int, float] = {}
    pending: dict[int, Notification] = {}
    statuses: dict[int, int] = {}
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        time.sleep(2)  # consumers bound and fetching
        secret = settings.OURA_CLIENT_SECRET
        clients = threading.local()

        def send(index: int, note: Notification) -> None:
            body = json.dumps(
                {"event_type": note.event_type, "data_type": note.data_type,
                 "object_id": note.object_id, "event_time": datetime.now(UTC).isoformat(),
                 "user_id": note.oura_user_id},
                separators=(",", ":"),
            ).encode()  # fmt: skip
            ts = str(int(time.time()))
            mac = hmac.new(secret.encode(), ts.encode() + body, hashlib.sha256).hexdigest()
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
                status = 0
            done = time.time()
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 202:
                    sent_at[index] = started
                    accepted[index] = done
                    pending[index] = note

        stop_polling = threading.Event()

        def poll() -> None:
            # One statement per poll over the tables with pending webhooks: a row counts once
            # written at or after its webhook was sent (so an update needs its rewrite).
            import psycopg

            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as pg:
                while not stop_polling.is_set():
                    with lock:
                        waiting = dict(pending)
                    by_table: dict[str, set[str]] = {}
                    for note in waiting.values():
                        by_table.setdefault(table_of[note.collection], set()).add(note.object_id)
                    if by_table:
                        parts, params = [], []
                        for table, ids in by_table.items():
                            quoted = ".".join(f'"{p}"' for p in table.replace('"', "").split("."))
                            parts.append(
                                f"SELECT oura_id, updated_at FROM {quoted} WHERE oura_id = ANY(%s)"
                            )
                            params.append(list(ids))
                        rows = pg.execute(" UNION ALL ".join(parts), params).fetchall()
                        now = time.time()
                        written: dict[str, float] = {}
                        for oura_id, updated_at in rows:
                            stamp = updated_at.timestamp()
                            written[oura_id] = max(written.get(oura_id, 0.0), stamp)
                        with lock:
                            for index, note in waiting.items():
                                stamp = written.get(note.object_id)
                                if stamp is not None and stamp >= sent_at[index]:
                                    visible[index] = now
                                    pending.pop(index, None)
                    time.sleep(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()

        def offer(batch: list[Notification], first_index: int) -> float:
            """Send at `rate`, open loop; returns the seconds it took."""
            began = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                for n, note in enumerate(batch):
                    delay = began + n * interval - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    pool.submit(send, first_index + n, note)
            return time.perf_counter() - began

        def wait_all_visible(timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with lock:
                    if not pending and len(visible) >= len(accepted):
                        return
                time.sleep(0.1)

        interval = 1.0 / rate
        if warm:
            offer(warm, len(notes))
            wait_all_visible(60)
            with lock:
                warm_statuses = dict(statuses)
                for store in (sent_at, accepted, visible, pending, statuses):
                    store.clear()
            time.sleep(1)
        parts = {"web": [processes[0].pid], "relay": [processes[1].pid],
                 "normalizers": [p.pid for p in processes[2:]],
                 **service_pids(devstack_root)}  # fmt: skip
        cpu_before = {name: cpu_seconds(pids) for name, pids in parts.items()}
        busy_before = machine_busy_seconds()
        requests_before = len(sim.requests)
        started = time.perf_counter()
        first_at = time.time()
        offered_s = offer(notes, 0)
        wait_all_visible(120)
        window = time.perf_counter() - started
        stop_polling.set()
        poller.join(5)
        cpu = {
            name: round((cpu_seconds(pids) - cpu_before[name]) / window, 2)
            for name, pids in parts.items()
        }
        cpu["machine_busy"] = round((machine_busy_seconds() - busy_before) / window, 2)
        requests = _data_requests(sim, requests_before)
        latencies = [(visible[i] - accepted[i]) * 1000 for i in accepted if i in visible]
        by_second: dict[int, float] = {}
        for i in accepted:
            if i in visible:
                second = int(accepted[i] - first_at)
                by_second[second] = max(by_second.get(second, 0.0), visible[i] - accepted[i])
        return {
            "coalesce": coalesce, "mix": mix, "offered_rate_per_s": rate,
            "offered_seconds": round(offered_s, 1), "sent": len(notes), "users": len(made),
            "warmup_seconds_not_counted": warmup_s,
            "warmup_statuses": warm_statuses if warm else {},
            "statuses": statuses, "accepted": len(accepted), "visible": len(visible),
            "oura_requests": requests,
            "oura_requests_per_1000_webhooks": round(
                requests["total"] * 1000 / max(1, len(accepted)), 1),
            "accepted_to_row_ms": {"p50": percentile(latencies, 50),
                                   "p95": percentile(latencies, 95),
                                   "p99": percentile(latencies, 99),
                                   "mean": round(statistics.fmean(latencies), 1)
                                   if latencies else None},
            "worst_ms_by_second": [round(by_second.get(n, 0.0) * 1000)
                                   for n in range(max(by_second, default=-1) + 1)],
            "cpu_cores_until_all_visible": cpu,
        }  # fmt: skip
    finally:
        stop_processes(*processes)
        sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coalesce")
    parser.add_argument("--mix", choices=sorted(MIXES), default="morning")
    parser.add_argument("--users", type=int, default=77, help="backlog phase: users (13 each)")
    parser.add_argument("--burst-seconds", type=float, default=60.0, help="syncs spread over")
    parser.add_argument("--jitter", type=float, default=2.0, help="a sync's notifications within")
    parser.add_argument("--rate", type=float, default=100.0, help="live phase: webhooks per s")
    parser.add_argument("--seconds", type=float, default=20.0, help="live phase: length")
    parser.add_argument("--warmup", type=float, default=3.0, help="live phase: not counted")
    parser.add_argument("--rounds", type=int, default=1, help="before/after pairs, interleaved")
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="granian workers")
    parser.add_argument("--relay-nice", type=int, default=BACKGROUND_NICE)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--skip", action="append", default=[], choices=["backlog", "live"])
    parser.add_argument("--devstack-root", type=Path)
    args = parser.parse_args(argv)
    setup_django()
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().split()[:3]
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(),
        "loadavg_at_start": load, "args": {k: str(v) for k, v in vars(args).items()},
        "floor_requests_per_1000_webhooks": floor_per_1000(args.mix),
        "backlog": [], "live": [],
    }  # fmt: skip
    for round_ in range(args.rounds):
        # Before and after alternate, so a drift of the shared machine hits both alike.
        order = (False, True) if round_ % 2 == 0 else (True, False)
        for coalesce in order:
            if "backlog" not in args.skip:
                phase = backlog(
                    coalesce, args.users, args.mix, args.burst_seconds, args.jitter,
                    args.seed + round_,
                )  # fmt: skip
                results["backlog"].append(phase)
                print(json.dumps(phase), flush=True)
            if "live" not in args.skip:
                phase = live(
                    coalesce, args.rate, args.seconds, args.mix, args.burst_seconds,
                    args.jitter, args.seed + round_, args.consumers, args.workers,
                    args.relay_nice, args.devstack_root, args.warmup,
                )  # fmt: skip
                results["live"].append(phase)
                print(json.dumps(phase), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"coalesce-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps({"written": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
