"""Fixtures of the jobs tests: a connected user at the simulator, the dramatiq broker on the
test database, and readers for what a backfill leaves in S3, Postgres and JetStream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from dramatiq.middleware import default_middleware
from dramatiq_postgres import PostgresBroker
from dramatiq_postgres.django.apps import connection_kwargs
from dramatiq_postgres.django.middleware import DbConnectionsMiddleware
from nats.js.errors import NotFoundError

from core import bus, raw_store
from ingestion import crypto
from ingestion.models import OuraConnection, RawEvent
from oura_simulator import OuraSimulator, SimulatorConfig

HISTORY_END = date(2026, 11, 30)
"""The last day of every simulated history here, and the `today` backfills end on. Fixed, so
that the range a test asks for and the history the simulator serves are the same on any date
and at any time of day (a test running across midnight included)."""


@pytest.fixture
def oura_sim_config() -> SimulatorConfig:
    return SimulatorConfig(history_end=HISTORY_END.isoformat())


@pytest.fixture
def broker(transactional_db: None) -> Iterator[PostgresBroker]:
    """The dramatiq-postgres broker, on the test database, with run_backfill declared.

    The broker the app built at start-up points at the database named before pytest-django
    renamed it, so every jobs test rebinds the actor to one that sees the test database.
    """
    from jobs.actors import run_backfill

    broker_settings: dict[str, Any] = settings.DRAMATIQ_BROKER
    options: dict[str, Any] = dict(broker_settings["OPTIONS"])
    test_broker = PostgresBroker(
        url=connection_kwargs(),
        middleware=[m() for m in default_middleware] + [DbConnectionsMiddleware()],
        **options,
    )
    previous_broker, previous_actor_broker = dramatiq.get_broker(), run_backfill.broker
    dramatiq.set_broker(test_broker)
    test_broker.declare_actor(run_backfill)
    run_backfill.broker = test_broker
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dramatiq.queue")
        cursor.execute("DELETE FROM dramatiq.worker")
    try:
        yield test_broker
    finally:
        run_backfill.broker = previous_actor_broker
        dramatiq.set_broker(previous_broker)
        test_broker.close()


@pytest.fixture(autouse=True)
def _jobs_broker(request: pytest.FixtureRequest) -> None:
    # Every test that writes jobs commits them, and job_start enqueues on commit.
    if "transactional_db" in request.fixturenames or request.node.get_closest_marker("django_db"):
        request.getfixturevalue("broker")


def connect_user(oura: OuraSimulator, *, user_id: str = "user-1", history_days: int = 800,
                 scopes: list[str] | None = None) -> tuple[OuraConnection, str]:  # fmt: skip
    """A sim user with history, and our connection to it (tokens encrypted, like connect)."""
    sim_user = oura.add_user(history_days=history_days)
    tokens = oura.issue_tokens(sim_user.oura_user_id, scopes=scopes)
    conn = OuraConnection.objects.create(
        user_id=user_id,
        provider_user_id=sim_user.oura_user_id,
        scopes=[s.removeprefix("extapi:") for s in str(tokens.get("scope", "")).split()],
        access_token_enc=crypto.encrypt(tokens["access_token"]),
        refresh_token_enc=crypto.encrypt(tokens["refresh_token"]),
        access_token_expires_at=timezone.now() + timedelta(seconds=int(tokens["expires_in"])),
    )
    return conn, sim_user.oura_user_id


def day_bounds(start: Any, end: Any) -> tuple[datetime, datetime]:
    """The instants a [start, end] day range covers, as the backfill defines it."""
    return (
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, 23, 59, 59, tzinfo=UTC),
    )


def doc_key(doc: dict[str, Any]) -> str:
    return str(doc.get("id") or doc.get("timestamp") or doc.get("day"))


def stored_documents(user_id: str) -> dict[str, list[str]]:
    """Per collection, the document ids inside every page stored in S3 for the user."""
    out: dict[str, list[str]] = {}
    for row in RawEvent.objects.filter(user_id=user_id, kind=RawEvent.Kind.PAGE):
        body = json.loads(raw_store.get(row.object_key))
        assert raw_store.head(row.object_key) is not None
        out.setdefault(row.data_type, []).extend(doc_key(d) for d in body["data"])
    return out


def raw_messages(
    subject_prefix: str = "health.raw.oura.",
) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """Every message on HEALTH_RAW under the prefix: (subject, headers, body)."""

    async def read() -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        nc = await bus.connect(name="jobs-tests")
        try:
            js = nc.jetstream()
            info = await js.stream_info("HEALTH_RAW")
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg("HEALTH_RAW", seq)
                except NotFoundError:  # a purged or deleted sequence
                    msg = None
                if msg is not None and msg.subject and msg.subject.startswith(subject_prefix):
                    found.append(
                        (msg.subject, dict(msg.headers or {}), json.loads(msg.data or b""))
                    )
            return found
        finally:
            await nc.close()

    return asyncio.run(read())
