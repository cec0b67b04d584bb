"""Reads that stay cheap when nothing is cached (issue #19, part 2).

The normalizer writes a whole fleet's day at a time, so one person's rows lie one heap page per
day; a year read cold from the heap is ~366 random page reads per table. The reads therefore
come from covering B-tree indexes alone (index-only scans): a person's year is a few dozen
leaf pages per table. Two things make that hold on a live system:

1. Every column a read needs is in its index.
   - Sleep periods: one index, (user_id, day) INCLUDE the sleep list's columns and the daily
     page's main-period columns (sort keys included), replaces both sleep_period_day_idx and
     migration 0003's sleep_period_day_read_idx, so a write maintains one index fewer.
   - Activities (workouts and sessions): the keyset index (user_id, start, id) now INCLUDEs
     the list's columns; it replaces activity_start_idx (same key), so writes keep the same
     number of indexes. `metrics` holds a few sample summaries and a mood (mappers.py), far
     below B-tree's ~2.7 kB limit per entry.
   The list selectors select only these columns (selectors.py), where they used to read whole
   rows.

2. The visibility map stays current. An index-only scan reads the heap page of any entry whose
   page is not marked all-visible, i.e. written since its last vacuum. With the defaults,
   autovacuum waits for 20% of a table to be inserted or changed: on a 3.66 M-row table, ~73
   days of a 10,000-person fleet's writes, each of which would cost a heap page per day again.
   These tables get per-table thresholds instead: a vacuum after 10,000 inserted rows (about a
   day of such a fleet; the vacuum only visits pages not yet all-visible, so it is cheap) and
   after 1% of the rows were updated or deleted (the daily documents are revised during their
   day). Only the last day or so is then read from the heap.

Indexes built and dropped CONCURRENTLY, so a deploy does not block the normalizer's writes
(hence atomic = False; a failed build leaves an INVALID index: drop it and rerun). The storage
parameters take a SHARE UPDATE EXCLUSIVE lock, which writes and reads do not wait for.
"""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

# The tables read by index-only scans: the daily page's eight tables, sleep periods, activities.
TABLES = (
    "oura_daily_readiness",
    "oura_daily_sleep",
    "oura_daily_activity",
    "oura_daily_stress",
    "oura_daily_spo2",
    "oura_daily_resilience",
    "oura_daily_cardiovascular_age",
    "oura_vo2_max",
    "oura_sleep_periods",
    "oura_activities",
)

AUTOVACUUM = (
    "autovacuum_vacuum_insert_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0, "
    "autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0.01"
)
AUTOVACUUM_NAMES = (
    "autovacuum_vacuum_insert_threshold, autovacuum_vacuum_insert_scale_factor, "
    "autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor"
)

# Migration 0003's index, for the way back.
OLD_SLEEP_PERIOD_READ_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS sleep_period_day_read_idx "
    "ON health.oura_sleep_periods (user_id, day) INCLUDE (type, total_sleep_duration, id, "
    "oura_id, bedtime_start, bedtime_end, time_in_bed, efficiency, average_heart_rate, "
    "lowest_heart_rate, average_hrv)"
)

OLD_SLEEP_PERIOD_DAY_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS sleep_period_day_idx "
    "ON health.oura_sleep_periods (user_id, day)"
)
OLD_ACTIVITY_START_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS activity_start_idx "
    'ON health.oura_activities (user_id, start, "id")'
)


def _drop_index(model_name: str, name: str, recreate: str) -> migrations.SeparateDatabaseAndState:
    # RemoveIndexConcurrently drops the bare name, which the search path does not find in
    # schema `health` (IF EXISTS then makes it a silent no-op); so the SQL names the schema.
    return migrations.SeparateDatabaseAndState(
        database_operations=[
            migrations.RunSQL(
                sql=f"DROP INDEX CONCURRENTLY IF EXISTS health.{name}", reverse_sql=recreate
            )
        ],
        state_operations=[migrations.RemoveIndex(model_name=model_name, name=name)],
    )


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("normalized", "0005_heartrate")]

    operations = [
        AddIndexConcurrently(
            model_name="sleepperiod",
            index=models.Index(
                fields=["user_id", "day"],
                include=[
                    "oura_id",
                    "type",
                    "bedtime_start",
                    "bedtime_end",
                    "total_sleep_duration",
                    "deep_sleep_duration",
                    "light_sleep_duration",
                    "rem_sleep_duration",
                    "awake_time",
                    "time_in_bed",
                    "efficiency",
                    "latency",
                    "average_heart_rate",
                    "lowest_heart_rate",
                    "average_hrv",
                    "average_breath",
                    "readiness_score",
                    "id",
                ],
                name="sleep_period_read_idx",
            ),
        ),
        _drop_index("sleepperiod", "sleep_period_day_idx", OLD_SLEEP_PERIOD_DAY_INDEX),
        migrations.RunSQL(
            sql="DROP INDEX CONCURRENTLY IF EXISTS health.sleep_period_day_read_idx",
            reverse_sql=OLD_SLEEP_PERIOD_READ_INDEX,
        ),
        AddIndexConcurrently(
            model_name="activity",
            index=models.Index(
                fields=["user_id", "start", "id"],
                include=[
                    "oura_id",
                    "kind",
                    "type",
                    "day",
                    "end",
                    "intensity",
                    "calories",
                    "distance",
                    "source",
                    "label",
                    "metrics",
                ],
                name="activity_start_read_idx",
            ),
        ),
        _drop_index("activity", "activity_start_idx", OLD_ACTIVITY_START_INDEX),
        *(
            migrations.RunSQL(
                sql=f"ALTER TABLE health.{table} SET ({AUTOVACUUM})",
                reverse_sql=f"ALTER TABLE health.{table} RESET ({AUTOVACUUM_NAMES})",
            )
            for table in TABLES
        ),
    ]
