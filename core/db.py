"""Helpers for models that live in the Postgres schema `health`."""


def health_table(name: str) -> str:
    """A db_table in schema `health`.

    Django has no schema option; quoting the dot is the well-known way to get
    `"health"."name"` into every statement it generates.
    """
    return f'health"."{name}'
