"""The daily page's read model (issue #19): each person's days stored ready to serve.

Why. Written from the tables, a year's daily page joins eight daily tables and the sleep
periods and writes ~50 values a day as JSON: about 20 ms of Postgres CPU even with every page
cached, and on a cold cache a few dozen leaf pages in each of nine indexes. Stored as the
entries the page serves (`health.oura_daily_entries`, one row per person and day), the same
year is one range scan of one index, whose entries hold the JSON (the primary key INCLUDEs
it): index-only, a person's year on adjacent leaf pages once the weekly repack has packed
them (normalized/maintenance.py), and no JSON to write.

How it stays right. Triggers on the daily tables and the sleep periods refresh, after every
statement that inserts, updates or deletes their rows, the entries of the (person, day) pairs
that statement touched, in the same transaction, with the SQL the page itself is written with
(`selectors.daily_entries_sql`): an entry is byte for byte what the tables give.
- Triggers rather than a call in the normalizer: every writer keeps the entries right (the
  normalizer, `renormalize`, deletes, erasure, a test's factories) with no list of writers to
  keep in step, and nobody can write a day and forget its entry.
- Statement-level, with transition tables: a backfill page of 1,000 documents refreshes its
  days in one statement, not one per row.
- Two writers of one person never refresh a day from different snapshots: the normalizer and
  an erasure write a person under their advisory lock (core.db.person_lock).
- A B-tree entry holds at most ~2.7 kB, and a refused entry would fail the normalizer's whole
  write: an entry longer than ENTRY_MAX_BYTES is stored as null, and a page that meets one is
  written from the tables (selectors.daily_page_json). A full day is ~1.5 kB.

The functions embed SQL generated from the DTOs. The migration that installs them (0007)
runs `install` and `rebuild` with the code of its day; a test compares the installed function
with what the code generates now, so a change to the page's shape fails until a new migration
installs and rebuilds again.
"""

from __future__ import annotations

from datetime import date

from django.db import connection, transaction

from core.db import person_lock
from normalized.selectors import DAILY_ENTRY_TABLES, daily_entries_sql

ENTRIES_TABLE = "health.oura_daily_entries"
ENTRY_MAX_BYTES = 2000  # plus the key, well inside B-tree's limit even uncompressed
REFRESH_FUNCTION = "health.oura_daily_entries_refresh"
TRIGGER_FUNCTION = "health.oura_daily_entries_changed"
# (trigger name suffix, event, transition tables)
_TRIGGERS = (
    ("ins", "INSERT", "NEW TABLE AS new_rows"),
    ("upd", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ("del", "DELETE", "OLD TABLE AS old_rows"),
)


def refresh_function_body() -> str:
    """PL/pgSQL: the entries of the pairs (_users[i], _days[i]) written again from the
    tables; a pair with no daily row any more loses its entry. Unchanged entries are not
    rewritten (no dead row, no index entry for nothing)."""
    built = daily_entries_sql("keys")
    return f"""
BEGIN
    WITH keys AS (
        SELECT DISTINCT k.user_id, k.day FROM unnest(_users, _days) AS k(user_id, day)
    ), built AS ({built}
    ), gone AS (
        DELETE FROM {ENTRIES_TABLE} x USING keys k
        WHERE x.user_id = k.user_id AND x.day = k.day
            AND NOT EXISTS (SELECT FROM built b WHERE b.user_id = x.user_id AND b.day = x.day)
    )
    INSERT INTO {ENTRIES_TABLE} AS x (user_id, day, entry)
    SELECT user_id, day, CASE WHEN octet_length(entry) <= {ENTRY_MAX_BYTES} THEN entry END
    FROM built
    ON CONFLICT (user_id, day) DO UPDATE SET entry = EXCLUDED.entry
    WHERE x.entry IS DISTINCT FROM EXCLUDED.entry;
END
"""  # noqa: S608 - names and SQL from our models and DTOs, no request data


_TRIGGER_BODY = f"""
DECLARE
    _users text[];
    _days date[];
BEGIN
    -- Each trigger names only the transition tables its event has; PL/pgSQL plans a
    -- statement when it first runs, so the branches of the other events are never planned.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(user_id), array_agg(day) INTO _users, _days
        FROM (SELECT DISTINCT user_id, day FROM new_rows) c;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(user_id), array_agg(day) INTO _users, _days
        FROM (SELECT DISTINCT user_id, day FROM old_rows) c;
    ELSE
        SELECT array_agg(user_id), array_agg(day) INTO _users, _days
        FROM (SELECT user_id, day FROM new_rows UNION SELECT user_id, day FROM old_rows) c;
    END IF;
    IF _users IS NOT NULL THEN
        PERFORM {REFRESH_FUNCTION}(_users, _days);
    END IF;
    RETURN NULL;
END
"""  # noqa: S608 - a function name of ours, no request data


def install_sql() -> list[str]:
    """The functions and, on each table an entry is written from, its three triggers."""
    statements = [
        f"CREATE OR REPLACE FUNCTION {REFRESH_FUNCTION}(_users text[], _days date[]) "
        f"RETURNS void LANGUAGE plpgsql AS $body${refresh_function_body()}$body$",
        f"CREATE OR REPLACE FUNCTION {TRIGGER_FUNCTION}() RETURNS trigger "
        f"LANGUAGE plpgsql AS $body${_TRIGGER_BODY}$body$",
    ]
    for table in DAILY_ENTRY_TABLES:
        for suffix, event, transition in _TRIGGERS:
            name = f"daily_entries_{suffix}"
            statements += [
                f"DROP TRIGGER IF EXISTS {name} ON {table}",
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {transition} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER_FUNCTION}()",
            ]
    return statements


def uninstall_sql() -> list[str]:
    statements = [
        f"DROP TRIGGER IF EXISTS daily_entries_{suffix} ON {table}"
        for table in DAILY_ENTRY_TABLES
        for suffix, _, _ in _TRIGGERS
    ]
    return [
        *statements,
        f"DROP FUNCTION IF EXISTS {TRIGGER_FUNCTION}()",
        f"DROP FUNCTION IF EXISTS {REFRESH_FUNCTION}(text[], date[])",
    ]


def install() -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in install_sql():
            cursor.execute(statement)


def _keys_sql(only: str = "") -> str:
    """Every (user_id, day) with a daily row or a stored entry, each table filtered by
    `only` (a WHERE clause of ours, values as parameters)."""
    return " UNION ".join(
        f"SELECT user_id, day FROM {table}{only}"  # noqa: S608 - names from our models
        for table in (*DAILY_ENTRY_TABLES, ENTRIES_TABLE)
    )


_ONLY_USERS = " WHERE user_id = ANY(%(users)s)"


def rebuild(*, user_ids: list[str] | None = None) -> int:
    """Write every entry of `user_ids` (everyone by default) again from the tables, one
    person per transaction under their lock, so the normalizer goes on meanwhile. Returns how
    many people were rebuilt. For a new install of the functions, and for repairs."""
    with connection.cursor() as cursor:
        if user_ids is None:
            everyone = " UNION ".join(
                f"SELECT DISTINCT user_id FROM {table}"  # noqa: S608 - names from our models
                for table in (*DAILY_ENTRY_TABLES, ENTRIES_TABLE)
            )
            cursor.execute(f"SELECT user_id FROM ({everyone}) u ORDER BY user_id")  # noqa: S608 - names from our models
            user_ids = [user_id for (user_id,) in cursor.fetchall()]
    statement = (
        f"SELECT {REFRESH_FUNCTION}(array_agg(user_id), array_agg(day)) "  # noqa: S608 - names from our models
        f"FROM ({_keys_sql(_ONLY_USERS)}) k"
    )
    for user_id in user_ids:
        with transaction.atomic(), connection.cursor() as cursor:
            person_lock(user_id)
            cursor.execute(statement, {"users": [user_id]})
    return len(user_ids)


def drift(*, user_ids: list[str] | None = None) -> list[tuple[str, date]]:
    """The (person, day) pairs whose stored entry is not what the tables give now (missing,
    stale, or left over), `user_ids` or everyone: empty while the triggers keep the read model
    right. Reads only; for checks (the chaos run's invariant, an operator's doubt)."""
    only = "" if user_ids is None else _ONLY_USERS
    built = daily_entries_sql("keys")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH keys AS ({_keys_sql(only)}), built AS ({built}
            )
            SELECT coalesce(b.user_id, x.user_id), coalesce(b.day, x.day)
            FROM (
                SELECT user_id, day,
                    CASE WHEN octet_length(entry) <= {ENTRY_MAX_BYTES} THEN entry END AS entry
                FROM built
            ) b
            FULL JOIN (SELECT * FROM {ENTRIES_TABLE}{only}) x
                ON x.user_id = b.user_id AND x.day = b.day
            WHERE b.user_id IS NULL OR x.user_id IS NULL OR b.entry IS DISTINCT FROM x.entry
            ORDER BY 1, 2
            """,  # noqa: S608 - names and SQL from our models and DTOs, values are parameters
            {"users": user_ids},
        )
        return [(str(user_id), day) for user_id, day in cursor.fetchall()]
