"""Repacking the indexes the read API scans (issue #19: reads from a cold cache).

A fleet writes one row per person and day into each daily table, so every day's insert lands
in the middle of the (user_id, day) indexes, once per person: their leaf pages split half
and half and stay half full, and one person's year ends up spread over about twice the pages
it needs. The daily page, the sleep list and the activity list read only these indexes
(index-only scans, migration 0006), so on a cold cache a year's read costs a random page
read per leaf page. REINDEX INDEX CONCURRENTLY rebuilds an index packed (leaf pages 90 %
full), without blocking reads or writes: on 10,000 people x a year it roughly halved the
cold daily read (bench/README.md, "Reads from a cold cache"). The days written after a
repack split pages again, so the scheduler repeats it weekly (upkeep task
`read_indexes_repack`).

REINDEX CONCURRENTLY cannot run inside a transaction and needs about the index's size in
free disk while it runs. A run that dies (killed, disk full) leaves an invalid `*_ccnew`
index behind, which Postgres keeps maintaining on every write; the next run drops those
first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django.db import connection

logger = logging.getLogger(__name__)

# Every index a read endpoint scans by person, in schema health: the daily page's read
# model (normalized/daily_entries.py), the eight daily parts and main sleep period its
# entries are written from (and a page too long for it), and the sleep and activity lists.
READ_INDEXES = (
    "oura_daily_entries_pkey",
    "readiness_user_day_read_idx",
    "daily_sleep_user_day_read_idx",
    "daily_act_user_day_read_idx",
    "daily_stress_user_day_uniq",
    "daily_spo2_user_day_uniq",
    "daily_resilience_user_day_uniq",
    "daily_cv_age_user_day_uniq",
    "vo2_max_user_day_uniq",
    "sleep_period_read_idx",
    "activity_start_read_idx",
)


@dataclass
class RepackReport:
    repacked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    leftovers_dropped: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0


def _size(name: str) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(to_regclass(%s))", [f"health.{name}"])
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def read_indexes_repack(*, indexes: tuple[str, ...] = READ_INDEXES) -> RepackReport:
    """Rebuild each of `indexes` packed, one at a time, without blocking reads or writes."""
    if connection.in_atomic_block:
        raise RuntimeError("REINDEX CONCURRENTLY cannot run inside a transaction")
    report = RepackReport()
    with connection.cursor() as cursor:
        # Invalid copies a killed REINDEX CONCURRENTLY left (named <index>_ccnew[N]).
        cursor.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'health' AND NOT i.indisvalid AND c.relname ~ '_ccnew[0-9]*$'"
        )
        leftovers = [name for (name,) in cursor.fetchall()]
        for name in leftovers:
            cursor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS health."{name}"')
            report.leftovers_dropped.append(name)
    for name in indexes:
        before = _size(name)
        if before is None:
            report.missing.append(name)
            continue
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(f'REINDEX INDEX CONCURRENTLY health."{name}"')
        after = _size(name) or 0
        report.repacked.append(name)
        report.bytes_before += before
        report.bytes_after += after
        logger.info(
            "read_index_repacked",
            extra={"index": name, "bytes_before": before, "bytes_after": after,
                   "seconds": round(time.monotonic() - started, 1)},
        )  # fmt: skip
    return report
