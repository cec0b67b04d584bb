"""The Oura circuit breaker: its transitions in Postgres, the race for the probe, and the
client that stops calling Oura while it is open. Oura is the simulator."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import connection, connections

from ingestion import circuit_breaker, oura_client
from ingestion.circuit_breaker import CircuitOpen, Permit, State
from ingestion.models import CircuitBreaker, OuraConnection
from ingestion.scrape_metrics import circuit_state_family
from oura_simulator import OuraSimulator

pytestmark = pytest.mark.django_db(transaction=True)

DATA = circuit_breaker.USERCOLLECTION


@pytest.fixture(autouse=True)
def breaker_settings(settings) -> None:
    settings.OURA_BREAKER_FAILURES = 3
    settings.OURA_BREAKER_OPEN_S = 30.0
    settings.OURA_BREAKER_MAX_OPEN_S = 100.0


@pytest.fixture
def client(settings) -> Iterator[oura_client.OuraClient]:
    """A client that would retry 10 times: the breaker, not the retries, must stop it."""
    settings.OURA_MAX_RETRIES = 10
    oura_client._client = None
    yield oura_client.get_client()
    oura_client._client = None


def fail(times: int, endpoint: str = DATA) -> float:
    open_s = 0.0
    for _ in range(times):
        open_s = circuit_breaker.record_failure(Permit(endpoint))
    return open_s


def end_open_period(endpoint: str = DATA) -> None:
    """What waiting out `opened_until` does, without the wait."""
    CircuitBreaker.objects.filter(endpoint=endpoint).update(opened_until="2000-01-01T00:00Z")


def connect(oura: OuraSimulator) -> OuraConnection:
    from normalized.tests.normalizer_helpers import connect_user

    return connect_user(oura)


# --- transitions ---------------------------------------------------------------------------


def test_it_opens_after_n_consecutive_failures_and_refuses_until_its_time_is_up() -> None:
    assert circuit_breaker.admit(DATA, lease_s=5) == Permit(DATA)
    assert fail(2) == 0.0  # below the threshold: still closed
    assert circuit_breaker.read(DATA).state == State.CLOSED

    assert fail(1) == 30.0

    with pytest.raises(CircuitOpen) as refused:
        circuit_breaker.admit(DATA, lease_s=5)
    assert 29 < refused.value.retry_after_s <= 30
    assert circuit_breaker.read(DATA).state == State.OPEN
    # Other endpoint classes are not affected by an outage of the data routes.
    assert circuit_breaker.admit(circuit_breaker.OAUTH, lease_s=5) == Permit(circuit_breaker.OAUTH)


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    fail(2)
    circuit_breaker.record_success(Permit(DATA))
    fail(2)
    assert circuit_breaker.read(DATA).state == State.CLOSED


def test_a_failed_probe_reopens_it_for_twice_as_long_up_to_the_cap() -> None:
    fail(3)
    opened = []
    for _ in range(4):
        end_open_period()
        assert circuit_breaker.read(DATA).state == State.HALF_OPEN
        permit = circuit_breaker.admit(DATA, lease_s=5)
        assert permit.probe
        opened.append(circuit_breaker.record_failure(permit))
    assert opened == [60.0, 100.0, 100.0, 100.0]  # 30 s first, then doubling, capped at 100 s


def test_a_successful_probe_closes_it_for_everyone() -> None:
    fail(3)
    end_open_period()
    probe = circuit_breaker.admit(DATA, lease_s=5)
    assert probe.probe
    circuit_breaker.record_success(probe)

    row = CircuitBreaker.objects.get(endpoint=DATA)
    assert (row.state, row.consecutive_failures, row.open_streak) == ("closed", 0, 0)
    assert circuit_breaker.admit(DATA, lease_s=5) == Permit(DATA)
    assert fail(3) == 30.0  # the next outage starts from the base open time again


def test_while_a_probe_runs_others_wait_for_its_verdict_or_are_refused() -> None:
    fail(3)
    end_open_period()
    probe = circuit_breaker.admit(DATA, lease_s=5)
    with pytest.raises(CircuitOpen) as refused:
        circuit_breaker.admit(DATA, lease_s=5)  # no wait: refused while the probe runs
    assert 4 < refused.value.retry_after_s <= 5

    verdict = threading.Timer(0.3, circuit_breaker.record_success, [probe])
    verdict.start()
    try:
        assert circuit_breaker.admit(DATA, lease_s=5, wait_for_probe_s=5) == Permit(DATA)
    finally:
        verdict.join()
        connections.close_all()


def test_a_probe_whose_process_died_frees_its_lease_when_it_expires() -> None:
    fail(3)
    end_open_period()
    assert circuit_breaker.admit(DATA, lease_s=5).probe  # ...and this caller never reports
    CircuitBreaker.objects.filter(endpoint=DATA).update(probe_lease_until="2000-01-01T00:00Z")
    assert circuit_breaker.admit(DATA, lease_s=5).probe


def test_of_many_processes_racing_for_the_probe_exactly_one_wins() -> None:
    fail(3)
    end_open_period()
    racers = 8
    start = threading.Barrier(racers)
    results: list[str] = []

    def race() -> None:
        start.wait()
        try:
            permit = circuit_breaker.admit(DATA, lease_s=30)
            results.append("probe" if permit.probe else "plain")
        except CircuitOpen:
            results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["probe"] + ["refused"] * (racers - 1)


def test_its_state_is_a_metric_per_endpoint_class() -> None:
    fail(3)
    fail(3, circuit_breaker.OAUTH)
    end_open_period(circuit_breaker.OAUTH)

    (family,) = circuit_state_family()

    assert family.name == "oura_circuit_state"
    values = {sample.labels["endpoint"]: sample.value for sample in family.samples}
    assert values == {"usercollection": 2, "oauth": 1, "webhook_subscription": 0}


def test_the_normalizer_pauses_while_the_data_routes_breaker_is_open() -> None:
    assert circuit_breaker.normalizer_pause() == 0.0
    fail(3)
    assert 29 < circuit_breaker.normalizer_pause() <= 30
    end_open_period()
    assert circuit_breaker.normalizer_pause() == 0.0  # a probe is due: fetch, someone probes
    circuit_breaker.admit(DATA, lease_s=20)
    assert 19 < circuit_breaker.normalizer_pause() <= 20  # another process's probe is running


def test_endpoint_labels_map_to_coarse_classes() -> None:
    assert circuit_breaker.breaker_for("sleep") == "usercollection"
    assert circuit_breaker.breaker_for("personal_info") == "usercollection"
    assert circuit_breaker.breaker_for("oauth_token") == "oauth"
    assert circuit_breaker.breaker_for("oauth_revoke") == "oauth"
    assert circuit_breaker.breaker_for("webhook_subscription") == "webhook_subscription"


# --- the client ----------------------------------------------------------------------------


def test_the_client_stops_its_retries_when_the_breaker_opens_and_then_does_not_call_oura(
    oura: OuraSimulator, client: oura_client.OuraClient
) -> None:
    conn = connect(oura)
    document = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    oura.config.error_rate = 1.0
    oura.config.error_statuses = (503,)
    oura.reset_requests()

    with pytest.raises(oura_client.OuraUnavailable) as failed:
        client.get_document(conn, "workout", document["id"])
    assert not isinstance(failed.value, oura_client.OuraCircuitOpen)
    assert failed.value.retry_after_s == 30.0
    assert [r.status for r in oura.requests] == [503, 503, 503]  # 3 to open, not 11

    for _ in range(5):
        with pytest.raises(oura_client.OuraCircuitOpen):
            client.get_document(conn, "workout", document["id"])
    assert len(oura.requests) == 3  # refused without calling Oura

    end_open_period()
    with pytest.raises(oura_client.OuraCircuitOpen) as reopened:
        client.get_document(conn, "workout", document["id"])  # the probe, which fails
    assert reopened.value.retry_after_s == 60.0
    assert len(oura.requests) == 4

    oura.config.error_rate = 0.0
    end_open_period()
    assert client.get_document(conn, "workout", document["id"]) == document  # probe succeeds
    assert circuit_breaker.read(DATA).state == State.CLOSED
    assert len(oura.requests) == 5


def test_4xx_and_429_answers_do_not_count_as_failures(
    oura: OuraSimulator, client: oura_client.OuraClient
) -> None:
    conn = connect(oura)
    document = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    oura.config.force_next_statuses = [503, 503, 429, 503, 503]

    assert client.get_document(conn, "workout", document["id"]) == document

    assert circuit_breaker.read(DATA).state == State.CLOSED
    assert client.get_document(conn, "workout", "no-such-document") is None  # a 404
    assert CircuitBreaker.objects.get(endpoint=DATA).consecutive_failures == 0


def test_reset_all_closes_every_breaker_and_forgets_the_failures() -> None:
    """`make run` calls it when it starts a fresh simulator: the last run's failures were the
    old simulator being stopped, and would refuse the new run's first calls."""
    fail(3)  # open
    fail(2, circuit_breaker.OAUTH)  # closed, two failures counted

    circuit_breaker.reset_all()

    assert circuit_breaker.admit(DATA, lease_s=5) == Permit(DATA)
    assert circuit_breaker.read(DATA).state == State.CLOSED
    assert fail(2, circuit_breaker.OAUTH) == 0.0  # counting starts again from zero
