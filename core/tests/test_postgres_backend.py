"""core.postgres: the connection health check that needs no round trip."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper

pytestmark = pytest.mark.django_db


@pytest.fixture
def other() -> Iterator[BaseDatabaseWrapper]:
    """A second connection to the test database, so ending it spares the test's own."""
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def _last_query_of(pid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return str(row[0]) if row else ""


def _terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_live_idle_connection_is_usable_and_the_check_sends_nothing(other):
    pid = other.connection.info.backend_pid
    with other.cursor() as cursor:
        cursor.execute("SELECT 42 /* the last statement */")

    assert other.is_usable()
    assert other.is_usable()
    # pg_stat_activity shows a backend's last statement: still ours, so no SELECT 1 went out.
    assert _last_query_of(pid) == "SELECT 42 /* the last statement */"


def test_a_connection_the_server_ended_is_not_usable_and_is_replaced(other):
    pid = other.connection.info.backend_pid

    _terminate(pid)
    deadline = time.monotonic() + 5
    while other.is_usable() and time.monotonic() < deadline:
        time.sleep(0.05)  # the server ends the backend asynchronously

    assert not other.is_usable()
    other.health_check_enabled = True
    other.health_check_done = False
    other.close_if_health_check_failed()
    assert other.connection is None
    with other.cursor() as cursor:  # a new connection, transparently
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_a_closed_connection_is_not_usable(other):
    other.connection.close()

    assert not other.is_usable()
