"""``python manage.py oura_simulator --port 8787``: run the simulator as its own process."""

from __future__ import annotations

import os
import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from oura_simulator.app import OuraSimulator
from oura_simulator.config import SimulatorConfig


class Command(BaseCommand):
    help = "Run the Oura Cloud API simulator (OAuth, REST v2, sandbox, webhooks)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8787)
        parser.add_argument("--history-days", type=int, default=None)
        parser.add_argument("--error-rate", type=float, default=0.0)
        parser.add_argument("--latency-ms", type=int, default=0)
        parser.add_argument("--timeout-rate", type=float, default=0.0)
        parser.add_argument("--rate-limit", type=int, default=None, help="per access token")
        parser.add_argument("--rate-limit-app", type=int, default=None, help="per application")
        parser.add_argument("--rate-limit-window", type=float, default=None)
        parser.add_argument("--expires-in", type=int, default=None, help="access token TTL (s)")
        parser.add_argument("--webhook-delay", type=float, default=0.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--seed-users", type=int, default=1)
        parser.add_argument(
            "--redirect-uri", action="append", default=[], help="registered; repeatable"
        )
        parser.add_argument("--access-log", action="store_true")
        parser.add_argument("--exit-after", type=float, default=None, help=argparse_hidden())

    def handle(self, *args: Any, **opts: Any) -> None:
        cfg = SimulatorConfig(
            client_id=os.environ.get("OURA_CLIENT_ID", "sim-client-id"),
            client_secret=os.environ.get("OURA_CLIENT_SECRET", "sim-client-secret"),
            redirect_uris=list(opts["redirect_uri"]),
            seed=opts["seed"],
            error_rate=opts["error_rate"],
            latency_ms=opts["latency_ms"],
            timeout_rate=opts["timeout_rate"],
            webhook_delay_s=opts["webhook_delay"],
        )
        if opts["history_days"] is not None:
            cfg.history_days = opts["history_days"]
        if opts["rate_limit"] is not None:
            cfg.rate_limit_per_token = opts["rate_limit"]
        if opts["rate_limit_app"] is not None:
            cfg.rate_limit_per_app = opts["rate_limit_app"]
        if opts["rate_limit_window"] is not None:
            cfg.rate_limit_window_s = opts["rate_limit_window"]
        if opts["expires_in"] is not None:
            cfg.access_token_ttl_s = opts["expires_in"]
        sim = OuraSimulator(cfg)
        for _ in range(opts["seed_users"]):
            sim.add_user()
        base = sim.start(opts["host"], opts["port"], access_log=opts["access_log"])
        self.stdout.write(f"Oura simulator listening on {base} (client_id={cfg.client_id})")
        for user in sim.users:
            self.stdout.write(f"  user {user.oura_user_id} <{user.email}>")
        self.stdout.flush()
        try:
            if opts["exit_after"] is not None:
                time.sleep(opts["exit_after"])
            else:
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            sim.stop()


def argparse_hidden() -> str:
    # Used by the smoke test so the command can be exercised without killing it.
    return "stop after N seconds (for smoke tests)"
