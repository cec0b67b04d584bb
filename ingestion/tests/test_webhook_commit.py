"""The webhook path's group commit (ingestion/webhook_commit.py): many deliveries, one
statement, one commit, one hand-off to the bus, and each request answered as if alone.

Batches are made deterministic by holding the audit chain's lock from the test's own
connection: the committer's first statement waits on it, so everything submitted meanwhile
queues up and is written by the next statement.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from django.core.cache import cache
from django.db import DataError, connection
from django.utils import timezone

from audit.models import AuditEntry
from audit.selectors import audit_chain_verify
from audit.services import CHAIN_LOCK_KEY
from core.metrics import webhook_commit_batch_size
from core.pseudonyms import person_hash
from ingestion.models import RawEvent
from ingestion.tests.webhook_helpers import connect, notification, raw_stream_messages, signed
from ingestion.webhook_commit import (
    GroupCommitter,
    Outcome,
    RecordedEvent,
    RecordRequest,
    reset_publish_breaker,
    webhook_record_batch,
)
from ingestion.webhook_services import (
    PROVIDER,
    WEBHOOK_SUBJECT,
    webhook_record_request,
    webhook_verify,
)
from privacy.models import ErasureTombstone

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh(clean_streams: None) -> Iterator[None]:
    cache.clear()
    reset_publish_breaker()
    yield
    reset_publish_breaker()


@pytest.fixture
def committer() -> Iterator[GroupCommitter]:
    committer = GroupCommitter(provider=PROVIDER, subject=WEBHOOK_SUBJECT)
    yield committer
    committer.stop()


def request_for(**overrides: Any) -> RecordRequest:
    raw, headers = signed(notification(**overrides))
    delivery = webhook_verify(body=raw, headers=headers)
    return webhook_record_request(delivery=delivery, received_at=timezone.now())


def _observations() -> list[float]:
    # The histogram's per-bucket counts (1, 2, 4, ... 64, +Inf; not cumulative here), so a
    # test can tell how many batches of which size were written while it ran.
    return [bucket.get() for bucket in webhook_commit_batch_size._buckets]


def submit_held(committer: GroupCommitter, requests: list[RecordRequest]) -> list[Future[Any]]:
    """Submit one delivery, then the rest while the first statement waits on the chain lock:
    the rest is written by one statement once the lock is released."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [CHAIN_LOCK_KEY])
        try:
            first = committer.submit(requests[0])
            # The first statement is running (waiting on the lock) once its audit insert
            # asks for the lock: pg_locks shows the waiter.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("the first batch never reached the chain lock")
            rest = [committer.submit(request) for request in requests[1:]]
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [CHAIN_LOCK_KEY])
    return [first, *rest]


def test_waiting_deliveries_share_one_statement_and_each_is_stored_audited_published(
    committer: GroupCommitter,
) -> None:
    connect()
    requests = [request_for() for _ in range(11)]
    before = _observations()
    futures = submit_held(committer, requests)
    results = [future.result(30) for future in futures]

    assert [type(outcome) for outcome, _ in results] == [RecordedEvent] * 11
    assert all(published for _, published in results)
    # Two statements: the first delivery alone, the ten that queued behind it together.
    after = _observations()
    added = [b - a for a, b in zip(before, after, strict=True)]
    assert added == [1, 0, 0, 0, 1, 0, 0, 0]  # one batch of 1, one in (8, 16]
    assert RawEvent.objects.count() == 11
    stored = {row.event_id: row for row in RawEvent.objects.all()}
    assert set(stored) == {r.event_id for r in requests}
    # One audit entry each, chained in the order the events were stored.
    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.event_id for e in entries] == [
        row.event_id for row in RawEvent.objects.order_by("id")
    ]
    assert {e.person_ref for e in entries} == {person_hash("oura-user-1", namespace="oura")}
    assert audit_chain_verify().ok
    assert sorted(m.msg_id for m in raw_stream_messages()) == sorted(
        str(r.event_id) for r in requests
    )


def test_repeats_inside_one_batch_give_one_event_and_duplicates(
    committer: GroupCommitter,
) -> None:
    connect()
    lead = request_for()
    same = request_for()
    copies = [same, same, same]
    futures = submit_held(committer, [lead, *copies])
    outcomes: list[Outcome] = [future.result(30)[0] for future in futures]

    assert isinstance(outcomes[0], RecordedEvent)
    assert isinstance(outcomes[1], RecordedEvent)
    assert outcomes[2:] == ["duplicate", "duplicate"]
    assert RawEvent.objects.filter(event_id=same.event_id).count() == 1
    assert AuditEntry.objects.filter(event_id=same.event_id).count() == 1
    assert [m.msg_id for m in raw_stream_messages()].count(str(same.event_id)) == 1


def test_an_erased_account_in_a_batch_stores_nothing_for_it_and_the_rest_as_usual(
    committer: GroupCommitter,
) -> None:
    connect()
    ErasureTombstone.objects.create(
        ref=person_hash("oura-erased", namespace="oura"), namespace="oura"
    )
    requests = [request_for(), request_for(user_id="oura-erased"), request_for()]
    outcomes = [future.result(30)[0] for future in submit_held(committer, requests)]

    assert outcomes[1] == "erased"
    assert isinstance(outcomes[0], RecordedEvent)
    assert isinstance(outcomes[2], RecordedEvent)
    assert not RawEvent.objects.filter(provider_user_id="oura-erased").exists()
    assert AuditEntry.objects.count() == 2
    assert len(raw_stream_messages()) == 2


def test_a_delivery_postgres_refuses_fails_alone_and_the_rest_of_its_batch_is_stored(
    committer: GroupCommitter,
) -> None:
    connect()
    good = [request_for(), request_for()]
    # Longer than the column: the view's checks never let this through, so it stands for
    # whatever a future row might carry that Postgres refuses.
    bad = dataclasses.replace(request_for(), data_type="x" * 500)
    futures = submit_held(committer, [good[0], bad, good[1]])

    assert isinstance(futures[0].result(30)[0], RecordedEvent)
    assert isinstance(futures[2].result(30)[0], RecordedEvent)
    with pytest.raises(DataError, match="value too long"):
        futures[1].result(30)
    assert set(RawEvent.objects.values_list("event_id", flat=True)) == {
        good[0].event_id,
        good[1].event_id,
    }
    assert AuditEntry.objects.count() == 2
    assert audit_chain_verify().ok


def test_the_batch_statement_refuses_an_event_id_twice() -> None:
    connect()
    one = request_for()
    with pytest.raises(ValueError, match="each event id once"):
        webhook_record_batch([one, one], provider=PROVIDER, subject=WEBHOOK_SUBJECT)
    assert not RawEvent.objects.exists()


def test_a_lone_delivery_is_written_at_once_and_the_idle_committer_lets_its_connection_go(
    committer: GroupCommitter,
) -> None:
    connect()
    outcome, published = committer.submit(request_for()).result(30)
    assert isinstance(outcome, RecordedEvent)
    assert published

    # After IDLE_CLOSE_S without deliveries the committer's backend is gone: no session of
    # this database has the batch statement as its last query any more (other tests'
    # sessions may still be open, so they are not counted).
    def committer_sessions() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND query LIKE %s",
                ["%WITH input AS (%unnest(%"],
            )
            return int(cursor.fetchone()[0])

    assert committer_sessions() == 1  # right after its statement, within IDLE_CLOSE_S
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if committer_sessions() == 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the idle committer still holds a connection")


def test_concurrent_submissions_from_many_threads_all_land_once(
    committer: GroupCommitter,
) -> None:
    connect()
    requests = [request_for() for _ in range(60)]
    results: list[Any] = []
    lock = threading.Lock()

    def deliver(chunk: list[RecordRequest]) -> None:
        for request in chunk:
            result = committer.submit(request).result(30)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=deliver, args=(requests[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(results) == 60
    assert all(isinstance(outcome, RecordedEvent) and ok for outcome, ok in results)
    assert RawEvent.objects.count() == 60 == AuditEntry.objects.count()
    assert len(raw_stream_messages()) == 60
    assert audit_chain_verify().ok
