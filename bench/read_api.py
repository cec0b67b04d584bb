"""Read API benchmark: a 1-year daily range for one person among 10,000, through the real view.

    python -m devstack up --root .devstack-bench-read
    eval "$(python -m devstack env --root .devstack-bench-read | grep export)"
    python manage.py provision
    python -m bench.read_api --load          # load once (about 33 M rows), then measure
    python -m bench.read_api                 # measure again on the loaded data
    python -m devstack down --root .devstack-bench-read

A root of its own: the webhook bench stops `.devstack-bench` when it ends.

Loads `--users` x `--days` rows into each daily table (readiness, daily sleep, daily
activity, stress, SpO2, resilience, cardiovascular age, VO2 max) and one long_sleep period per
user and day, with generate_series in day-major order, as a real fleet writes them: each
person's year is spread over the whole table, not packed on a few pages. Then, for random
users, it times
- GET /v1/health/{user}/oura/daily?start=..&end=..&limit=366 through Django's test client
  (URL routing, API-key authentication, throttle, validation, the one statement that writes
  the page's JSON in Postgres),
- that statement alone over the same connection, and
- the same rows as plain SELECTs returning rows, one per table, not JSON (columns from the
  DTOs, same filters, order and limits): the floor the view sits on.

Refuses to load into a database that already holds other normalized rows unless --load is
given; --load truncates the normalized tables, so point it at the bench stack only.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import date, timedelta

# Before Django reads settings: no query log, no throttling of the benchmark's own key.
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "100000000")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")
os.environ.setdefault("HEALTH_ENV", "development")  # unset would mean production
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

from django.db import connection  # noqa: E402 - after django.setup()
from django.test import Client  # noqa: E402 - after django.setup()

from access.services import api_key_create  # noqa: E402 - after django.setup()
from normalized import dtos  # noqa: E402 - after django.setup()
from normalized.selectors import DAILY_PAGE_SQL  # noqa: E402 - after django.setup()

TABLES = (
    "oura_daily_readiness",
    "oura_daily_sleep",
    "oura_daily_activity",
    "oura_sleep_periods",
    # The daily types of issue #18, which join the same page.
    "oura_daily_stress",
    "oura_daily_spo2",
    "oura_daily_resilience",
    "oura_daily_cardiovascular_age",
    "oura_vo2_max",
)

_COMMON = "'u' || u, 'bench-' || u || '-' || d, 'bench/' || u || '/' || d, 1, now()"

LOAD_SQL = {
    "oura_daily_readiness": f"""
        INSERT INTO health.oura_daily_readiness (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, score, temperature_deviation,
            temperature_trend_deviation, contributors, timestamp)
        SELECT {_COMMON}, %(start)s::date + d, 60 + (u + d) %% 40, ((u * d) %% 100) / 100.0 - 0.5,
            ((u + d) %% 50) / 100.0 - 0.25,
            jsonb_build_object('activity_balance', 70 + d %% 30, 'body_temperature', 90,
                'hrv_balance', 60 + u %% 40, 'previous_day_activity', 80, 'previous_night', 75,
                'recovery_index', 90, 'resting_heart_rate', 85, 'sleep_balance', 78,
                'sleep_regularity', 70),
            (%(start)s::date + d)::timestamptz
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
    "oura_daily_sleep": f"""
        INSERT INTO health.oura_daily_sleep (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, score, contributors, timestamp)
        SELECT {_COMMON}, %(start)s::date + d, 55 + (u * 7 + d) %% 45,
            jsonb_build_object('deep_sleep', 90, 'efficiency', 85, 'latency', 70,
                'rem_sleep', 88, 'restfulness', 65, 'timing', 80, 'total_sleep', 77 + d %% 20),
            (%(start)s::date + d)::timestamptz
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
    "oura_daily_activity": f"""
        INSERT INTO health.oura_daily_activity (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, score, active_calories, total_calories,
            target_calories, steps, equivalent_walking_distance, high_activity_time,
            medium_activity_time, low_activity_time, sedentary_time, resting_time,
            non_wear_time, average_met_minutes, inactivity_alerts, contributors, timestamp)
        SELECT {_COMMON}, %(start)s::date + d, 50 + (u + 3 * d) %% 50, 300 + (u * d) %% 500,
            2000 + (u * d) %% 1000, 500, 4000 + (u * 13 + d * 7) %% 12000, 5000, 600, 1800,
            12000, 30000, 28000, 0, 1.5, (u + d) %% 3,
            jsonb_build_object('meet_daily_targets', 60, 'move_every_hour', 95,
                'recovery_time', 100, 'stay_active', 70, 'training_frequency', 80,
                'training_volume', 90),
            (%(start)s::date + d)::timestamptz
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
    "oura_sleep_periods": f"""
        INSERT INTO health.oura_sleep_periods (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, type, bedtime_start, bedtime_end,
            total_sleep_duration, deep_sleep_duration, light_sleep_duration,
            rem_sleep_duration, awake_time, time_in_bed, efficiency, latency,
            average_heart_rate, lowest_heart_rate, average_hrv, average_breath,
            readiness_score)
        SELECT {_COMMON}, %(start)s::date + d, 'long_sleep',
            (%(start)s::date + d)::timestamptz - interval '1 hour',
            (%(start)s::date + d)::timestamptz + interval '7 hours',
            25000 + (u * d) %% 3000, 5400, 14400, 5400, 1800, 28800, 85 + d %% 10, 600,
            50 + u %% 10, 45, 40 + d %% 20, 14.5, 60 + (u + d) %% 40
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
    "oura_daily_stress": f"""
        INSERT INTO health.oura_daily_stress (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, stress_high, recovery_high, day_summary)
        SELECT {_COMMON}, %(start)s::date + d, 900 * ((u + d) %% 8), 900 * ((u * d) %% 12),
            (ARRAY['restored', 'normal', 'stressful'])[1 + (u + d) %% 3]
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
    "oura_daily_spo2": f"""
        INSERT INTO health.oura_daily_spo2 (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, spo2_percentage, breathing_disturbance_index)
        SELECT {_COMMON}, %(start)s::date + d, 94 + ((u * d) %% 500) / 100.0, (u + d) %% 30
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
    "oura_daily_resilience": f"""
        INSERT INTO health.oura_daily_resilience (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, level, sleep_recovery, daytime_recovery, stress)
        SELECT {_COMMON}, %(start)s::date + d,
            (ARRAY['limited', 'adequate', 'solid', 'strong', 'exceptional'])[1 + (u + d) %% 5],
            30 + ((u * d) %% 600) / 10.0, 40 + ((u + d) %% 500) / 10.0, 20 + (d %% 600) / 10.0
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
    "oura_daily_cardiovascular_age": f"""
        INSERT INTO health.oura_daily_cardiovascular_age (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, vascular_age, pulse_wave_velocity)
        SELECT {_COMMON}, %(start)s::date + d, 25 + (u + d / 30) %% 40, 6 + (u %% 30) / 10.0
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
    "oura_vo2_max": f"""
        INSERT INTO health.oura_vo2_max (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, day, vo2_max, timestamp)
        SELECT {_COMMON}, %(start)s::date + d, 30 + (u + d / 7) %% 30,
            (%(start)s::date + d)::timestamptz + interval '14 hours'
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
    """,
}


def _columns(model: type[dtos.ApiModel], without: tuple[str, ...] = ()) -> str:
    return ", ".join(column for _, _, column in dtos.fields_of(model, without=without))


def plain_sql(user: str, start: date, end: date, limit: int) -> list[tuple[str, dict]]:
    """The same rows and columns the page is written from, as plain SELECTs returning
    rows (no JSON): the floor the view sits on. Columns come from the DTOs like the view's."""
    params = {"user": user, "start": start, "end": end, "fetch": limit + 1}
    window = "user_id = %(user)s AND day BETWEEN %(start)s AND %(end)s"
    daily = [
        ("oura_daily_readiness", _columns(dtos.OuraDailyReadiness)),
        ("oura_daily_sleep", _columns(dtos.OuraDailySleep, without=("main_period",))),
        ("oura_daily_activity", _columns(dtos.OuraDailyActivity)),
        ("oura_daily_stress", _columns(dtos.OuraDailyStress)),
        ("oura_daily_spo2", _columns(dtos.OuraDailySpO2)),
        (
            "oura_daily_resilience",
            _columns(dtos.OuraDailyResilience, without=("contributors",))
            + ", "
            + _columns(dtos.OuraResilienceContributors),
        ),
        ("oura_daily_cardiovascular_age", _columns(dtos.OuraDailyCardiovascularAge)),
        ("oura_vo2_max", _columns(dtos.OuraVO2Max)),
    ]
    queries = [
        (
            f"SELECT day, {columns} FROM health.{table} WHERE {window} "
            "ORDER BY day LIMIT %(fetch)s",
            params,
        )
        for table, columns in daily
    ]
    queries.append(
        (
            f"SELECT DISTINCT ON (day) day, {_columns(dtos.OuraMainSleepPeriod)} "
            f"FROM health.oura_sleep_periods WHERE {window} AND type <> 'deleted' "
            "ORDER BY day, type = 'long_sleep' DESC, total_sleep_duration DESC NULLS LAST, id",
            params,
        )
    )
    return queries


def count_rows() -> dict[str, int]:
    with connection.cursor() as cursor:
        counts = {}
        for table in TABLES:
            cursor.execute(f"SELECT count(*) FROM health.{table}")
            counts[table] = cursor.fetchone()[0]
    return counts


def load(users: int, days: int, start: date) -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE " + ", ".join(f"health.{t}" for t in TABLES))
        for table in TABLES:
            began = time.perf_counter()
            cursor.execute(LOAD_SQL[table], {"users": users, "days": days, "start": start})
            print(
                f"loaded {table}: {cursor.rowcount:,} rows in {time.perf_counter() - began:.0f} s"
            )
        began = time.perf_counter()
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE health.{table}")
        print(f"vacuum analyze: {time.perf_counter() - began:.0f} s")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, samples: list[float]) -> str:
    return (
        f"{name:<34} n={len(samples)}  P50 {percentile(samples, 50):6.2f} ms  "
        f"P95 {percentile(samples, 95):6.2f} ms  P99 {percentile(samples, 99):6.2f} ms  "
        f"mean {statistics.fmean(samples):6.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=366)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--load", action="store_true", help="truncate and load the tables")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    if args.load:
        load(args.users, args.days, args.start)
    counts = count_rows()
    print("rows:", ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    daily_rows = sum(counts[t] for t in TABLES[:3])
    if daily_rows < args.users * args.days * 3:
        print("not loaded: run with --load first", file=sys.stderr)
        return 1

    end = args.start + timedelta(days=args.days - 1)
    params = {"start": args.start.isoformat(), "end": end.isoformat(), "limit": args.days}
    key = api_key_create(name="bench", scopes=["health:read"], all_users=True).secret
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="localhost")
    rng = random.Random(args.seed)

    def api_once(user: str) -> float:
        began = time.perf_counter()
        response = client.get(f"/v1/health/{user}/oura/daily", params)
        elapsed = (time.perf_counter() - began) * 1000
        assert response.status_code == 200, response.content[:200]
        assert len(response.json()["data"]) == args.days
        return elapsed

    def sql_once(user: str) -> float:
        queries = plain_sql(user, args.start, end, args.days)
        began = time.perf_counter()
        with connection.cursor() as cursor:
            for sql, sql_params in queries:
                cursor.execute(sql, sql_params)
                cursor.fetchall()
        return (time.perf_counter() - began) * 1000

    def page_sql_once(user: str) -> float:
        page_params = {
            "user_id": user,
            "start": args.start,
            "end": end,
            "limit": args.days,
            "fetch": args.days + 1,
        }
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(DAILY_PAGE_SQL, page_params)
            cursor.fetchall()
        return (time.perf_counter() - began) * 1000

    for _ in range(args.warmup):
        user = f"u{rng.randint(1, args.users)}"
        api_once(user)
        sql_once(user)
        page_sql_once(user)
    api: list[float] = []
    sql: list[float] = []
    page_sql: list[float] = []
    for _ in range(args.samples):
        # Same user for both, view first: the view pays any cold page reads, the raw SQL
        # then finds those pages cached (so its figure is a floor, not a like-for-like).
        user = f"u{rng.randint(1, args.users)}"
        api.append(api_once(user))
        sql.append(sql_once(user))
        page_sql.append(page_sql_once(user))

    print(
        f"1-year daily range ({args.days} entries, limit={args.days}), "
        f"random users of {args.users:,}:"
    )
    print(summary("GET /v1/health/{user}/oura/daily", api))
    print(summary("the view's one statement, alone", page_sql))
    print(summary("raw SQL, same rows, 4 plain SELECTs", sql))
    target = percentile(api, 95) <= 30.0
    print(f"target P95 <= 30 ms: {'met' if target else 'MISSED'}")
    return 0 if target else 2


if __name__ == "__main__":
    sys.exit(main())
