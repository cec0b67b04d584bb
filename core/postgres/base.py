"""Django's PostgreSQL backend, with introspection that lists tables in schema `health` and
a connection health check without a round trip.

Our models name their tables `health"."<name>` (core.db.health_table). Stock introspection
lists only the tables on the search_path, so Django would not see ours as existing: test
flushes would skip them and leave rows behind between transactional tests. Listing them
under the same quoted name the models use makes both sides agree.
"""

from __future__ import annotations

import select
from typing import Any

from django.db.backends.base.introspection import TableInfo
from django.db.backends.postgresql import base, creation, introspection
from psycopg import pq


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


class DatabaseCreation(creation.DatabaseCreation):
    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> str:
        """The throw-away test database lets Django's flush TRUNCATE the audit log.

        The audit log refuses TRUNCATE (audit migration 0002) unless the session says
        health.audit_allow_truncate = 'on'. Transactional tests are isolated by a flush, which
        truncates every table; this database-level default is set here and nowhere else.
        """
        # Private in the stubs, public in effect: the hook Django's own backends override.
        name: str = super()._create_test_db(  # type: ignore[misc]  # private in the stubs
            verbosity, autoclobber, keepdb
        )
        with self.connection._nodb_cursor() as cursor:
            cursor.execute(
                f"ALTER DATABASE {self.connection.ops.quote_name(name)} "
                "SET health.audit_allow_truncate = 'on'"
            )
        return name


class DatabaseWrapper(base.DatabaseWrapper):
    introspection_class = DatabaseIntrospection
    creation_class = DatabaseCreation

    def is_usable(self) -> bool:
        """Whether the persistent connection can take a query, without sending one.

        With CONN_HEALTH_CHECKS Django calls this before each request's first query, and the
        stock check sends `SELECT 1`: a round trip, and on the webhook path (two statements
        a request) a third of the database work. Between requests the connection is idle,
        and an idle Postgres connection receives nothing unless the server is ending it
        (restart, shutdown, pg_terminate_backend, idle timeout: it sends an error, then
        closes). So a socket with anything to read, or at EOF, is a connection to replace.

        What this cannot see is a peer that vanished without a word (host crash, network
        cut); the stock check would wait out a TCP timeout there. The next query fails
        instead, Django discards the connection at the end of that request, and the
        webhook path answers 503 so that Oura retries.
        """
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        status = connection.pgconn.transaction_status
        if status in (pq.TransactionStatus.UNKNOWN, pq.TransactionStatus.INERROR):
            return False  # lost, or a failed transaction (where SELECT 1 would fail too)
        poller = select.poll()
        try:
            poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
            events = poller.poll(0)
        except (OSError, ValueError):
            return False
        return not events
