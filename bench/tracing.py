"""What tracing costs on the webhook path: accepted/s with tracing off and on, interleaved.

Not a test. Same set-up as bench/webhooks.py (bench/README.md), in one run:

    python -m bench.tracing [--rounds 3] [--seconds 15]

Each round starts the bench server (granian as `make run` serves it,
`bench.webhooks:application`) and the relay (niced as `make run` does) once per mode, and
drives signed unique deliveries at concurrency 16:

- `disabled`: `OTEL_SDK_DISABLED=true`: no provider and no instrumentation at all (what the
  instrumentation costs even when nothing is recorded);
- `off`: no exporter (`make run`'s default): spans are not recorded, trace ids still exist for
  log lines and message headers;
- `on`: `OTEL_EXPORTER_OTLP_ENDPOINT` at a local OTLP/HTTP sink in this process, the default
  sampler (parent-based, 10 %), so sampled requests are recorded, sanitized and exported.

The modes rotate within each round (off, on, disabled; then on, disabled, off; ...), so a
machine that gets slower or faster during the run does not favour one mode. Medians over
rounds are reported with the ratios on/off and off/disabled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import stop_processes
from bench.webhooks import _free_port, _wait_http, prepare_server_env, run_load, signed_deliveries
from health_project.serving import BACKGROUND_NICE, WEB_BLOCKING_THREADS, WEB_WORKERS

ROOT = Path(__file__).resolve().parent.parent
MEASURES = ("accepted_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request")


class _Sink:
    """Accepts OTLP/HTTP exports and counts them; decoding is left out (a collector's work)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(size)
                sink.requests += 1
                sink.bytes += size
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _measure(env: dict[str, str], args: argparse.Namespace, secret: str) -> dict[str, Any]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "bench.webhooks:asgi_application",
         "--workers", str(args.workers), "--host", "127.0.0.1", "--port", str(port),
         "--no-log", "--http", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "run_relay", "--interval", "0.2",
         "--nice", str(BACKGROUND_NICE)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_http(port)
        run_load(port, signed_deliveries(1000, secret), args.concurrency, 5)  # warm-up
        time.sleep(2)  # the relay archives the warm-up before the measured load
        return run_load(
            port,
            signed_deliveries(int(args.seconds * 2500), secret),
            args.concurrency,
            args.seconds,
            [server.pid],
            {"relay": [relay.pid]},
        )
    finally:
        stop_processes(relay, server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=WEB_WORKERS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    tracing_vars = [name for name in os.environ if name.startswith("OTEL_")]
    if tracing_vars:
        raise SystemExit(f"unset {', '.join(tracing_vars)}: this bench sets tracing itself")
    base = prepare_server_env()
    from django.conf import settings

    sink = _Sink()
    modes = {
        "disabled": base | {"OTEL_SDK_DISABLED": "true"},
        "off": base,
        "on": base | {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_SERVICE_NAME": "bench"},
    }
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    names = list(modes)
    for round_no in range(args.rounds):
        shift = round_no % len(names)
        order = names[1 + shift :] + names[: 1 + shift]
        for mode in order:
            result = _measure(modes[mode], args, settings.OURA_CLIENT_SECRET)
            runs[mode].append(result)
            print(f"round {round_no + 1} {mode}: {result['accepted_per_s']}/s "
                  f"P99 {result['p99_ms']} ms", file=sys.stderr)  # fmt: skip

    def median(mode: str, key: str) -> float:
        return round(statistics.median(run[key] for run in runs[mode]), 2)

    summary = {
        "machine": f"{os.cpu_count()} cores",
        "server": f"granian asgi {args.workers}x{WEB_BLOCKING_THREADS}, "
        f"relay nice {BACKGROUND_NICE}",
        "concurrency": args.concurrency,
        "seconds_per_run": args.seconds,
        "sampler": "default: parentbased_traceidratio 0.1 (mode on); none recorded (mode off)",
        "exports_received": {"requests": sink.requests, "bytes": sink.bytes},
        "median": {mode: {key: median(mode, key) for key in MEASURES} for mode in runs},
        "ratio_on_to_off": round(
            median("on", "accepted_per_s") / max(median("off", "accepted_per_s"), 1), 3
        ),
        "ratio_off_to_disabled": round(
            median("off", "accepted_per_s") / max(median("disabled", "accepted_per_s"), 1), 3
        ),
        "runs": runs,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"tracing-{int(time.time())}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
