"""An Oura outage under the circuit breaker: the normalizer stops fetching instead of
hammering Oura and burning deliveries, and everything lands once Oura is back.

The issue's scenario is a 60 s outage with the production timings (5 failures, open 30 s
doubling to 300 s); the suite must stay fast, so this runs the same scenario scaled down: a
10 s outage with the breaker open 1 s, doubling to 4 s. The 60 s version is bench/chaos.py's.
"""

from __future__ import annotations

import gc
import threading
import time
from datetime import date, timedelta

import pytest
from django.db import connections

from core.consumers import RunStats, run_consumer
from core.models import DeadLetter
from ingestion import circuit_breaker, oura_client
from normalized.models import Activity
from normalized.tests.normalizer_helpers import (
    connect_user,
    delete_durable,
    make_spec,
    publish,
    webhook_envelope,
)
from oura_simulator import OuraSimulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]

OUTAGE_S = 10.0
DOCUMENTS = 30
CONCURRENCY = 4


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_during_an_oura_outage_oura_sees_a_handful_of_probes_and_nothing_is_dead_lettered(
    oura: OuraSimulator, settings
) -> None:
    settings.OURA_BREAKER_FAILURES = 5
    settings.OURA_BREAKER_OPEN_S = 1.0
    settings.OURA_BREAKER_MAX_OPEN_S = 4.0
    # Every failed fetch is a nak, retried after 0.2 s, with MaxDeliver 20: without the
    # breaker, a 10 s outage would dead-letter every message (20 deliveries in ~4 s).
    settings.OURA_MAX_RETRIES = 0
    oura_client._client = None
    spec = make_spec(retry_delays_s=(0.2,), max_deliver=20)
    conn = connect_user(oura)
    envelopes = []
    for n in range(DOCUMENTS):
        document = oura.put_document(
            conn.provider_user_id, "workout", None, emit=False,
            day=date(2024, 5, 1) + timedelta(days=n),
        )  # fmt: skip
        envelopes.append(webhook_envelope(conn, "create", "workout", document["id"]))
    oura.config.error_rate = 1.0  # the outage: every data route answers 503
    oura.config.error_statuses = (503,)
    oura.reset_requests()
    for envelope in envelopes:
        publish(envelope)

    stop = threading.Event()
    results: list[RunStats] = []

    def consume() -> None:
        try:
            results.append(run_consumer(spec, concurrency=CONCURRENCY, should_stop=stop.is_set))
        finally:
            connections.close_all()

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        time.sleep(OUTAGE_S)
        oura.config.error_rate = 0.0
        recovered_at = time.time()
        wait_for(lambda: Activity.objects.count() == DOCUMENTS, 60, "every row after recovery")
    finally:
        stop.set()
        consumer.join(30)
        gc.collect()  # the runner's worker threads' connections: the test database is dropped
        delete_durable(spec)
        oura_client._client = None
    assert not consumer.is_alive()

    during = [r for r in oura.requests if r.timestamp < recovered_at]
    # 5 failures open it (plus what the other worker threads had in flight), then one probe
    # per open period: 1 + 2 + 4 s fit in the outage, so at most 3 or 4 probes.
    assert all(r.status == 503 for r in during)
    assert len(during) <= 5 + (CONCURRENCY - 1) + 4, [round(r.timestamp, 1) for r in during]
    # Nothing dead-lettered, every row present once, and the breaker closed again.
    (stats,) = results
    assert stats.dead_lettered == 0
    assert not DeadLetter.objects.exists()
    assert set(Activity.objects.values_list("oura_id", flat=True)) == {
        e["notification"]["object_id"] for e in envelopes
    }
    assert circuit_breaker.read(circuit_breaker.USERCOLLECTION).state == "closed"
    # Deliveries spent on the outage: the first batch (every message, fetched as the outage
    # began) once, then one message per failed probe; the rest waited in the stream.
    assert stats.naked <= DOCUMENTS + 4, stats
