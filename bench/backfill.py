"""Backfill benchmark. Not a test: it prints figures and asserts nothing about them.

Time to backfill N years (default 5) of every default type for one user, from the API call
(POST /v1/health/oura/sync through the DRF stack, in-process) until the job has succeeded
and the normalizer has acked every page (rows visible in Postgres). Oura is the in-process
simulator with Oura's default limit (5000 requests / 300 s per app and per token); the
worker (`manage.py run_worker`) and the normalizer (`manage.py run_consumer normalizer`)
are separate processes. Needs provisioned services (bench/README.md, "Backfill").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import stop_processes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")
    os.environ.setdefault("HEALTH_ENV", "development")  # unset would mean production
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    from devstack import ensure_running

    # A bench is a command that runs the system: it starts what is not pointed elsewhere.
    ensure_running(only_missing_from=dict(os.environ))
    import django

    django.setup()


def consumer_backlog() -> int:
    from core import bus

    async def read() -> int:
        nc = await bus.connect(name="bench-backfill")
        try:
            info = await nc.jetstream().consumer_info("HEALTH_RAW", "normalizer")
            return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        except Exception:
            return -1
        finally:
            await nc.close()

    return asyncio.run(read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="worker threads")
    args = parser.parse_args()
    setup_django()

    from django.conf import settings
    from django.utils import timezone
    from rest_framework.test import APIClient

    from access.services import api_key_create
    from ingestion import crypto
    from ingestion.data_types import BACKFILL_TYPES
    from ingestion.models import OuraConnection
    from jobs.models import IngestionJob
    from oura_simulator import OuraSimulator
    from oura_simulator.config import SimulatorConfig

    days = args.years * 365 + args.years // 4
    config = SimulatorConfig(client_id=settings.OURA_CLIENT_ID,
                             client_secret=settings.OURA_CLIENT_SECRET)  # fmt: skip
    config.seed = int(time.time())  # sim ids are per seed; a rerun needs new Oura users
    config.rate_limit_per_token = 5000
    config.rate_limit_per_app = 5000
    config.rate_limit_window_s = 300
    sim = OuraSimulator(config)
    base = sim.start()
    user_id = f"bench-{int(time.time())}"
    sim_user = sim.add_user(history_days=days + 5)
    tokens = sim.issue_tokens(sim_user.oura_user_id)
    OuraConnection.objects.create(
        user_id=user_id, provider_user_id=sim_user.oura_user_id,
        scopes=[s.removeprefix("extapi:") for s in str(tokens["scope"]).split()],
        access_token_enc=crypto.encrypt(tokens["access_token"]),
        refresh_token_enc=crypto.encrypt(tokens["refresh_token"]),
        access_token_expires_at=timezone.now() + timedelta(seconds=int(tokens["expires_in"])),
    )  # fmt: skip
    key = api_key_create(name="bench-backfill", scopes=["health:sync"], all_users=True).secret
    env = {
        **os.environ, "OURA_API_BASE_URL": base, "OURA_TOKEN_URL": f"{base}/oauth/token",
        "OURA_AUTHORIZE_URL": f"{base}/oauth/authorize", "OURA_REVOKE_URL": f"{base}/oauth/revoke",
        "OURA_APP_RATE_LIMIT": "5000", "OURA_APP_RATE_WINDOW_S": "300", "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    manage = [sys.executable, str(ROOT / "manage.py")]
    worker = subprocess.Popen([*manage, "run_worker", "--threads", str(args.threads)], env=env,
                              stdout=subprocess.DEVNULL)  # fmt: skip
    normalizer = subprocess.Popen([*manage, "run_consumer", "normalizer"], env=env,
                                  stdout=subprocess.DEVNULL)  # fmt: skip
    time.sleep(4)  # both processes up (Django start-up is not what we measure)
    try:
        today = timezone.now().date()
        start = today - timedelta(days=days - 1)
        sim.reset_requests()
        t0 = time.monotonic()
        response = APIClient().post(
            "/v1/health/oura/sync",
            {"userId": user_id, "range": {"start": start.isoformat(), "end": today.isoformat()}},
            format="json", HTTP_AUTHORIZATION=f"Bearer {key}", SERVER_NAME="localhost",
        )  # fmt: skip
        assert response.status_code == 202, response.content
        job_id = response.json()["jobId"]
        t_api = time.monotonic() - t0
        t_job = None
        while time.monotonic() - t0 < 900:
            job = IngestionJob.objects.get(job_id=job_id)
            if job.status in ("failed", "cancelled"):
                raise SystemExit(f"job {job.status}: {job.last_error}")
            if job.status == "succeeded" and t_job is None:
                t_job = time.monotonic() - t0
            if t_job is not None and consumer_backlog() == 0:
                break
            time.sleep(0.2)
        t_rows = time.monotonic() - t0
        job = IngestionJob.objects.get(job_id=job_id)
        data_requests = sum(1 for r in sim.requests if "/usercollection/" in r.path)
        windows_x_types = sum(-(-days // BACKFILL_TYPES[t].window_days) for t in job.data_types)
        from normalized import models as nm

        rows = {
            name: model.objects.filter(user_id=user_id).count()
            for name, model in (
                ("daily_readiness", nm.DailyReadiness), ("daily_sleep", nm.DailySleep),
                ("daily_activity", nm.DailyActivity), ("sleep_periods", nm.SleepPeriod),
                ("activities", nm.Activity),
            )
        }  # fmt: skip
        result: dict[str, Any] = {
            "years": args.years, "days": days, "types": len(job.data_types),
            "worker_threads": args.threads,
            "api_call_s": round(t_api, 3), "job_succeeded_s": round(t_job or -1, 2),
            "rows_visible_s": round(t_rows, 2), "oura_data_requests": data_requests,
            "windows_x_types": windows_x_types, "documents": sum(job.counts.values()),
            "pages": sum(1 for _ in job.counts), "counts": job.counts, "rows": rows,
        }  # fmt: skip
        from ingestion.models import RawEvent

        result["pages"] = RawEvent.objects.filter(user_id=user_id, kind="page").count()
        print(json.dumps(result, indent=2))
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"backfill-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    finally:
        stop_processes(worker, normalizer, timeout=30)
        sim.stop()


if __name__ == "__main__":
    main()
