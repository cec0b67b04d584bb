"""Fixtures shared by every app's tests. Services are real: see devstack/pytest_plugin.py."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient

from core import bus, raw_store
from core.provisioning import STREAMS, ProvisionReport, provision_bucket, provision_streams
from devstack.pytest_plugin import embedded_stack
from devstack.stack import Stack
from oura_simulator import OuraSimulator
from oura_simulator.config import SimulatorConfig


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's, plus a garbage collection before the test database is dropped.

    Threads that used the ORM and ended without closing their connection (the live server's
    request threads, in-process workers) leave Django connection objects that only the
    cycle collector frees. Until it runs, their sessions keep the database from being
    dropped: "database ... is being accessed by other users" at the end of every run (seen:
    7 such sessions, none after a collection).
    """
    yield
    gc.collect()


@pytest.fixture(scope="session", autouse=True)
def _provisioned_bus_and_bucket() -> Iterator[None]:
    report = ProvisionReport()
    provision_streams(report)
    provision_bucket(report)
    yield
    bus.reset_bus()  # close before the services stop, or it keeps reconnecting


@pytest.fixture
def stack() -> Iterator[Stack]:
    """The embedded services, for tests that stop one and start it again.

    Every service is running again after the test, whatever the test did.
    """
    current = embedded_stack()
    if current is None:
        pytest.skip(
            "needs the embedded services: DATABASE_URL/NATS_URL/S3_ENDPOINT_URL point "
            "at external servers this test must not stop"
        )
    yield current
    restarted = [name for name, ok in current.status().items() if not ok]
    current.up()
    if "s3" in restarted:
        raw_store.reset_client()
        provision_bucket(ProvisionReport())  # moto keeps objects in memory only
    if "nats" in restarted:
        bus.reset_bus()
    if "postgres" in restarted:
        connections.close_all()


def purge_streams() -> None:
    async def _purge() -> None:
        nc = await bus.connect(name="tests")
        try:
            js = nc.jetstream()
            for spec in STREAMS:
                await js.purge_stream(spec.name)
        finally:
            await nc.close()

    asyncio.run(_purge())


@pytest.fixture
def clean_streams() -> None:
    """Start with empty streams, so a test reads only what it published."""
    purge_streams()


@pytest.fixture
def subprocess_env(transactional_db: None) -> dict[str, str]:
    """Environment for a `manage.py` child process that must see this test's database.

    pytest-django renames the database (test_<name>); a child process reading DATABASE_URL
    would otherwise open the development one. Tests using it must be transactional, so the
    child sees committed rows.
    """
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    url = f"postgresql://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "HEALTH_ENV": "test",
        "HEALTH_EMBEDDED_SERVICES": "false",
        "LOG_FORMAT": "json",
    }


@pytest.fixture
def oura(settings: Any, oura_sim_config: SimulatorConfig) -> Iterator[OuraSimulator]:
    """The Oura simulator, with the project's settings pointed at it.

    It simulates the app our settings describe (client id and secret), so tokens, webhook
    signatures and subscription calls line up exactly as they would against Oura.
    """
    oura_sim_config.client_id = settings.OURA_CLIENT_ID
    oura_sim_config.client_secret = settings.OURA_CLIENT_SECRET
    sim = OuraSimulator(oura_sim_config)
    base = sim.start()
    settings.OURA_API_BASE_URL = base
    settings.OURA_AUTHORIZE_URL = f"{base}/oauth/authorize"
    settings.OURA_TOKEN_URL = f"{base}/oauth/token"
    settings.OURA_REVOKE_URL = f"{base}/oauth/revoke"
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def make_api_key(db: None) -> Callable[..., str]:
    from access.services import api_key_create

    def make(
        scopes: tuple[str, ...] = ("health:read",),
        users: tuple[str, ...] = (),
        **kwargs: object,
    ) -> str:
        kwargs.setdefault("all_users", not users)  # no users named: a key for everyone
        return api_key_create(
            name="test",
            scopes=list(scopes),
            user_ids=list(users),
            **kwargs,  # type: ignore[arg-type]  # test pass-through of keyword options
        ).secret

    return make


@pytest.fixture(autouse=True)
def _forget_coalescing_hit_rates() -> Iterator[None]:
    """Each test starts with no memory of how well range requests served (normalized/
    coalesce.py keeps it per process): one test's misses must not turn another's ranges off."""
    from normalized import coalesce

    coalesce.forget_hit_rates()
    yield
    coalesce.forget_hit_rates()


@pytest.fixture(autouse=True)
def _stop_webhook_committer() -> Iterator[None]:
    """The webhook path's group committer (ingestion/webhook_commit.py) keeps a thread and a
    database connection per process; each test starts without one and leaves none behind
    (a connection left open would keep the test database from being dropped)."""
    from ingestion.webhook_commit import stop_group_committer

    yield
    stop_group_committer()
