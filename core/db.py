"""Helpers for models that live in the Postgres schema `health`."""

from typing import Literal


def health_table(name: str) -> str:
    """A db_table in schema `health`.

    Django has no schema option; quoting the dot is the well-known way to get
    `"health"."name"` into every statement it generates.
    """
    return f'health"."{name}'


_PERSON_LOCK_SQL: dict[str, str] = {
    "transaction": "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
    "session": "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
    "release": "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
}


def person_lock(
    user_id: str, *, scope: Literal["transaction", "session", "release"] = "transaction"
) -> None:
    """Serialise every write of one person's data across processes: normalized upserts and
    backfill pages take it until their transaction ends; an erasure holds the same key at
    session level ("session", then "release") for its whole run. Other people proceed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_PERSON_LOCK_SQL[scope], [f"norm:{user_id}"])
