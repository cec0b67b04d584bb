"""Heart rate, Oura's time series: samples in, rows of a table partitioned by month.

Oura's heartrate route pages samples (up to 1000 a page) that have no id: a sample is known
by its person and its timestamp, so that pair is the table's key and the upsert's conflict
target. Pages come through the normalizer's page path (normalized/consumers.py `handle_page`
-> services.normalize_documents), which hands heart rate to `samples_write` here.

- `heartrate_row`: one validated HeartRateRow -> the columns it fills (pure).
- `samples_write`: map a page, keep the last sample per timestamp, upsert under the person's
  lock in one statement.
- `heartrate_partitions_ensure`: the scheduler's task; creates the coming months' partitions
  and gives a partition of its own to every month found in the DEFAULT partition.

The table and its partition function are SQL in migration 0005 (Django cannot create a
partitioned table); the model is `normalized.models.HeartRateSample`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection, transaction

from core.db import person_lock
from normalized import contracts, mappers
from normalized.models import HeartRateSample
from privacy.selectors import user_erased

logger = logging.getLogger(__name__)

COLLECTION = "heartrate"
# Months created ahead of the current one, so the month that starts tonight never waits for
# the task (and a scheduler that is down for weeks still leaves no insert in DEFAULT).
MONTHS_AHEAD = 3

_SMALLINT = range(-32768, 32768)


# --- Mapping ------------------------------------------------------------------------------


def heartrate_row(doc: contracts.HeartRateRow) -> dict[str, Any]:
    if doc.bpm not in _SMALLINT:
        raise mappers.UnmappableDocument(COLLECTION, "bpm", "outside the smallint column")
    # `timestamp_unix` is `timestamp` again (the contract derives it when Oura omits it).
    return {"timestamp": doc.timestamp, "bpm": doc.bpm, "source": doc.source}


# --- Writes -------------------------------------------------------------------------------


@dataclass
class SamplesWritten:
    written: int = 0
    stale: int = 0  # already stored from a later observation: left as they are
    erased: int = 0  # the person was erased meanwhile: nothing written
    days: set[date] = field(default_factory=set)  # UTC days of the written samples
    unmappable: dict[int, str] = field(default_factory=dict)  # index -> problem, no values


_UPSERT_SQL = """
INSERT INTO health.oura_heartrate_samples AS t
    (user_id, "timestamp", bpm, source, raw_object_key, normalizer_version, updated_at,
     source_observed_at)
SELECT %s, u.ts, u.bpm, u.source, u.raw_object_key, %s, %s, u.observed
FROM unnest(%s::timestamptz[], %s::int2[], %s::text[], %s::text[], %s::timestamptz[])
    AS u(ts, bpm, source, raw_object_key, observed)
ON CONFLICT (user_id, "timestamp") DO UPDATE SET
    bpm = EXCLUDED.bpm,
    source = EXCLUDED.source,
    raw_object_key = EXCLUDED.raw_object_key,
    normalizer_version = EXCLUDED.normalizer_version,
    updated_at = EXCLUDED.updated_at,
    source_observed_at = EXCLUDED.source_observed_at
WHERE t.source_observed_at IS NULL OR t.source_observed_at <= EXCLUDED.source_observed_at
RETURNING "timestamp"
"""


def samples_write(
    *,
    user_id: str,
    documents: Sequence[tuple[int, contracts.HeartRateRow]],
    object_keys: Sequence[str],
    observed: Sequence[datetime],
    now: datetime,
) -> SamplesWritten:
    """Upsert validated samples (index in the page, row) of one person in one statement.

    `object_keys` and `observed` are indexed like the page. One INSERT ... SELECT FROM
    unnest(...) ON CONFLICT: five array parameters whatever the page size, as the other
    tables' upsert (services._upsert); a 1000-sample page is one round trip. Like the other
    tables, a stored sample is replaced only by one observed at the same time or later.
    """
    result = SamplesWritten()
    by_timestamp: dict[datetime, tuple[dict[str, Any], str, datetime]] = {}
    for index, document in documents:
        try:
            values = heartrate_row(document)
        except mappers.UnmappableDocument as exc:
            result.unmappable[index] = str(exc)
            continue
        # Oura has sent two samples with one timestamp (the Dec-2024 recording: awake and
        # workout at 18:47:08); one statement cannot write a key twice, so the one observed
        # last wins, the later one in the page on a tie, as if they had come one by one.
        key = values["timestamp"].astimezone(UTC)
        earlier = by_timestamp.get(key)
        if earlier is None or earlier[2] <= observed[index]:
            by_timestamp[key] = (values, object_keys[index], observed[index])
    if not by_timestamp:
        return result
    rows = [by_timestamp[key] for key in sorted(by_timestamp)]
    params: list[Any] = [
        user_id,
        mappers.NORMALIZER_VERSION,
        now,
        [values["timestamp"] for values, _, _ in rows],
        [values["bpm"] for values, _, _ in rows],
        [values["source"] for values, _, _ in rows],
        [object_key for _, object_key, _ in rows],
        [observed_at for _, _, observed_at in rows],
    ]
    with transaction.atomic(savepoint=False):
        # The person's lock, as every normalized write takes it (services._lock_user): an
        # erasure holds it while it runs, and its tombstone stops what waited.
        person_lock(user_id)
        if user_erased(user_id):
            result.erased = len(rows)
            return result
        with connection.cursor() as cursor:
            cursor.execute(_UPSERT_SQL, params)
            written = [moment for (moment,) in cursor.fetchall()]
    result.written = len(written)
    result.stale = len(rows) - len(written)
    result.days = {moment.astimezone(UTC).date() for moment in written}
    return result


def samples_forget_raw(*, object_keys: Sequence[str]) -> int:
    """Blank `raw_object_key` of samples whose raw page was purged (see
    services.raw_objects_forget). Narrowed by person: the key names its user
    (`.../user=<id>/...`), and (user_id, ...) is the table's primary key, so this reads each
    affected person's samples rather than every sample of everyone (no index on the key)."""
    by_user: dict[str, list[str]] = {}
    for key in object_keys:
        for part in key.split("/"):
            if part.startswith("user="):
                by_user.setdefault(part.removeprefix("user="), []).append(key)
    changed = 0
    for user_id, keys in by_user.items():
        changed += HeartRateSample.objects.filter(user_id=user_id, raw_object_key__in=keys).update(
            raw_object_key=""
        )
    return changed


# --- Partitions ---------------------------------------------------------------------------


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class PartitionReport:
    created: list[date]  # first days of the months that got a partition
    drained: list[date]  # of those and others, months whose rows were in DEFAULT


def heartrate_partitions_ensure(
    *, today: date | None = None, months_ahead: int = MONTHS_AHEAD
) -> PartitionReport:
    """Partitions for this month and the next `months_ahead`, and for every month that has
    rows in the DEFAULT partition (moved into their month's new partition). Idempotent.

    Each month is its own transaction: while a partition is made, heart rate writes wait
    (reads go on), so they wait one month's move at a time. The work is the SQL function of
    migration 0005.
    """
    current = _month_start(today or datetime.now(UTC).date())
    wanted = {_add_months(current, offset) for offset in range(months_ahead + 1)}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT date_trunc('month', \"timestamp\" AT TIME ZONE 'UTC')::date "
            "FROM health.oura_heartrate_samples_default"
        )
        in_default = {month for (month,) in cursor.fetchall()}
    created = []
    for month in sorted(wanted | in_default):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT health.oura_heartrate_partition_ensure(%s)", [month])
            (made,) = cursor.fetchone()
        if made:
            created.append(month)
    report = PartitionReport(created=created, drained=sorted(in_default))
    logger.info(
        "heartrate_partitions_ensured",
        extra={"partitions_created": len(report.created), "months_drained": len(report.drained)},
    )
    return report


def heartrate_partitions() -> list[tuple[str, str]]:
    """(partition name, bound expression) of every partition, DEFAULT included, by name."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'health.oura_heartrate_samples'::regclass ORDER BY c.relname"
        )
        return [(name, bound) for name, bound in cursor.fetchall()]
