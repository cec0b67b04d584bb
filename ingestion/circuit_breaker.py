"""A circuit breaker per Oura endpoint class, shared by every process through Postgres.

During an Oura outage every webhook message, backfill page and token refresh would otherwise
try Oura OURA_MAX_RETRIES times and come back to try again. The breaker of an endpoint class
(`breaker_for`) counts consecutive failures (5xx, timeouts, connection errors; never a 4xx or
a 429, which prove Oura is answering) and, after OURA_BREAKER_FAILURES of them, opens:

    closed ──N failures──▶ open ──opened_until passes──▶ (probe eligible)
       ▲                     ▲                                │ one caller takes the lease
       │                     └──────── probe fails ◀── half_open
       └──────────── any success ◀────────────────────────────┘

- open: `admit` refuses at once with `CircuitOpen(retry_after_s)`; Oura is not called.
- once `opened_until` has passed, the first caller to win one conditional UPDATE holds the
  probe lease (state half_open) and calls Oura; the others wait for its verdict (up to the
  lease) and then go ahead (closed) or are refused (open again).
- a failed probe opens it again for twice as long (OURA_BREAKER_OPEN_S * 2**open_streak, at
  most OURA_BREAKER_MAX_OPEN_S); any success closes it and resets both counters.
- a probe whose process died frees its lease when `probe_lease_until` passes.

Every transition is one statement, or one row-locked transaction, so processes on any
machine agree. Times are Postgres's clock (`now()`), never the caller's. The consumer runner
asks `normalizer_pause` before each fetch, so an open breaker stops the fetching instead of
burning deliveries (docs/phase-3/consumers.md, "Oura outages").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction

from ingestion.models import CircuitBreaker

logger = logging.getLogger(__name__)

State = CircuitBreaker.State

USERCOLLECTION = "usercollection"  # every per-user data route, personal_info included
OAUTH = "oauth"  # token exchange, refresh and revoke
WEBHOOK_SUBSCRIPTION = "webhook_subscription"
ENDPOINT_CLASSES = (USERCOLLECTION, OAUTH, WEBHOOK_SUBSCRIPTION)

# The client's endpoint labels (oura_request_duration_seconds) that are not data routes.
_CLASS_OF_LABEL = {
    "oauth_token": OAUTH,
    "oauth_revoke": OAUTH,
    "webhook_subscription": WEBHOOK_SUBSCRIPTION,
}

# The metric's values (oura_circuit_state).
STATE_VALUE: dict[str, int] = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}

_POLL_S = 0.1  # how often a caller waiting for another's probe looks at the row
_TABLE = CircuitBreaker._meta.db_table.replace('"."', ".")  # health.oura_circuit_breakers


def breaker_for(endpoint: str) -> str:
    """The breaker of a client endpoint label: coarse, so one outage opens one breaker."""
    return _CLASS_OF_LABEL.get(endpoint, USERCOLLECTION)


class CircuitOpen(Exception):
    """The breaker refuses calls for `retry_after_s` more seconds; Oura was not called."""

    def __init__(self, endpoint: str, retry_after_s: float) -> None:
        super().__init__(f"Oura circuit {endpoint} open: retry after {retry_after_s:.1f}s")
        self.endpoint = endpoint
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Permit:
    """Leave to call Oura once; `probe` when this caller holds the half-open lease."""

    endpoint: str
    probe: bool = False


@dataclass(frozen=True)
class Snapshot:
    state: str  # closed, open (still refusing), half_open (probe eligible or probing)
    consecutive_failures: int
    retry_after_s: float  # 0 when a caller may go (closed, or probe eligible)


def _seconds(value: Decimal | float | None) -> float:
    """An EXTRACT(EPOCH ...) from Postgres (a Decimal, NULL when the time is unset)."""
    return max(0.0, float(value)) if value is not None else 0.0


def read(endpoint: str) -> Snapshot:
    """The breaker as callers see it now: open until opened_until, then half_open."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT state, consecutive_failures,
                   EXTRACT(EPOCH FROM opened_until - now()),
                   EXTRACT(EPOCH FROM probe_lease_until - now())
              FROM {_TABLE} WHERE endpoint = %s
            """,  # noqa: S608 - the table name is ours, values are parameters
            [endpoint],
        )
        row = cursor.fetchone()
    if row is None or row[0] == State.CLOSED:
        return Snapshot(State.CLOSED, row[1] if row else 0, 0.0)
    state, failures, opened_left, lease_left = row
    if state == State.OPEN and _seconds(opened_left) > 0:
        return Snapshot(State.OPEN, failures, _seconds(opened_left))
    if state == State.HALF_OPEN:
        return Snapshot(State.HALF_OPEN, failures, _seconds(lease_left))
    return Snapshot(State.HALF_OPEN, failures, 0.0)  # open, and its time is up: probe eligible


def _take_probe_lease(endpoint: str, lease_s: float) -> bool:
    """One conditional UPDATE: exactly one of any number of racing callers gets True."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {_TABLE}
               SET state = 'half_open', probe_lease_until = now() + make_interval(secs => %s),
                   updated_at = now()
             WHERE endpoint = %s
               AND ((state = 'open' AND opened_until <= now())
                    OR (state = 'half_open' AND probe_lease_until <= now()))
            """,  # noqa: S608 - the table name is ours, values are parameters
            [lease_s, endpoint],
        )
        won = bool(cursor.rowcount == 1)
    if won:
        logger.info("oura_circuit_probe", extra={"endpoint": endpoint})
    return won


def admit(endpoint: str, *, lease_s: float, wait_for_probe_s: float = 0.0) -> Permit:
    """Leave to call Oura, or `CircuitOpen` without calling it.

    Closed: a plain permit. Probe eligible: the caller that wins the lease (for `lease_s`,
    longer than its request can take) gets a probe permit; the others, like callers arriving
    while a probe runs, wait up to `wait_for_probe_s` for its verdict.
    """
    deadline = time.monotonic() + wait_for_probe_s
    while True:
        snapshot = read(endpoint)
        if snapshot.state == State.CLOSED:
            return Permit(endpoint)
        if snapshot.state == State.OPEN:
            raise CircuitOpen(endpoint, snapshot.retry_after_s)
        if snapshot.retry_after_s == 0 and _take_probe_lease(endpoint, lease_s):
            return Permit(endpoint, probe=True)
        if time.monotonic() >= deadline:
            raise CircuitOpen(endpoint, max(snapshot.retry_after_s, _POLL_S))
        time.sleep(_POLL_S)


def record_success(permit: Permit) -> None:
    """Oura answered (anything but a 5xx): close the breaker if it was not closed."""
    with connection.cursor() as cursor:
        # The common case (closed, no failures) matches no row and writes nothing.
        cursor.execute(
            f"""
            UPDATE {_TABLE}
               SET state = 'closed', consecutive_failures = 0, open_streak = 0,
                   opened_until = NULL, probe_lease_until = NULL, updated_at = now()
             WHERE endpoint = %s AND (state <> 'closed' OR consecutive_failures > 0)
            RETURNING open_streak
            """,  # noqa: S608 - the table name is ours, values are parameters
            [permit.endpoint],
        )
        closed = cursor.fetchone() is not None
    if closed and permit.probe:
        logger.warning("oura_circuit_closed", extra={"endpoint": permit.endpoint})


def record_failure(permit: Permit) -> float:
    """A 5xx, timeout or connection error. Returns how long the breaker now stays open
    (0 while it is still closed)."""
    threshold: int = settings.OURA_BREAKER_FAILURES
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_TABLE} (endpoint, state, consecutive_failures, open_streak, "  # noqa: S608 - ours
            "updated_at) VALUES (%s, 'closed', 0, 0, now()) ON CONFLICT (endpoint) DO NOTHING",
            [permit.endpoint],
        )
        cursor.execute(
            f"SELECT state, consecutive_failures, open_streak, "  # noqa: S608 - ours
            f"EXTRACT(EPOCH FROM opened_until - now()) FROM {_TABLE} "
            "WHERE endpoint = %s FOR UPDATE",
            [permit.endpoint],
        )
        state, failures, streak, opened_left = cursor.fetchone()
        failures += 1
        # A failure in half_open (the probe, or a call that started before) reopens it.
        trips = state == State.HALF_OPEN or (state == State.CLOSED and failures >= threshold)
        if not trips:
            cursor.execute(
                f"UPDATE {_TABLE} SET consecutive_failures = %s, updated_at = now() "  # noqa: S608 - ours
                "WHERE endpoint = %s",
                [failures, permit.endpoint],
            )
            return _seconds(opened_left) if state == State.OPEN else 0.0
        open_s: float = min(
            float(settings.OURA_BREAKER_MAX_OPEN_S),
            float(settings.OURA_BREAKER_OPEN_S) * 2**streak,
        )
        cursor.execute(
            f"""
            UPDATE {_TABLE}
               SET state = 'open', consecutive_failures = %s, open_streak = open_streak + 1,
                   opened_until = now() + make_interval(secs => %s),
                   probe_lease_until = NULL, updated_at = now()
             WHERE endpoint = %s
            """,  # noqa: S608 - the table name is ours, values are parameters
            [failures, open_s, permit.endpoint],
        )
    logger.warning(
        "oura_circuit_opened",
        extra={"endpoint": permit.endpoint, "open_s": open_s, "failures": failures,
               "after_probe": state == State.HALF_OPEN},
    )  # fmt: skip
    return open_s


def reset_all() -> int:
    """Close every breaker (an Oura that has just been started fresh: `make run`'s own
    simulator). What a previous run saw of a server that is gone says nothing about this one:
    its last calls failed because it was being stopped, and an open breaker would refuse
    the new run's first calls. Returns how many breakers there are."""
    return CircuitBreaker.objects.update(
        state=CircuitBreaker.State.CLOSED,
        consecutive_failures=0,
        open_streak=0,
        opened_until=None,
        probe_lease_until=None,
    )


def states() -> dict[str, Snapshot]:
    """Every endpoint class's breaker (closed when it has no row yet), for the metric."""
    return {endpoint: read(endpoint) for endpoint in ENDPOINT_CLASSES}


def normalizer_pause() -> float:
    """The normalizer's `ConsumerSpec.pause`: seconds to wait before fetching, 0 to fetch.

    Waits while the data routes' breaker is open or another process's probe is running;
    fetches once a probe is due (someone has to make it) or when it is closed.
    """
    snapshot = read(USERCOLLECTION)
    return 0.0 if snapshot.state == State.CLOSED else snapshot.retry_after_s
