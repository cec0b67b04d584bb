"""One Oura request budget per application, shared by every process through Postgres.

Oura allows OURA_APP_RATE_LIMIT requests per OURA_APP_RATE_WINDOW_S (5000 per 300 s by
default), counted over a rolling window (CONTRACT §6). Each request first takes a unit in
Postgres, so webhook fetches, normalizers and backfill workers on any machine draw from the
same count. Units are counted in slots of a tenth of the window, and a request is let through
only while the slots a rolling window can overlap (the current one and the ten before it) hold
fewer than the limit: a fixed window would let a burst at the end of one window and another
at the start of the next through, up to twice the limit in one rolling window (seen in the
fleet bench, bench/README.md). Backfill may use only part of the budget (BACKFILL_SHARE): the
rest is kept for live webhook fetches, which therefore always go first when it is tight.

A 429 from Oura sets `blocked_until` on the window, which pauses every process until the
time Oura named in Retry-After.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from core.metrics import provider_rate_limit_hits

logger = logging.getLogger(__name__)

BACKFILL_SHARE = 0.8
BUCKET = "oura-app"
SLOTS_PER_WINDOW = 10
# Serializes takers (every process) for the length of one check-and-take; a constant key.
_LOCK_KEY = zlib.crc32(b"health.oura_rate_budget")


class Priority(enum.Enum):
    LIVE = "live"  # webhook fetches, token refreshes, connect flow
    BACKFILL = "backfill"


@dataclass(frozen=True)
class BudgetExhausted(Exception):
    retry_at: datetime

    @property
    def retry_after_s(self) -> float:
        return max(0.0, (self.retry_at - datetime.now(UTC)).total_seconds())


def _slot_s() -> float:
    return float(settings.OURA_APP_RATE_WINDOW_S) / SLOTS_PER_WINDOW


def _slot_start(now: datetime) -> datetime:
    slot = _slot_s()
    stamp = now.timestamp()
    return datetime.fromtimestamp(stamp - stamp % slot, UTC)


def _span_start(now: datetime) -> datetime:
    """The oldest slot that shares a rolling window with a request sent now."""
    return _slot_start(now) - timedelta(seconds=_slot_s() * SLOTS_PER_WINDOW)


def _cap(priority: Priority) -> int:
    limit: int = settings.OURA_APP_RATE_LIMIT
    return limit if priority is Priority.LIVE else max(1, int(limit * BACKFILL_SHARE))


_BLOCK_ROW_START = datetime(1970, 1, 1, tzinfo=UTC)  # the one row that carries a 429 pause


def try_acquire(
    priority: Priority = Priority.LIVE, *, units: int = 1, now: datetime | None = None
) -> None:
    """Take `units` requests from the rolling window (all or none), or raise BudgetExhausted
    with when to retry."""
    now = now or datetime.now(UTC)
    start = _slot_start(now)
    with transaction.atomic(), connection.cursor() as cursor:
        # The sum covers several rows, so takers queue on one lock (held for these two short
        # statements; its own statement, so the sum's snapshot sees every earlier taker).
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        # Nothing is taken while a 429 pause holds.
        cursor.execute(
            """
            INSERT INTO health.oura_rate_limit_windows (bucket, window_start, used)
            SELECT %(bucket)s, %(start)s, %(units)s
              FROM (SELECT COALESCE(SUM(used), 0) AS used
                      FROM health.oura_rate_limit_windows
                     WHERE bucket = %(bucket)s AND window_start >= %(span)s) AS recent
             WHERE NOT EXISTS (
                   SELECT 1 FROM health.oura_rate_limit_windows
                    WHERE bucket = %(bucket)s AND window_start = %(block)s
                      AND blocked_until > %(now)s)
               AND recent.used + %(units)s <= %(cap)s
            ON CONFLICT (bucket, window_start) DO UPDATE
               SET used = health.oura_rate_limit_windows.used + %(units)s
            RETURNING used
            """,
            {"bucket": BUCKET, "start": start, "span": _span_start(now),
             "block": _BLOCK_ROW_START, "now": now, "cap": _cap(priority), "units": units},
        )  # fmt: skip
        if cursor.fetchone() is not None:
            return
        cursor.execute(
            "SELECT blocked_until FROM health.oura_rate_limit_windows "
            "WHERE bucket = %s AND window_start = %s",
            [BUCKET, _BLOCK_ROW_START],
        )
        row = cursor.fetchone()
    blocked_until = row[0] if row else None
    # The oldest slot leaves the rolling window when the next slot starts.
    next_slot = start + timedelta(seconds=_slot_s())
    retry_at = blocked_until if blocked_until and blocked_until > now else next_slot
    raise BudgetExhausted(retry_at=retry_at)


class Prepaid:
    """Units already taken from the budget, in one statement, for requests about to be sent.

    The normalizer fetches a batch's documents in parallel: taking their units together costs
    one round trip and one commit on the window's row instead of one per request (that row is
    every process's hot spot). The units are taken just before the requests go out, and
    stand for first attempts only; a 429 cancels what is left (the client calls `cancel`), so
    the rest of the batch then waits out the pause like everyone else. A 429 seen by another
    process stops this one only once its batch's units are used: at most one batch of
    requests, sent within the batch's fetch.
    """

    def __init__(self, units: int) -> None:
        self._units = units
        self._lock = threading.Lock()

    @classmethod
    def take(cls, units: int, priority: Priority = Priority.LIVE) -> Prepaid:
        """Units for `units` requests, or none (each request then takes its own) when the
        window cannot give them all now."""
        if units <= 0:
            return cls(0)
        try:
            try_acquire(priority, units=units)
        except BudgetExhausted:
            return cls(0)
        return cls(units)

    def cancel(self) -> None:
        """Oura said 429: what is left is not used, so every request asks Postgres, which
        knows of the pause."""
        with self._lock:
            self._units = 0

    def use(self) -> bool:
        with self._lock:
            if self._units <= 0:
                return False
            self._units -= 1
            return True

    @property
    def remaining(self) -> int:
        return self._units


def acquire(
    priority: Priority = Priority.LIVE,
    *,
    max_wait_s: float = 0.0,
    sleep: bool = True,
    prepaid: Prepaid | None = None,
) -> None:
    """Take one request, waiting up to `max_wait_s` for the budget; else BudgetExhausted.

    A unit of `prepaid`, while it has one, is used instead of asking Postgres."""
    if prepaid is not None and prepaid.use():
        return
    deadline = time.monotonic() + max_wait_s
    while True:
        try:
            try_acquire(priority)
            return
        except BudgetExhausted as exhausted:
            provider_rate_limit_hits.labels(provider="oura", source="local_budget").inc()
            wait = exhausted.retry_after_s
            if not sleep or time.monotonic() + wait > deadline:
                raise
            logger.info("oura_budget_wait", extra={"wait_s": round(wait, 3)})
            time.sleep(max(wait, 0.01))


def block_until(until: datetime) -> None:
    """Oura said 429: stop every process from calling until `until`."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO health.oura_rate_limit_windows (bucket, window_start, used, blocked_until)
            VALUES (%s, %s, 0, %s)
            ON CONFLICT (bucket, window_start) DO UPDATE
               SET blocked_until = GREATEST(health.oura_rate_limit_windows.blocked_until,
                                            EXCLUDED.blocked_until)
            """,
            [BUCKET, _BLOCK_ROW_START, until],
        )


def used_in_current_window(now: datetime | None = None) -> int:
    """Units taken in the rolling window a request sent now would count against."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(SUM(used), 0) FROM health.oura_rate_limit_windows "
            "WHERE bucket = %s AND window_start >= %s",
            [BUCKET, _span_start(now or datetime.now(UTC))],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def purge_old_slots(now: datetime | None = None) -> int:
    """Delete slots no rolling window can reach any more (the 429 pause row stays)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM health.oura_rate_limit_windows "
            "WHERE bucket = %s AND window_start < %s AND window_start <> %s",
            [BUCKET, _span_start(now or datetime.now(UTC)), _BLOCK_ROW_START],
        )
        return int(cursor.rowcount)


def remaining_in_current_window(now: datetime | None = None) -> dict[Priority, int]:
    """Requests each priority may take now in the rolling window; 0 for all while a 429
    pause holds."""
    now = now or datetime.now(UTC)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT COALESCE(SUM(used) FILTER (WHERE window_start >= %(span)s), 0),
                   MAX(blocked_until) FILTER (WHERE window_start = %(block)s)
              FROM health.oura_rate_limit_windows
             WHERE bucket = %(bucket)s
               AND (window_start >= %(span)s OR window_start = %(block)s)
            """,
            {"bucket": BUCKET, "span": _span_start(now), "block": _BLOCK_ROW_START},
        )
        used, blocked_until = cursor.fetchone() or (0, None)
    if blocked_until is not None and blocked_until > now:
        return dict.fromkeys(Priority, 0)
    return {priority: max(0, _cap(priority) - int(used)) for priority in Priority}
