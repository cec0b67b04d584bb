"""Helpers for models that live in the Postgres schema `health`."""


def health_table(name: str) -> str:
    """A db_table in schema `health`.

    Django has no schema option; quoting the dot is the well-known way to get
    `"health"."name"` into every statement it generates.
    """
    return f'health"."{name}'


def person_lock(user_id: str) -> None:
    """Serialise, until the transaction ends, every write of one person's data across
    processes: normalized upserts, backfill pages, and an erasure (which holds the same key
    at session level for its whole run). Other people proceed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"norm:{user_id}"])
