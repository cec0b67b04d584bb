"""Liveness and readiness probes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from core import bus, raw_store

logger = logging.getLogger(__name__)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_postgres() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()  # this ran on a probe thread; do not leak its connection


def _check_jetstream() -> None:
    bus.get_bus().ping(timeout=2)


def _check_s3() -> None:
    raw_store.ping()


CHECKS: dict[str, Callable[[], None]] = {
    "postgres": _check_postgres,
    "jetstream": _check_jetstream,
    "s3": _check_s3,
}


def _run(check: Callable[[], None]) -> str:
    try:
        check()
    except Exception as exc:  # any failure means "down"; the type is enough to act on
        return f"down: {type(exc).__name__}"
    return "ok"


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when Postgres, JetStream and S3 all answer; 503 naming each one that does not."""
    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        futures = {name: pool.submit(_run, check) for name, check in CHECKS.items()}
        results = {name: future.result() for name, future in futures.items()}
    down = sorted(name for name, result in results.items() if result != "ok")
    if down:
        logger.warning("readiness_failed", extra={"down": down})
        return JsonResponse(
            {
                "error": "unavailable",
                "detail": f"not ready: {', '.join(down)} down",
                "checks": results,
            },
            status=503,
        )
    return JsonResponse({"status": "ok", "checks": results})
