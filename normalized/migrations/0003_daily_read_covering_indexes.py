"""Covering indexes for the daily read (GET /v1/health/{user_id}/oura/daily).

The normalizer writes a whole fleet's day at a time, so one person's year of daily rows
lies on ~366 heap pages per table (~1,460 for a daily page), and reading them cold was most
of the request's SQL time. These B-tree indexes hold the selectors' columns next to the
(user_id, day) key, so a year is ~10-40 adjacent leaf pages per table, read by an index-only
scan (heap pages are visited only while not yet marked all-visible by (auto)vacuum: recently
upserted days).

The column lists are what normalized/selectors.py selects for the daily DTOs (see
`dtos.fields_of` of the daily DTOs); a column added to a daily DTO
later still works, it just costs heap fetches until an index like these includes it.

Database-only (RunSQL, no model state): the unique constraints on (user_id, day), which the
normalizer's ON CONFLICT upserts infer, stay as they are. The cost is one more index entry per
written row and roughly the daily tables' size again on disk.

CONCURRENTLY, so a deploy does not block the normalizer's writes while the indexes build
(hence atomic = False; a failed build leaves an INVALID index: drop it and rerun).
"""

from __future__ import annotations

from django.db import migrations

INDEXES = {
    "readiness_user_day_read_idx": (
        "oura_daily_readiness",
        "score, temperature_deviation, temperature_trend_deviation, contributors",
    ),
    "daily_sleep_user_day_read_idx": ("oura_daily_sleep", "score, contributors"),
    "daily_act_user_day_read_idx": (
        "oura_daily_activity",
        "score, steps, active_calories, total_calories, target_calories, "
        "equivalent_walking_distance, high_activity_time, medium_activity_time, "
        "low_activity_time, sedentary_time, resting_time, non_wear_time, average_met_minutes, "
        "inactivity_alerts, contributors",
    ),
    # The main-period query also sorts on type, total_sleep_duration and id.
    "sleep_period_day_read_idx": (
        "oura_sleep_periods",
        "type, total_sleep_duration, id, oura_id, bedtime_start, bedtime_end, time_in_bed, "
        "efficiency, average_heart_rate, lowest_heart_rate, average_hrv",
    ),
}


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("normalized", "0002_observed_at_and_tombstones")]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
            f"ON health.{table} (user_id, day) INCLUDE ({columns})",
            reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS health.{name}",
        )
        for name, (table, columns) in INDEXES.items()
    ]
