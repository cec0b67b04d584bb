"""How cheap could the webhook be off WSGI? A floor for issue #19, not a product.

    python -m bench.async_floor [--rounds 2] [--seconds 15]   (services as bench/webhooks.py)

Issue #19 asks for four times the peer's accepted/s; the note of the fourth session said that
would take one event loop from the socket to the publish (ASGI, async psycopg, nats-py). This
measures what such a path costs at best before anyone builds it: an ASGI app on granian
(`--interface asgi`, the same workers as `make run`) that does what a 202 needs and nothing
else:

- the same verification and envelope as the real view (`webhook_verify`,
  `webhook_record_request`: signature, body, dedupe key, envelope head);
- group commit on the event loop: whatever queued while the last batch was written goes in
  ONE execution of the real statement (`webhook_commit._RECORD_SQL`: owner and tombstone
  lookups, raw event, audit entry with its chain trigger) on an async psycopg connection;
- each stored event published to JetStream with its Nats-Msg-Id, all of a batch's acks
  awaited together, before the requests are answered.

Left out, and so NOT paid here (the real path pays them): Django's handler and the lean
middleware (request id, security headers, error shape, response metrics), the SERVER and
PRODUCER spans, the access log line, the metrics, the rate limit and body-size checks,
duplicate/erased/503 answers. So its CPU per webhook is a lower bound for any async design
that keeps what a 202 promises.

Each round runs three servers one after the other, the relay archiving during the load in
all: the real path (`bench.webhooks.measure`), the floor, and the floor with the real path's
per-request observability added (`BENCH_FLOOR_OBSERVE=1`: request id and its context
variables, the SERVER span, the access line with the delivery's ids, the response and
accepted counters, the batch span, a PRODUCER span per message and the person's baggage,
all by the project's own functions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import service_pids, stop_processes
from bench.webhooks import (
    _free_port,
    _wait_http,
    measure,
    prepare_server_env,
    run_load,
    signed_deliveries,
    start_relay,
    wait_drained,
)
from health_project.serving import BACKGROUND_NICE, WEB_WORKERS

ROOT = Path(__file__).resolve().parent.parent

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Committer:
    """One per worker process, on its event loop: batches, one statement, acks awaited."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future[bytes], Any]] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import nats
        import psycopg

        from core import tracing
        from core.metrics import webhook_commit_batch_size
        from ingestion.webhook_commit import _RECORD_SQL, record_params
        from ingestion.webhook_services import PROVIDER, WEBHOOK_SUBJECT

        db = await psycopg.AsyncConnection.connect(os.environ["DATABASE_URL"], autocommit=True)
        nc = await nats.connect(os.environ["NATS_URL"])
        js = nc.jetstream()
        self.ready.set()
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < 64:
                batch.append(self.queue.get_nowait())
            requests = [request for request, _, _ in batch]
            params = record_params(requests, provider=PROVIDER, subject=WEBHOOK_SUBJECT)
            if OBSERVE:
                webhook_commit_batch_size.observe(len(requests))
            with (
                tracing.batch_span("webhook group commit", [c for _, _, c in batch])
                if OBSERVE
                else contextlib.nullcontext()
            ):
                async with db.cursor() as cursor:
                    await cursor.execute(_RECORD_SQL, params, prepare=True)
                    rows = await cursor.fetchall()
            acks, spans = [], []
            for (request, _, context), row in zip(batch, rows, strict=True):
                headers = {"Nats-Msg-Id": str(request.event_id)}
                if OBSERVE:
                    span, carrier = tracing.start_producer_span(
                        subject=row[3], msg_id=str(request.event_id), parent=context
                    )
                    spans.append(span)
                    headers |= carrier
                acks.append(js.publish(row[3], bytes(row[2]), headers=headers))
            await asyncio.gather(*acks)
            for span in spans:
                tracing.end_with(span, None)
            for (request, future, _), _row in zip(batch, rows, strict=True):
                future.set_result(json.dumps({"eventId": str(request.event_id)}).encode())


_committer: _Committer | None = None
# BENCH_FLOOR_OBSERVE=1 (measure_floor(observe=True) sets it for the server): also pay what
# the real path's lean chain and services do per request for observability (_observed, _accept).
OBSERVE = os.environ.get("BENCH_FLOOR_OBSERVE") == "1"
# BENCH_FLOOR_THREADED=1: hand each delivery to the real path's GroupCommitter (its thread,
# Django's connection, the bus's loop thread) instead of committing on the server's loop.
THREADED = os.environ.get("BENCH_FLOOR_THREADED") == "1"
access_logger = logging.getLogger("core.request_id")
annotate_access_log: Any = None
webhook_accepted_total: Any = None


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app granian serves: POST only, every delivery assumed valid and new."""
    global _committer
    if scope["type"] == "lifespan":
        while True:
            event = (await receive())["type"]
            await send({"type": f"{event}.complete"})
            if event == "lifespan.shutdown":
                return
    if scope["method"] != "POST":  # the bench's readiness probe (GET /healthz)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    _setup()  # once per process: Django's settings, models and services
    if _committer is None:
        _committer = _Committer()
    await _committer.ready.wait()  # also when THREADED: one measure of start-up for both
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    if OBSERVE:
        answer, extra = await _observed(_committer, body, headers)
    else:
        answer, extra = await _accept(_committer, body, headers), []
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(answer)).encode()), *extra]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


async def _accept(committer: _Committer, body: bytes, headers: dict[str, str]) -> bytes:
    from django.utils import timezone
    from opentelemetry import context as otel_context

    from core import tracing
    from ingestion.webhook_services import webhook_record_request, webhook_verify

    delivery = webhook_verify(body=body, headers=headers)
    request = webhook_record_request(delivery=delivery, received_at=timezone.now())
    if THREADED:
        from ingestion.webhook_commit import group_committer
        from ingestion.webhook_services import PROVIDER, WEBHOOK_SUBJECT

        with tracing.person_in_baggage(request.person_ref):
            done = group_committer(provider=PROVIDER, subject=WEBHOOK_SUBJECT).submit(request)
        await asyncio.wrap_future(done)
        answer = json.dumps({"eventId": str(request.event_id)}).encode()
    else:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        with tracing.person_in_baggage(request.person_ref) if OBSERVE else contextlib.nullcontext():
            committer.queue.put_nowait((request, future, otel_context.get_current()))
        answer = await future
    if OBSERVE:
        annotate_access_log(
            event_id=str(request.event_id), data_type=request.data_type, event_status="accepted"
        )
        webhook_accepted_total.labels(provider="oura").inc()
    return answer


async def _observed(
    committer: _Committer, body: bytes, headers: dict[str, str]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """What the lean chain adds per request: request id, SERVER span, access line, metric."""
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    from core import tracing
    from core.metrics import http_responses_total
    from core.observability import access_log_fields_var, redact, request_id_var
    from core.request_id import accepted_request_id

    request_id = accepted_request_id(headers.get("x-request-id"))
    token = request_id_var.set(request_id)
    fields: dict[str, object] = {}
    fields_token = access_log_fields_var.set(fields)
    started = time.perf_counter()
    try:
        with tracing.tracer().start_as_current_span(
            "POST",
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.method": "POST", "http.scheme": "http"},
        ) as span:
            answer = await _accept(committer, body, headers)
            span.update_name("POST v1/webhooks/oura")
            span.set_attribute("http.route", "v1/webhooks/oura")
            span.set_attribute("http.status_code", 202)
        http_responses_total.labels(route="oura-webhook", status_class="2xx").inc()
        access_logger.info(
            "http_request",
            extra={"method": "POST", "path": redact("/v1/webhooks/oura"), "status": 202,
                   "duration_ms": round((time.perf_counter() - started) * 1000, 1), **fields},
        )  # fmt: skip
        return answer, [(b"x-request-id", request_id.encode()),
                        (b"x-content-type-options", b"nosniff")]  # fmt: skip
    finally:
        request_id_var.reset(token)
        access_log_fields_var.reset(fields_token)


def _setup() -> None:
    global annotate_access_log, webhook_accepted_total
    from django.apps import apps

    if apps.ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")
    os.environ.setdefault("HEALTH_ENV", "development")
    import django

    django.setup()
    from core.metrics import process_started
    from core.metrics import webhook_accepted_total as accepted
    from core.observability import annotate_access_log as annotate

    annotate_access_log, webhook_accepted_total = annotate, accepted
    if OBSERVE:
        process_started("web")


def measure_floor(
    env: dict[str, str],
    *,
    seconds: float,
    devstack_root: Path | None,
    observe: bool = False,
    threaded: bool = False,
) -> Any:
    from django.conf import settings

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "bench.async_floor:app",
         "--workers", str(WEB_WORKERS), "--host", "127.0.0.1", "--port", str(port),
         "--no-log", "--http", "1"],
        cwd=ROOT, env=env | {"BENCH_FLOOR_OBSERVE": "1" if observe else "",
                   "BENCH_FLOOR_THREADED": "1" if threaded else ""},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    relay = None
    try:
        _wait_http(port)
        secret = settings.OURA_CLIENT_SECRET
        run_load(port, signed_deliveries(1000, secret), 16, 5)  # warm every worker
        relay = start_relay(env, workers=4, nice=BACKGROUND_NICE)
        wait_drained(120)
        services = service_pids(devstack_root) | {"relay": [relay.pid]}
        result = run_load(
            port, signed_deliveries(int(seconds * 2500), secret), 16, seconds, [server.pid],
            services,
        )  # fmt: skip
        wait_drained(120)
        return result
    finally:
        stop_processes(relay, server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.async_floor")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--devstack-root", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    env = prepare_server_env()
    keys = ("accepted_per_s", "p50_ms", "p99_ms", "server_cpu_cores",
            "server_cpu_ms_per_request", "postgres_cpu_cores", "nats_cpu_cores",
            "s3_cpu_cores", "relay_cpu_cores", "client_cpu_cores")  # fmt: skip
    runs = []
    for round_ in range(args.rounds):
        real = measure(env, seconds=args.seconds, devstack_root=args.devstack_root, trivial=False,
                       drain_limit_s=120)["webhook"]  # fmt: skip
        paths = [("real", real)]
        for observe, threaded in ((False, False), (True, False), (True, True)):
            floor = measure_floor(env, seconds=args.seconds, devstack_root=args.devstack_root,
                                  observe=observe, threaded=threaded)  # fmt: skip
            name = "async floor" + (" + observability" if observe else "")
            paths.append((name + (", threaded committer" if threaded else ""), floor))
        for name, result in paths:
            line = {"round": round_ + 1, "path": name, **{k: result.get(k) for k in keys}}
            print(json.dumps(line), flush=True)
            runs.append(line)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"async-floor-{uuid.uuid4().hex[:8]}.json").write_text(json.dumps(runs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
