"""Fleet backfill load test. Not a test: it prints figures and asserts nothing about them.

Many users connected at once each ask for a backfill (default: 200 users x 365 days) through
`POST /v1/health/oura/sync` on a real web server, under an app-wide Oura budget set low
enough to bind (default 1,000 requests per 60 s window), while signed live webhooks arrive
at a steady low rate. Everything real runs as its own process: granian (the API and the
webhook endpoint), `manage.py run_worker`, `manage.py run_consumer normalizer` and
`manage.py run_relay`; Oura is the project's simulator, in this process, with its own
(sliding-window) rate limit set to the same budget, so a burst past it shows up as 429s.

Reported (one JSON, also kept in bench/results/):
- time from the first API call until every job succeeded and every row is visible (row
  counts per user and type equal to the simulator's documents for the range);
- Oura requests per type-window: backfill list requests / (users x types x windows);
- the most requests the simulator saw in one budget window, aligned like the budget
  (ingestion/rate_budget.py: fixed windows, epoch - epoch % window) and, for Oura's own
  sliding reading, in any sliding window; both against the budget; 429s returned;
- fairness: spread of the users' finish times (min/median/max, P10/P90);
- webhook -> row latency (P50/P95/P99) before the fleet starts and while it runs.

Needs the services' URLs in the environment and a provisioned database (bench/README.md,
"Fleet backfill"). `--quick` is a smoke run of well under a minute of budget.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from bisect import bisect_right
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from bench.backfill import consumer_backlog, setup_django
from bench.common import cpu_seconds, machine_busy_seconds, service_pids
from bench.normalizer import _free_port, _purge_oura_raw, _wait_http, percentile
from health_project.serving import BACKGROUND_NICE, granian_args

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Types with a normalized table whose rows are one per document, so "all rows visible" can be
# checked against the simulator. Three of them keep the default run near 10 minutes at the
# default budget (arithmetic in bench/README.md); --types takes any of these four.
TABLES = {"daily_activity": "DailyActivity", "daily_readiness": "DailyReadiness",
          "daily_sleep": "DailySleep", "sleep": "SleepPeriod"}  # fmt: skip
DEFAULT_TYPES = "daily_activity,daily_readiness,sleep"
QUICK = {"users": 20, "days": 90, "budget": 100, "window_s": 10, "webhook_rate": 1.0,
         "baseline_s": 8.0, "timeout_s": 300.0}  # fmt: skip


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "min": None, "p10": None, "median": None, "p90": None, "max": None}
    return {
        "n": len(values),
        "min": round(min(values), 1),
        "p10": percentile(values, 10),
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "max": round(max(values), 1),
        "p90_minus_p10": round(percentile(values, 90) - percentile(values, 10), 1),
    }


def max_in_windows(stamps: list[float], window_s: float) -> dict[str, Any]:
    """The busiest budget window: aligned (as rate_budget counts) and sliding (as the
    simulator's limiter, and perhaps Oura, counts: (t - window, t])."""
    stamps = sorted(stamps)
    aligned = Counter(int(t // window_s) for t in stamps)
    sliding = 0
    for j, t in enumerate(stamps):
        sliding = max(sliding, j + 1 - bisect_right(stamps, t - window_s))
    busiest = max(aligned.items(), key=lambda kv: kv[1], default=(0, 0))
    return {
        "aligned_max": busiest[1],
        "aligned_max_window_start": datetime.fromtimestamp(busiest[0] * window_s, UTC)
        .isoformat() if stamps else None,
        "aligned_per_window": [aligned[k] for k in sorted(aligned)],
        "sliding_max": sliding,
    }  # fmt: skip


class WebhookLoad:
    """Signed `workout` create notifications for documents that exist in the simulator, sent
    at a steady rate over keep-alive HTTP; a poller on its own connection notes when each
    row becomes visible (as bench/normalizer.py measures it)."""

    def __init__(self, sim: Any, oura_user_id: str, user_id: str, port: int, rate: float):
        from django.conf import settings

        self.sim, self.oura_user_id, self.user_id = sim, oura_user_id, user_id
        self.port, self.rate, self.secret = port, rate, settings.OURA_CLIENT_SECRET
        self.accepted: dict[str, tuple[float, str]] = {}  # id -> (202 at, phase)
        self.visible: dict[str, float] = {}
        self.statuses: Counter[int] = Counter()
        self.phase = "baseline"
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send_loop, daemon=True),
                         threading.Thread(target=self._poll_loop, daemon=True)]  # fmt: skip
        self._day = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, drain_s: float = 30.0) -> None:
        self._stop.set()
        self._threads[0].join(10)
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.1)
        self._threads[1].join(0)  # the poller is a daemon; it stops with _stop

    def _send_loop(self) -> None:
        from oura_simulator.webhooks import sign

        client: http.client.HTTPConnection | None = None
        began, n = time.perf_counter(), 0
        while not self._stop.is_set():
            delay = began + n / self.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            n += 1
            self._day += 1
            doc_id = self.sim.put_document(
                self.oura_user_id, "workout", None, emit=False,
                day=date(2020, 1, 1) + timedelta(days=self._day % 1500),
            )["id"]  # fmt: skip
            body = json.dumps(
                {"event_type": "create", "data_type": "workout", "object_id": doc_id,
                 "event_time": datetime.now(UTC).isoformat(), "user_id": self.oura_user_id},
                separators=(",", ":"),
            ).encode()  # fmt: skip
            ts = str(int(time.time()))
            headers = {"content-type": "application/json", "x-oura-timestamp": ts,
                       "x-oura-signature": sign(self.secret, ts, body)}  # fmt: skip
            try:
                if client is None:
                    client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                client.request("POST", "/v1/webhooks/oura", body=body, headers=headers)
                response = client.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                if client is not None:
                    client.close()
                client, status = None, 0
            with self._lock:
                self.statuses[status] += 1
                if status == 202:
                    self.accepted[doc_id] = (time.time(), self.phase)
                    self._pending.add(doc_id)

    def _poll_loop(self) -> None:
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as pg:
            while not (self._stop.is_set() and not self._pending):
                with self._lock:
                    ids = list(self._pending)
                if ids:
                    rows = pg.execute(
                        "SELECT oura_id FROM health.oura_activities "
                        "WHERE user_id = %s AND oura_id = ANY(%s)",
                        [self.user_id, ids], prepare=True,
                    ).fetchall()  # fmt: skip
                    now = time.time()
                    with self._lock:
                        for (oura_id,) in rows:
                            self.visible[oura_id] = now
                            self._pending.discard(oura_id)
                time.sleep(0.01)

    def report(self, phase: str) -> dict[str, Any]:
        with self._lock:
            ms = [(self.visible[i] - at) * 1000 for i, (at, p) in self.accepted.items()
                  if p == phase and i in self.visible]  # fmt: skip
            accepted = sum(1 for _, p in self.accepted.values() if p == phase)
        return {"accepted": accepted, "visible": len(ms),
                "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
                "p99_ms": percentile(ms, 99), "max_ms": round(max(ms), 1) if ms else None,
                "mean_ms": round(statistics.fmean(ms), 1) if ms else None}  # fmt: skip

    def by_minute(self, t0: float) -> list[dict[str, Any]]:
        """Latency per minute of the fleet run (by when the 202 came): tells the budget-bound
        minutes from those the machine was busy with something else."""
        minutes: dict[int, list[float]] = {}
        with self._lock:
            for object_id, (at, phase) in self.accepted.items():
                if phase == "during_fleet" and object_id in self.visible:
                    ms = (self.visible[object_id] - at) * 1000
                    minutes.setdefault(int((at - t0) // 60), []).append(ms)
        return [{"minute": m, "n": len(v), "p50_ms": percentile(v, 50),
                 "p95_ms": percentile(v, 95), "max_ms": round(max(v), 1)}
                for m, v in sorted(minutes.items())]  # fmt: skip


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=365, help="range per user, in days")
    parser.add_argument("--types", default=DEFAULT_TYPES,
                        help=f"comma-separated, of {', '.join(TABLES)}")  # fmt: skip
    parser.add_argument("--budget", type=int, default=1000, help="OURA_APP_RATE_LIMIT")
    parser.add_argument("--window-s", type=int, default=60, help="OURA_APP_RATE_WINDOW_S")
    parser.add_argument(
        "--sim-limit", type=int, default=None,
        help="the simulator's own sliding-window limit per window-s (default: the budget; 0: none)",
    )  # fmt: skip
    parser.add_argument("--webhook-rate", type=float, default=2.0, help="live webhooks/s")
    parser.add_argument(
        "--baseline-s", type=float, default=20.0,
        help="webhooks alone before the fleet starts (also the warm-up)",
    )  # fmt: skip
    parser.add_argument("--worker-threads", type=int, default=8, help="run_worker --threads")
    parser.add_argument("--consumers", type=int, default=1, help="run_consumer processes")
    parser.add_argument("--web-workers", type=int, default=2, help="granian workers")
    parser.add_argument(
        "--devstack-root", type=Path, help="Also report the CPU of that root's services."
    )
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="give up after this")
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    if unknown := set(types) - set(TABLES):
        parser.error(f"--types: no row check for {sorted(unknown)}")
    os.environ["OURA_APP_RATE_LIMIT"] = str(args.budget)
    os.environ["OURA_APP_RATE_WINDOW_S"] = str(args.window_s)
    setup_django()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from access.services import api_key_create
    from ingestion import crypto, rate_budget
    from ingestion.data_types import BACKFILL_TYPES, windows
    from ingestion.models import OuraConnection
    from jobs.models import IngestionJob
    from normalized import models as nm
    from oura_simulator import OuraSimulator
    from oura_simulator.config import SimulatorConfig

    today = timezone.now().date()
    start = today - timedelta(days=args.days - 1)
    windows_per_type = {t: len(windows(start, today, BACKFILL_TYPES[t].window_days)) for t in types}
    planned = args.users * sum(windows_per_type.values())
    backfill_per_window = int(args.budget * rate_budget.BACKFILL_SHARE)
    plan = {
        "users": args.users, "days": args.days, "types": types,
        "windows_per_type": windows_per_type, "planned_backfill_requests": planned,
        "budget": args.budget, "window_s": args.window_s,
        "backfill_share_per_window": backfill_per_window,
        "expected_minutes_at_budget": round(planned / backfill_per_window * args.window_s / 60, 1),
        "webhook_rate_per_s": args.webhook_rate,
        "live_reserve_per_window": args.budget - backfill_per_window,
        "webhooks_per_window": round(args.webhook_rate * args.window_s),
    }  # fmt: skip
    print(json.dumps({"plan": plan}), flush=True)

    # A clean slate on this root: no budget count or 429 pause left by an earlier run, no
    # active job of an interrupted run for the worker to pick up, no backlog on the stream.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM health.oura_rate_limit_windows WHERE bucket = %s",
                       [rate_budget.BUCKET])  # fmt: skip
    IngestionJob.objects.filter(status__in=["queued", "running"]).update(
        status="cancelled", cancel_requested=True, finished_at=timezone.now()
    )
    _purge_oura_raw()

    config = SimulatorConfig(client_id=settings.OURA_CLIENT_ID,
                             client_secret=settings.OURA_CLIENT_SECRET)  # fmt: skip
    config.seed = int(time.time())  # sim ids are per seed; a rerun needs new Oura users
    sim_limit = args.budget if args.sim_limit is None else args.sim_limit
    config.rate_limit_per_app = sim_limit  # 0: no limit
    config.rate_limit_per_token = sim_limit
    config.rate_limit_window_s = float(args.window_s)
    sim = OuraSimulator(config)
    base = sim.start()
    run = uuid.uuid4().hex[:6]
    users: dict[str, str] = {}  # our user id -> Oura user id
    connections = []
    expires = timezone.now() + timedelta(days=1)
    for n in range(args.users + 1):  # the last one receives the live webhooks
        sim_user = sim.add_user(history_days=args.days + 5)
        tokens = sim.issue_tokens(sim_user.oura_user_id)
        user_id = f"fleet-{run}-{n:03d}" if n < args.users else f"fleet-{run}-live"
        users[user_id] = sim_user.oura_user_id
        connections.append(OuraConnection(
            user_id=user_id, provider_user_id=sim_user.oura_user_id,
            scopes=[s.removeprefix("extapi:") for s in str(tokens["scope"]).split()],
            access_token_enc=crypto.encrypt(tokens["access_token"]),
            refresh_token_enc=crypto.encrypt(tokens["refresh_token"]),
            access_token_expires_at=expires,
        ))  # fmt: skip
    OuraConnection.objects.bulk_create(connections)
    live_user = f"fleet-{run}-live"
    fleet = [u for u in users if u != live_user]
    end_instant = f"{today.isoformat()}T23:59:59"  # what the job's last window asks
    expected = {
        (u, t): len(sim.documents(users[u], t, start.isoformat(), end_instant))
        for u in fleet for t in types
    }  # fmt: skip
    key = api_key_create(name=f"bench-fleet-{run}", scopes=["health:sync"], all_users=True)

    env = os.environ | {
        "DJANGO_DEBUG": "false", "LOG_LEVEL": "WARNING", "OURA_API_BASE_URL": base,
        "OURA_TOKEN_URL": f"{base}/oauth/token", "OURA_AUTHORIZE_URL": f"{base}/oauth/authorize",
        "OURA_REVOKE_URL": f"{base}/oauth/revoke",
        "OURA_APP_RATE_LIMIT": str(args.budget), "OURA_APP_RATE_WINDOW_S": str(args.window_s),
        "API_RATE_LIMIT_PER_MINUTE": "1000000", "WEBHOOK_RATE_LIMIT_PER_MINUTE": "1000000",
    }  # fmt: skip
    port = _free_port()
    manage = [sys.executable, str(ROOT / "manage.py")]
    # Each child leads its own process group, so the clean-up reaches what it forked (granian's
    # workers) even when the parent has to be killed.
    quiet = {"cwd": ROOT, "env": env, "stdout": subprocess.DEVNULL, "start_new_session": True}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    webhooks: WebhookLoad | None = None
    result: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(),
                              "quick": args.quick, "plan": plan,
                              "load_average_at_start": os.getloadavg()}  # fmt: skip
    try:
        processes["web"] = subprocess.Popen(
            [str(Path(sys.executable).parent / "granian"),
             *granian_args(host="127.0.0.1", port=port, workers=args.web_workers),
             "--no-log"], **quiet,
        )  # fmt: skip
        processes["worker"] = subprocess.Popen(
            [*manage, "run_worker", "--threads", str(args.worker_threads)], **quiet
        )
        processes["relay"] = subprocess.Popen(
            [*manage, "run_relay", "--grace", "2", "--nice", str(BACKGROUND_NICE)], **quiet
        )
        for n in range(args.consumers):
            processes[f"normalizer{n}"] = subprocess.Popen(
                [*manage, "run_consumer", "normalizer"], **quiet
            )
        _wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)  # slow on a busy machine
        time.sleep(3)  # worker and consumers bound and fetching
        parts = {name: [p.pid] for name, p in processes.items()} | service_pids(args.devstack_root)
        cpu_before = {name: cpu_seconds(pids) for name, pids in parts.items()}
        busy_before, own_before = machine_busy_seconds(), time.process_time()

        sim.reset_requests()
        t_start = time.time()
        webhooks = WebhookLoad(sim, users[live_user], live_user, port, args.webhook_rate)
        webhooks.start()
        time.sleep(args.baseline_s)
        webhooks.phase = "during_fleet"

        # 200 API calls at once (16 in flight), each one user's backfill.
        import httpx

        job_of: dict[str, str] = {}
        enqueued_at: dict[str, float] = {}

        def enqueue(user_id: str) -> None:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/health/oura/sync",
                json={"userId": user_id, "dataTypes": types,
                      "range": {"start": start.isoformat(), "end": today.isoformat()}},
                headers={"Authorization": f"Bearer {key.secret}"}, timeout=30,
            )  # fmt: skip
            if response.status_code != 202:
                raise SystemExit(f"sync for {user_id}: {response.status_code} {response.text}")
            job_of[user_id] = response.json()["jobId"]
            enqueued_at[user_id] = time.time()

        t0 = time.time()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(enqueue, fleet))
        t_enqueued = time.time() - t0
        print(json.dumps({"enqueued": len(job_of), "seconds": round(t_enqueued, 2)}), flush=True)

        tables = {
            t: connection.ops.quote_name(getattr(nm, TABLES[t])._meta.db_table) for t in types
        }
        rows_done_at: dict[str, float] = {}
        rows_seen: dict[tuple[str, str], int] = {}
        t_jobs_done: float | None = None
        last_print = 0.0
        load_samples: list[float] = []  # the machine's 1-minute load average, every 30 s
        terminal = ("succeeded", "succeeded_with_errors", "failed", "cancelled")
        while True:
            now = time.time()
            if now - t0 > args.timeout_s:
                result["timed_out"] = True
                break
            jobs = list(IngestionJob.objects.filter(job_id__in=job_of.values())
                        .values("user_id", "status"))  # fmt: skip
            done_jobs = sum(1 for j in jobs if j["status"] in terminal)
            if done_jobs == len(fleet) and t_jobs_done is None:
                t_jobs_done = now - t0
            with connection.cursor() as cursor:
                for t, table in tables.items():
                    cursor.execute(
                        f"SELECT user_id, count(*) FROM {table} WHERE user_id = ANY(%s) "
                        "GROUP BY user_id", [fleet],
                    )  # fmt: skip
                    for user_id, count in cursor.fetchall():
                        rows_seen[(user_id, t)] = count
            for user_id in fleet:
                if user_id not in rows_done_at and all(
                    rows_seen.get((user_id, t), 0) >= expected[(user_id, t)] for t in types
                ):
                    rows_done_at[user_id] = now - t0
            if now - last_print >= 30:
                last_print = now
                used = rate_budget.used_in_current_window()
                load_samples.append(round(os.getloadavg()[0], 1))
                print(json.dumps({"t_s": round(now - t0), "jobs_terminal": done_jobs,
                                  "users_all_rows": len(rows_done_at),
                                  "budget_used_this_window": used}), flush=True)  # fmt: skip
            if t_jobs_done is not None and len(rows_done_at) == len(fleet):
                break
            if t_jobs_done is not None and now - t0 - t_jobs_done > 60:
                result["rows_missing_60s_after_jobs"] = True  # counts never matched
                break
            time.sleep(1.0)
        t_all = time.time() - t0
        webhooks.phase = "after"
        webhooks.stop()
        window = time.time() - t_start
        cpu = {name: round((cpu_seconds(pids) - cpu_before[name]) / window, 2)
               for name, pids in parts.items()}  # fmt: skip
        cpu["bench_process (simulator, load, pollers)"] = round(
            (time.process_time() - own_before) / window, 2
        )
        cpu["machine_busy"] = round((machine_busy_seconds() - busy_before) / window, 2)

        # -- jobs and fairness -----------------------------------------------------------
        jobs = list(IngestionJob.objects.filter(job_id__in=job_of.values()).values(
            "user_id", "status", "created_at", "started_at", "finished_at", "counts",
        ))  # fmt: skip
        t0_dt = datetime.fromtimestamp(t0, UTC)
        finished = [(j["finished_at"] - t0_dt).total_seconds() for j in jobs if j["finished_at"]]
        started = [(j["started_at"] - t0_dt).total_seconds() for j in jobs if j["started_at"]]
        running = [(j["finished_at"] - j["started_at"]).total_seconds()
                   for j in jobs if j["finished_at"] and j["started_at"]]  # fmt: skip
        statuses = Counter(j["status"] for j in jobs)
        documents_fetched = sum(sum(j["counts"].values()) for j in jobs)
        missing = {
            f"{u}/{t}": [rows_seen.get((u, t), 0), want]
            for (u, t), want in expected.items() if rows_seen.get((u, t), 0) != want
        }  # fmt: skip

        # -- what Oura saw ---------------------------------------------------------------
        requests = sim.requests
        data = [r for r in requests if r.path.startswith("/v2/")]
        lists = Counter(r.path.rsplit("/", 1)[1] for r in data
                        if r.path in {f"/v2/usercollection/{t}" for t in types}
                        and r.status != 429)  # fmt: skip
        type_windows = args.users * sum(windows_per_type.values())
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(used) FROM health.oura_rate_limit_windows "
                           "WHERE bucket = %s AND window_start > '1970-01-01'",
                           [rate_budget.BUCKET])  # fmt: skip
            (budget_table_max,) = cursor.fetchone() or (None,)
        result |= {
            "enqueue_all_calls_s": round(t_enqueued, 2),
            "all_jobs_terminal_s": round(t_jobs_done, 1) if t_jobs_done is not None else None,
            "all_rows_visible_s": round(t_all, 1),
            "job_statuses": dict(statuses),
            "documents_fetched": documents_fetched,
            "documents_in_simulator": sum(expected.values()),
            "rows_visible": sum(rows_seen.get(k, 0) for k in expected),
            "users_with_all_rows": len(rows_done_at),
            "row_count_mismatches": dict(list(missing.items())[:20]),
            "normalizer_backlog_at_end": consumer_backlog(),
            "oura": {
                "data_requests": len(data),
                "backfill_list_requests": sum(lists.values()),
                "backfill_list_requests_per_type": dict(lists),
                "type_windows": type_windows,
                "requests_per_type_window": round(sum(lists.values()) / type_windows, 3),
                "webhook_fetches": sum(1 for r in data if "/usercollection/workout/" in r.path),
                "token_requests": sum(1 for r in requests if r.path.startswith("/oauth/")),
                "status_429": sum(1 for r in requests if r.status == 429),
                "other_errors": sum(1 for r in data if r.status >= 400 and r.status != 429),
                "budget": args.budget, "window_s": args.window_s, "simulator_limit": sim_limit,
                "data_requests_by_window": max_in_windows([r.timestamp for r in data],
                                                          args.window_s),
                "budget_table_max_used": budget_table_max,
            },
            "fairness_s_from_first_call": {
                "job_finished": _stats(finished),
                "job_started": _stats(started),
                "job_running_time": _stats(running),
                "all_rows_visible_per_user": _stats(list(rows_done_at.values())),
            },
            "webhooks": {
                "rate_per_s": args.webhook_rate,
                "statuses": dict(webhooks.statuses),
                "baseline_before_fleet": webhooks.report("baseline"),
                "during_fleet": webhooks.report("during_fleet"),
                "during_fleet_by_minute": webhooks.by_minute(t0),
            },
            "cpu_cores": cpu,
            "load_average_1m_every_30s": load_samples,
            "worker_threads": args.worker_threads, "consumers": args.consumers,
        }  # fmt: skip
        print(json.dumps(result, indent=2))
        RESULTS.mkdir(parents=True, exist_ok=True)
        suffix = "-quick" if args.quick else ""
        out = RESULTS / f"fleet-{datetime.now(UTC):%Y%m%dT%H%M%S}{suffix}.json"
        out.write_text(json.dumps(result, indent=2))
        print(f"kept in {out.relative_to(ROOT)}", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("interrupted: stopping the processes", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        if webhooks is not None:
            webhooks.stop(drain_s=0)
        for process in processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in processes.values():
            _signal_group(process, signal.SIGKILL)  # stragglers of the group, if any
            process.wait()
        sim.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # during the set-up: no child process started yet
        code = 130
    except SystemExit as stop:  # children already stopped by main's clean-up
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the simulator's and the DB pools' threads must not hold the exit
