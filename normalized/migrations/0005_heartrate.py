"""Heart rate samples, natively partitioned by month (issue #18).

Django cannot create a partitioned table, so the table is SQL and `state_operations` gives
Django the model state it would have written (`makemigrations --check` stays clean; the ORM
reads, counts and deletes through the parent table like any other).

- `health.oura_heartrate_samples` is PARTITION BY RANGE ("timestamp"), one partition per UTC
  month named `oura_heartrate_samples_yYYYYmMM`, plus a DEFAULT partition so an insert never
  fails for want of a partition (a backfill of years-old history, a month not created yet).
- The primary key (user_id, "timestamp") is the normalizer's conflict key and includes the
  partition key, as Postgres requires. It INCLUDEs bpm and source: the read endpoint then
  reads a person's range from the index alone instead of one heap page per sample (the fleet's
  samples interleave in the heap), as migration 0003 does for the daily tables.
- `health.oura_heartrate_partition_ensure(month)` creates one month's partition if missing,
  moving that month's rows out of the DEFAULT partition first (Postgres refuses to attach a
  partition while the default holds rows of its range). Idempotent; an advisory lock
  serialises concurrent callers. One implementation, called here for the current months, by
  the scheduler's `heartrate_partitions` task (normalized/timeseries.py) and by tests.
"""

from __future__ import annotations

import django.utils.timezone
from django.db import migrations, models

# The recent year, where reads and most backfills land. Older history goes to the DEFAULT
# partition first; the scheduler's task then gives each of its months a partition.
MONTHS_BACK = 12
MONTHS_AHEAD = 3

CREATE_TABLE = """
CREATE TABLE health.oura_heartrate_samples (
    user_id varchar(64) NOT NULL,
    "timestamp" timestamptz NOT NULL,
    bpm smallint NOT NULL,
    source varchar(10) NOT NULL,
    raw_object_key varchar(512) NOT NULL,
    normalizer_version integer NOT NULL CHECK (normalizer_version >= 0),
    updated_at timestamptz NOT NULL,
    source_observed_at timestamptz NULL,
    CONSTRAINT oura_heartrate_samples_pkey PRIMARY KEY (user_id, "timestamp") INCLUDE (bpm, source)
) PARTITION BY RANGE ("timestamp");
CREATE TABLE health.oura_heartrate_samples_default
    PARTITION OF health.oura_heartrate_samples DEFAULT;
"""

# Bounds are UTC midnights of the month's first day and the next month's.
CREATE_ENSURE_FUNCTION = """
CREATE FUNCTION health.oura_heartrate_partition_ensure(month date) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    first_day date := date_trunc('month', month)::date;
    lo timestamptz := first_day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    name text := 'oura_heartrate_samples_' || to_char(first_day, '"y"YYYY"m"MM');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('health.oura_heartrate_partitions', 0));
    IF to_regclass(format('health.%I', name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Writers wait at the parent (reads go on) until the new partition is committed. A weaker
    -- lock (ATTACH's own SHARE UPDATE EXCLUSIVE) lets an INSERT that started meanwhile route
    -- by the old partition list and then fail the DEFAULT's new constraint; tested by
    -- test_a_write_racing_the_drain_of_its_month_waits_and_lands_in_the_new_partition.
    -- Parent first, then the default: the order an INSERT routed to the default takes them,
    -- so the two cannot deadlock.
    LOCK TABLE ONLY health.oura_heartrate_samples IN EXCLUSIVE MODE;
    LOCK TABLE health.oura_heartrate_samples_default IN ACCESS EXCLUSIVE MODE;
    EXECUTE format(
        'CREATE TABLE health.%I (LIKE health.oura_heartrate_samples '
        'INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format(
        'WITH moved AS (DELETE FROM health.oura_heartrate_samples_default '
        'WHERE "timestamp" >= $1 AND "timestamp" < $2 RETURNING *) '
        'INSERT INTO health.%I SELECT * FROM moved', name) USING lo, hi;
    EXECUTE format(
        'ALTER TABLE health.oura_heartrate_samples ATTACH PARTITION health.%I '
        'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    RETURN true;
END
$fn$;
"""

CREATE_CURRENT_PARTITIONS = f"""
SELECT health.oura_heartrate_partition_ensure(month::date)
FROM generate_series(
    date_trunc('month', now() AT TIME ZONE 'UTC') - interval '{MONTHS_BACK} months',
    date_trunc('month', now() AT TIME ZONE 'UTC') + interval '{MONTHS_AHEAD} months',
    interval '1 month'
) AS month;
"""  # noqa: S608 - two integer constants, no outside data

DROP = """
DROP TABLE health.oura_heartrate_samples;
DROP FUNCTION health.oura_heartrate_partition_ensure(date);
"""


class Migration(migrations.Migration):
    dependencies = [("normalized", "0004_more_types")]

    operations = [
        migrations.RunSQL(
            sql=[CREATE_TABLE, CREATE_ENSURE_FUNCTION, CREATE_CURRENT_PARTITIONS],
            reverse_sql=DROP,
            state_operations=[
                migrations.CreateModel(
                    name="HeartRateSample",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "user_id",
                                "timestamp",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("user_id", models.CharField(max_length=64)),
                        ("timestamp", models.DateTimeField()),
                        ("bpm", models.SmallIntegerField()),
                        (
                            "source",
                            models.CharField(
                                help_text="awake, rest, sleep, workout, live, ...", max_length=10
                            ),
                        ),
                        ("raw_object_key", models.CharField(blank=True, max_length=512)),
                        ("normalizer_version", models.PositiveIntegerField()),
                        ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={"db_table": 'health"."oura_heartrate_samples'},
                ),
            ],
        ),
    ]
