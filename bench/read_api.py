"""Read API benchmark: a 1-year daily range for one person among 10,000, through the real view.

    python -m devstack up --root .devstack-bench-read
    eval "$(python -m devstack env --root .devstack-bench-read | grep export)"
    python manage.py provision
    python -m bench.read_api --load          # load once (about 35 M rows), then measure
    python -m bench.read_api --cold          # restart Postgres, evict its files from the OS
                                             # cache, then measure first and second touches
    python -m devstack down --root .devstack-bench-read

A root of its own: the webhook bench stops `.devstack-bench`.

Loads `--users` x `--days` rows into each daily table (readiness, daily sleep, daily
activity, stress, SpO2, resilience, cardiovascular age, VO2 max), one long_sleep period per
user and day and a workout every third day, with generate_series in day-major order, as a
real fleet writes them: each person's year is spread over the whole table, not packed on a few
pages. After the load it runs VACUUM (ANALYZE), as autovacuum would in a live system (see
migration normalized/0006 for the per-table autovacuum settings that keep the visibility map
current). Then, for `--samples` distinct random users per endpoint, it times
- GET /v1/health/{user}/oura/daily?start=..&end=..&limit=366 through the WSGI application a
  server runs (health_project.wsgi: its middleware, URL routing, API-key authentication,
  throttle, validation, the one statement that reads the page's stored entries), called in
  process, without a socket; and the keyset-paged lists GET .../oura/sleep and
  .../oura/activities for the same year (limit=366), each twice: the first touch of that
  user's rows (cold after `--cold`: nothing of them cached in Postgres or the OS), then the
  second touch (warm);
- the daily page's statement alone over the same connection (warm), and
- the same rows as plain SELECTs returning rows, one per table, not JSON (columns from the
  DTOs, same filters, order and limits): the floor the view sits on (warm).

`--cold` stops the Postgres of `--root` (its shared buffers go), writes back and drops every
file of its data folder from the OS page cache with posix_fadvise(DONTNEED) (no privilege
needed, unlike /proc/sys/vm/drop_caches), reports what `fincore` still finds cached, and starts
it again. The warm-up requests (`--warmup`, other users) then load the connection, catalogs and
the indexes' upper levels, as on a server that has been up a while; the sampled users' rows
stay uncached until their first touch.

Refuses to load into a database that already holds other normalized rows unless --load is
given; --load truncates the normalized tables, so point it at the bench stack only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

# Before Django reads settings: no query log, no throttling of the benchmark's own key.
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "100000000")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")
os.environ.setdefault("HEALTH_ENV", "development")  # unset would mean production
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

from django.db import connection  # noqa: E402 - after django.setup()

from access.services import api_key_create  # noqa: E402 - after django.setup()
from health_project.wsgi import application  # noqa: E402 - after django.setup()
from normalized import daily_entries, dtos  # noqa: E402 - after django.setup()
from normalized.selectors import (  # noqa: E402 - after django.setup()
    DAILY_ENTRIES_PAGE_SQL,
    DAILY_PAGE_SQL,
)

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
    "oura_activities",
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
    # A workout every third day (~122 a year per person), with a session's metrics JSON.
    "oura_activities": f"""
        INSERT INTO health.oura_activities (user_id, oura_id, raw_object_key,
            normalizer_version, updated_at, kind, day, start, "end", type, intensity,
            calories, distance, source, label, metrics)
        SELECT {_COMMON}, 'workout', %(start)s::date + d,
            (%(start)s::date + d)::timestamptz + interval '17 hours',
            (%(start)s::date + d)::timestamptz + interval '18 hours',
            (ARRAY['walking', 'running', 'cycling'])[1 + (u + d) %% 3], 'moderate',
            200 + (u * d) %% 400, 5000 + (u * 7 + d) %% 5000, 'autodetected', '',
            jsonb_build_object('mood', 'good', 'heart_rate', jsonb_build_object(
                'average', 120.5, 'min', 80, 'max', 160 + d %% 20, 'count', 360))
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(users)s) u
        WHERE (u + d) %% 3 = 0
    """,
}


def _columns(model: type[dtos.ApiModel], without: tuple[str, ...] = ()) -> str:
    return ", ".join(column for _, _, column in dtos.fields_of(model, without=without))


def plain_sql(
    user: str, start: date, end: date, limit: int
) -> list[tuple[str, dict[str, str | date | int]]]:
    """The same rows and columns the page is written from, as plain SELECTs returning
    rows (no JSON): the floor the view sits on. Columns come from the DTOs like the view's."""
    params: dict[str, str | date | int] = {
        "user": user,
        "start": start,
        "end": end,
        "fetch": limit + 1,
    }
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


def load(users: int, days: int, start: date, tables: tuple[str, ...]) -> None:
    with connection.cursor() as cursor:
        # Without the read model's triggers: each INSERT below writes a whole table, whose
        # statement trigger would write every entry again; entries_load() writes them once.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("TRUNCATE " + ", ".join(f"health.{t}" for t in tables))
        for table in tables:
            began = time.perf_counter()
            cursor.execute(LOAD_SQL[table], {"users": users, "days": days, "start": start})
            print(
                f"loaded {table}: {cursor.rowcount:,} rows in {time.perf_counter() - began:.0f} s",
                flush=True,
            )
        # What autovacuum does on a live system, here at once: the visibility map the
        # index-only scans rely on, and the planner's statistics.
        began = time.perf_counter()
        for table in tables:
            cursor.execute(f"VACUUM (ANALYZE) health.{table}")
        print(f"vacuum analyze: {time.perf_counter() - began:.0f} s", flush=True)
        cursor.execute("RESET session_replication_role")
    entries_load()


def entries_load(*, rebuild: bool = True) -> None:
    """The daily page's read model for the loaded rows, laid out as a fleet writes it.

    `daily_entries.rebuild` writes person by person, which would leave each person's entries
    together on the heap and the index packed: better than a live system, where the entries
    are written day by day for the whole fleet. So they are written again in day order (the
    index's leaf pages then split as a fleet's do) and vacuumed. `--repack` afterwards packs
    the index as the weekly upkeep task does. Without `rebuild`, entries already there (the
    migration that installs the read model writes them) are only laid out again."""
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT FROM health.oura_daily_entries)")
        (present,) = cursor.fetchone()
    people = 0
    if rebuild or not present:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE health.oura_daily_entries")
        people = daily_entries.rebuild()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE entries AS SELECT * FROM health.oura_daily_entries;"
            "TRUNCATE health.oura_daily_entries;"
            "INSERT INTO health.oura_daily_entries SELECT * FROM entries ORDER BY day, user_id;"
            "DROP TABLE entries"
        )
        cursor.execute("VACUUM (ANALYZE) health.oura_daily_entries")
        cursor.execute("SELECT count(*) FROM health.oura_daily_entries")
        (count,) = cursor.fetchone()
    print(
        f"daily entries: {count:,} ({people:,} people rebuilt), written day by day, in "
        f"{time.perf_counter() - began:.0f} s",
        flush=True,
    )


# --- A cold cache -------------------------------------------------------------------------


def _data_files(data_dir: Path) -> list[Path]:
    return [path for path in data_dir.rglob("*") if path.is_file() and not path.is_symlink()]


def os_cached_bytes(files: list[Path]) -> int | None:
    """Bytes of `files` in the OS page cache, by util-linux `fincore`; None without it."""
    fincore = shutil.which("fincore")
    if fincore is None:
        return None
    total = 0
    for chunk in range(0, len(files), 500):
        out = subprocess.run(
            [fincore, "--bytes", "--noheadings", "--raw", "--output", "RES"]
            + [str(path) for path in files[chunk : chunk + 500]],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        total += sum(int(line) for line in out.split() if line.isdigit())
    return total


def evict_os_cache(files: list[Path]) -> None:
    """Drop `files` from the OS page cache: write back, then POSIX_FADV_DONTNEED, which
    drops clean pages without privileges (dirty ones would stay, hence the fdatasync)."""
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # removed meanwhile, or not ours to read
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def restart_cold(root: Path) -> None:
    """Stop the Postgres of `root`, evict its data folder from the OS cache, start it again."""
    from devstack.services import PostgresService
    from devstack.stack import Stack

    stack = Stack(root)
    data_dir = PostgresService(root).data_dir
    connection.close()
    stack.stop("postgres")
    files = _data_files(data_dir)
    before = os_cached_bytes(files)
    began = time.perf_counter()
    evict_os_cache(files)
    after = os_cached_bytes(files)
    cached = (
        "fincore not found, not checked"
        if before is None or after is None
        else f"{before / 2**20:,.0f} MB cached before, {after / 2**20:,.0f} MB after"
    )
    print(
        f"cold: postgres stopped, {len(files):,} files of {data_dir} evicted from the OS cache "
        f"in {time.perf_counter() - began:.1f} s ({cached}); starting it again",
        flush=True,
    )
    stack.start("postgres")


# --- Measuring ----------------------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, samples: list[float]) -> str:
    return (
        f"{name:<44} n={len(samples)}  P50 {percentile(samples, 50):6.2f} ms  "
        f"P95 {percentile(samples, 95):6.2f} ms  P99 {percentile(samples, 99):6.2f} ms  "
        f"mean {statistics.fmean(samples):6.2f} ms"
    )


class _Server:
    """granian with one worker, as `make run` shapes it, and a keep-alive client."""

    def __init__(self, interface: str) -> None:
        import httpx

        from bench.webhooks import _free_port, _wait_http
        from health_project.serving import WEB_BLOCKING_THREADS, granian_args

        port = _free_port()
        if interface == "asgi":
            argv = granian_args(host="127.0.0.1", port=port, workers=1)
        else:
            argv = ["--interface", "wsgi", "health_project.wsgi:application", "--host",
                    "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--blocking-threads", str(WEB_BLOCKING_THREADS)]  # fmt: skip
        self._process = subprocess.Popen(
            [sys.executable, "-m", "granian", *argv, "--no-log"],
            env={**os.environ, "HEALTH_EMBEDDED_SERVICES": "false"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_http(port)
        self._client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def get(self, path: str, query: str, key: str) -> tuple[int, bytes]:
        response = self._client.get(f"{path}?{query}", headers={"Authorization": f"Bearer {key}"})
        return response.status_code, response.content

    def stop(self) -> None:
        from bench.common import stop_processes

        self._client.close()
        stop_processes(self._process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=366)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    parser.add_argument("--samples", type=int, default=500, help="distinct users per endpoint")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--load", action="store_true", help="truncate and load the tables")
    parser.add_argument(
        "--entries",
        action="store_true",
        help="write the daily page's read model again from the loaded tables (day by day)",
    )
    parser.add_argument(
        "--repack",
        action="store_true",
        help="repack the read indexes first, as the weekly upkeep task read_indexes_repack",
    )
    parser.add_argument(
        "--tables", nargs="+", choices=TABLES, default=list(TABLES), help="with --load"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="restart Postgres and evict its files from the OS cache before measuring",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(".devstack-bench-read"),
        help="the devstack root whose Postgres --cold restarts",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--server",
        choices=["asgi", "wsgi"],
        help="GET over a socket from granian (one worker) with this interface, instead of "
        "calling the WSGI application in process: asgi is what make run serves "
        "(health_project/serving.py), wsgi what it served before",
    )
    args = parser.parse_args()

    if args.load:
        load(args.users, args.days, args.start, tuple(args.tables))
    elif args.entries:
        entries_load(rebuild=False)
    if args.repack:
        from normalized.maintenance import read_indexes_repack

        began = time.perf_counter()
        report = read_indexes_repack()
        print(
            f"repacked {len(report.repacked)} indexes, {report.bytes_before / 2**20:,.0f} MB -> "
            f"{report.bytes_after / 2**20:,.0f} MB, in {time.perf_counter() - began:.0f} s",
            flush=True,
        )
    counts = count_rows()
    print("rows:", ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    daily_rows = sum(counts[t] for t in TABLES[:3])
    if daily_rows < args.users * args.days * 3:
        print("not loaded: run with --load first", file=sys.stderr)
        return 1
    rng = random.Random(args.seed)
    # Distinct users: each endpoint's first touch of a user is the first read of their rows.
    users = [f"u{n}" for n in rng.sample(range(1, args.users + 1), args.warmup + 3 * args.samples)]
    warmup_users = users[: args.warmup]
    sampled = {
        "daily": users[args.warmup :][: args.samples],
        "sleep": users[args.warmup :][args.samples : 2 * args.samples],
        "activities": users[args.warmup :][2 * args.samples :],
    }
    if args.cold:
        restart_cold(args.root.resolve())

    end = args.start + timedelta(days=args.days - 1)
    params = {"start": args.start.isoformat(), "end": end.isoformat(), "limit": args.days}
    key = api_key_create(name="bench", scopes=["health:read"], all_users=True).secret
    query = urlencode(params)

    server = _Server(args.server) if args.server else None

    def get(path: str) -> tuple[int, bytes]:
        """One GET through the WSGI application, as granian makes it (no socket)."""
        if server is not None:
            return server.get(path, query, key)
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "localhost", "HTTP_AUTHORIZATION": f"Bearer {key}",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
        }  # fmt: skip
        status: list[str] = []

        def start_response(line: str, headers: list[tuple[str, str]], *_: Any) -> Any:
            status.append(line)
            return lambda _chunk: None

        body = b"".join(application(environ, start_response))
        return int(status[0].split()[0]), body

    def expected(endpoint: str, user: str) -> int:
        """Entries of the user's one page: a day each, workouts on days with (u + d) % 3 == 0."""
        if endpoint != "activities":
            days: int = args.days
            return days
        return sum(1 for d in range(args.days) if (int(user[1:]) + d) % 3 == 0)

    def api_once(endpoint: str, user: str) -> float:
        began = time.perf_counter()
        status, body = get(f"/v1/health/{user}/oura/{endpoint}")
        elapsed = (time.perf_counter() - began) * 1000
        assert status == 200, body[:200]
        if endpoint != "activities" or counts["oura_activities"]:
            assert len(json.loads(body)["data"]) == expected(endpoint, user), endpoint
        return elapsed

    def sql_once(user: str) -> float:
        queries = plain_sql(user, args.start, end, args.days)
        began = time.perf_counter()
        with connection.cursor() as cursor:
            for sql, sql_params in queries:
                cursor.execute(sql, sql_params)
                cursor.fetchall()
        return (time.perf_counter() - began) * 1000

    def page_sql_once(user: str, statement: str) -> float:
        page_params = {
            "user_id": user,
            "start": args.start,
            "end": end,
            "limit": args.days,
            "fetch": args.days + 1,
        }
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(statement, page_params)
            cursor.fetchall()
        return (time.perf_counter() - began) * 1000

    for user in warmup_users:
        for endpoint in sampled:
            api_once(endpoint, user)
    first: dict[str, list[float]] = {endpoint: [] for endpoint in sampled}
    second: dict[str, list[float]] = {endpoint: [] for endpoint in sampled}
    page_sql: list[float] = []
    tables_sql: list[float] = []
    sql: list[float] = []
    for endpoint, endpoint_users in sampled.items():
        for user in endpoint_users:
            first[endpoint].append(api_once(endpoint, user))
            second[endpoint].append(api_once(endpoint, user))
    # The statements after every request: the view reads only the read model, so the daily
    # tables of these people are still cold here; their first touch (not counted) would
    # otherwise sit between the requests timed above.
    for user in sampled["daily"]:
        page_sql.append(page_sql_once(user, DAILY_ENTRIES_PAGE_SQL))
        page_sql_once(user, DAILY_PAGE_SQL)
        tables_sql.append(page_sql_once(user, DAILY_PAGE_SQL))
        sql.append(sql_once(user))

    if server is not None:
        server.stop()
    touch = "cold" if args.cold else "first touch"
    via = f"over a socket from granian {args.server}" if args.server else "in process"
    print(
        f"1-year range ({args.days} days, limit={args.days}), distinct random users of "
        f"{args.users:,}, {via}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}:"
    )
    lines: list[tuple[str, list[float]]] = []
    for endpoint in sampled:
        lines.append((f"GET .../oura/{endpoint}, {touch}", first[endpoint]))
        lines.append((f"GET .../oura/{endpoint}, warm (2nd touch)", second[endpoint]))
    lines.append(("daily: the view's one statement, warm", page_sql))
    lines.append(("daily: the page written from the tables, warm", tables_sql))
    lines.append(("daily: raw SQL, same rows, plain SELECTs, warm", sql))
    for name, samples in lines:
        print(summary(name, samples))
    cold_ok = percentile(first["daily"], 95) <= 30.0
    warm_ok = percentile(second["daily"], 95) <= 10.0
    print(
        f"target daily P95 <= 30 ms {touch}: {'met' if cold_ok else 'MISSED'}; "
        f"<= 10 ms warm: {'met' if warm_ok else 'MISSED'}"
    )
    return 0 if cold_ok and warm_ok else 2


if __name__ == "__main__":
    sys.exit(main())
