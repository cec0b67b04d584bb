"""Django's PostgreSQL backend, with introspection that lists tables in schema `health`.

Our models name their tables `health"."<name>` (core.db.health_table). Stock introspection
lists only the tables on the search_path, so Django would not see ours as existing: test
flushes would skip them and leave rows behind between transactional tests. Listing them
under the same quoted name the models use makes both sides agree.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.introspection import TableInfo
from django.db.backends.postgresql import base, introspection


class DatabaseIntrospection(introspection.DatabaseIntrospection):
    def get_table_list(self, cursor: Any) -> list[TableInfo]:
        tables: list[TableInfo] = super().get_table_list(cursor)
        cursor.execute(
            """
            SELECT c.relname, CASE WHEN c.relkind IN ('m', 'v') THEN 'v' ELSE 't' END
              FROM pg_catalog.pg_class c
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'health' AND c.relkind IN ('r', 'p', 'v', 'm')
            """
        )
        tables += [TableInfo(f'health"."{name}', kind) for name, kind in cursor.fetchall()]
        return tables


class DatabaseWrapper(base.DatabaseWrapper):
    introspection_class = DatabaseIntrospection
