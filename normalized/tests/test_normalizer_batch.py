"""Webhook documents of one fetched batch written together: real Postgres, NATS and S3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import raw_store
from core.consumers import MessageMeta, Retriable
from core.models import DeadLetter
from core.provisioning import ProvisionReport, provision_bucket
from devstack.stack import Stack
from ingestion import rate_budget
from ingestion.models import OuraConnection, RawEvent
from normalized import services
from normalized.consumers import handle_raw_batch
from normalized.models import Activity, DailyReadiness
from normalized.tests.normalizer_helpers import (
    connect_user,
    delete_durable,
    fixture_documents,
    make_spec,
    publish,
    run,
    snapshot,
    stream_messages,
    subject_of,
    webhook_envelope,
)
from oura_simulator import OuraSimulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]


@pytest.fixture
def spec() -> Iterator[Any]:
    spec = make_spec()
    yield spec
    delete_durable(spec)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


def new_documents(
    oura: OuraSimulator, conn: OuraConnection, collection: str, count: int, first: date
) -> list[dict[str, Any]]:
    """Documents stored at the simulator (no webhook sent), and their webhook envelopes."""
    envelopes = []
    for n in range(count):
        document = oura.put_document(
            conn.provider_user_id, collection, None, emit=False, day=first + timedelta(days=n)
        )
        envelopes.append(webhook_envelope(conn, "create", collection, document["id"]))
    return envelopes


def as_batch(envelopes: list[dict[str, Any]]) -> list[tuple[bytes, MessageMeta]]:
    """The (data, meta) pairs the runner hands to the batch handler."""
    return [
        (
            json.dumps(envelope).encode(),
            MessageMeta("normalizer", subject_of(envelope), "HEALTH_RAW", seq, 1),
        )
        for seq, envelope in enumerate(envelopes, start=1)
    ]


def commits(captured: CaptureQueriesContext) -> int:
    return sum(1 for query in captured.captured_queries if query["sql"] == "COMMIT")


def test_webhooks_of_two_users_and_two_collections_are_committed_in_one_transaction(
    oura: OuraSimulator, executor: ThreadPoolExecutor
) -> None:
    first, second = connect_user(oura, "user-1"), connect_user(oura, "user-2")
    envelopes = []
    for conn in (first, second):
        envelopes += new_documents(oura, conn, "workout", 3, date(2024, 2, 1))
        envelopes += new_documents(oura, conn, "daily_readiness", 2, date(2024, 2, 1))

    with CaptureQueriesContext(connection) as captured:
        results = handle_raw_batch(as_batch(envelopes), executor)

    assert results == [None] * 10
    # The batch's writes happen on this thread: one transaction, one commit, for all ten;
    # the other commit is the batch's Oura budget units, taken together in one short
    # transaction of their own (ingestion/rate_budget.py) before the fetches.
    assert commits(captured) == 2
    budget = [q for q in captured.captured_queries if "oura_rate_limit_windows" in q["sql"]]
    assert len(budget) == 1
    for conn in (first, second):
        assert Activity.objects.filter(user_id=conn.user_id, kind="workout").count() == 3
        assert DailyReadiness.objects.filter(user_id=conn.user_id).count() == 2
    # Every row points at its own document's raw object, not at a neighbour's.
    raw = RawEvent.objects.filter(kind="document", status="accepted")
    assert raw.count() == 10
    keys = dict(raw.values_list("object_id", "object_key"))
    rows = list(Activity.objects.all()) + list(DailyReadiness.objects.all())
    assert {row.oura_id: row.raw_object_key for row in rows} == keys
    for key in keys.values():
        assert raw_store.head(key) is not None
    # One announcement per (user, collection), listing that group's ids.
    for conn in (first, second):
        announced = [
            json.loads(m) for m in stream_messages(f"health.normalized.user.{conn.user_id}.metrics")
        ]
        assert sorted((m["dataType"], len(m["ids"])) for m in announced) == [
            ("daily_readiness", 2),
            ("workout", 3),
        ]


def test_a_contract_violation_dead_letters_only_its_message_and_the_rest_of_the_batch_lands(
    oura: OuraSimulator, spec: Any
) -> None:
    conn = connect_user(oura)
    good = new_documents(oura, conn, "workout", 3, date(2024, 4, 1))
    (workout,) = fixture_documents("workout")[:1]
    broken = dict(workout, intensity=None, calories="SECRET-VALUE-123")
    oura.put_document(conn.provider_user_id, "workout", broken, emit=False)
    bad = webhook_envelope(conn, "create", "workout", workout["id"])
    for envelope in [good[0], bad, *good[1:]]:
        publish(envelope)

    stats = run(spec)

    assert (stats.received, stats.acked, stats.naked, stats.dead_lettered) == (4, 4, 0, 1)
    dead = DeadLetter.objects.get()
    assert (dead.error_type, json.loads(bytes(dead.data))["event_id"]) == (
        "ContractViolation",
        bad["event_id"],
    )
    assert "calories" in dead.reason
    assert "SECRET-VALUE-123" not in dead.reason
    assert set(Activity.objects.values_list("oura_id", flat=True)) == {
        e["notification"]["object_id"] for e in good
    }
    # The broken document is kept raw with the others, for inspection and the replay.
    assert RawEvent.objects.filter(kind="document").count() == 4


def test_redelivering_the_same_batch_leaves_identical_rows(
    oura: OuraSimulator, executor: ThreadPoolExecutor
) -> None:
    first, second = connect_user(oura, "user-1"), connect_user(oura, "user-2")
    envelopes = new_documents(oura, first, "sleep", 3, date(2024, 5, 1))
    envelopes += new_documents(oura, second, "daily_readiness", 3, date(2024, 5, 1))
    batch = as_batch(envelopes)
    assert handle_raw_batch(batch, executor) == [None] * 6
    rows = snapshot()
    raw = sorted(RawEvent.objects.values_list("event_id", "object_key"))

    # The same batch again (a crash before the acks), and once more with each message twice.
    assert handle_raw_batch(batch, executor) == [None] * 6
    assert handle_raw_batch(batch + batch, executor) == [None] * 12

    assert snapshot() == rows
    assert sum(len(found) for found in rows.values()) == 6
    assert sorted(RawEvent.objects.values_list("event_id", "object_key")) == raw


def test_documents_of_one_key_in_one_call_keep_the_one_observed_last(oura: OuraSimulator) -> None:
    conn = connect_user(oura)
    doc = fixture_documents("daily_readiness")[0]
    now = datetime.now(UTC)
    result = services.normalize_documents(
        user_id=conn.user_id,
        collection="daily_readiness",
        documents=[dict(doc, score=91), dict(doc, score=40)],
        raw_object_key=["newer", "older"],
        observed_at=[now, now - timedelta(minutes=5)],
    )
    assert result.written_ids == [doc["id"]]
    row = DailyReadiness.objects.get()
    assert (row.score, row.raw_object_key) == (91, "newer")


@pytest.mark.services
def test_s3_down_retries_the_batch_and_leaves_no_rows_and_no_raw_index_rows(
    oura: OuraSimulator, executor: ThreadPoolExecutor, stack: Stack
) -> None:
    first, second = connect_user(oura, "user-1"), connect_user(oura, "user-2")
    envelopes = new_documents(oura, first, "workout", 2, date(2024, 6, 1))
    envelopes += new_documents(oura, second, "daily_readiness", 2, date(2024, 6, 1))
    stack.stop("s3")
    try:
        results = handle_raw_batch(as_batch(envelopes), executor)
        assert [(type(r), getattr(r, "error_type", "")) for r in results] == [
            (Retriable, "RawStoreUnavailable")
        ] * 4
        assert not RawEvent.objects.exists()
        assert snapshot() == {name: [] for name in snapshot()}
    finally:
        stack.start("s3")
        raw_store.reset_client()
        provision_bucket(ProvisionReport())

    assert handle_raw_batch(as_batch(envelopes), executor) == [None] * 4
    assert Activity.objects.count() == 2
    assert DailyReadiness.objects.count() == 2
    assert RawEvent.objects.filter(kind="document").count() == 4


@pytest.mark.services
def test_one_failed_put_retries_only_its_message_and_the_others_of_the_batch_commit(
    oura: OuraSimulator, executor: ThreadPoolExecutor, stack: Stack
) -> None:
    conn = connect_user(oura)
    (stored_before,) = new_documents(oura, conn, "workout", 1, date(2024, 7, 1))
    assert handle_raw_batch(as_batch([stored_before]), executor) == [None]
    (new,) = new_documents(oura, conn, "workout", 1, date(2024, 7, 2))
    Activity.objects.all().delete()  # so the row written below can only come from this batch

    # With S3 down, the unchanged document needs no PUT (its bytes are stored already) and
    # the new one cannot be PUT: exactly one PUT of the batch fails.
    stack.stop("s3")
    try:
        results = handle_raw_batch(as_batch([stored_before, new]), executor)
    finally:
        stack.start("s3")
        raw_store.reset_client()
        provision_bucket(ProvisionReport())

    assert results[0] is None
    assert isinstance(results[1], Retriable)
    assert results[1].error_type == "RawStoreUnavailable"
    assert list(Activity.objects.values_list("oura_id", flat=True)) == [
        stored_before["notification"]["object_id"]
    ]
    # The failed document's index row went with its PUT; the reused one is still the only one.
    assert list(RawEvent.objects.filter(kind="document").values_list("object_id", flat=True)) == [
        stored_before["notification"]["object_id"]
    ]


def test_a_batch_looks_up_its_connections_once_and_takes_its_oura_budget_in_one_statement(
    oura: OuraSimulator, executor: ThreadPoolExecutor, settings: Any
) -> None:
    # One request per webhook here; several of one user and type read by one range request
    # are test_coalesced_fetches.py's.
    settings.OURA_COALESCE_FETCHES = False
    first, second = connect_user(oura, "user-1"), connect_user(oura, "user-2")
    envelopes = new_documents(oura, first, "workout", 3, date(2024, 9, 1))
    envelopes += new_documents(oura, second, "workout", 3, date(2024, 9, 1))
    fetches_before = len(oura.requests)

    with CaptureQueriesContext(connection) as captured:
        assert handle_raw_batch(as_batch(envelopes), executor) == [None] * 6

    main_thread = [query["sql"] for query in captured.captured_queries]
    assert sum("oura_connections" in sql for sql in main_thread) == 1
    assert sum("oura_rate_limit_windows" in sql for sql in main_thread) == 1
    # Six units for six fetches: had the fetches on the worker threads also asked Postgres,
    # the window would count twelve.
    assert len(oura.requests) - fetches_before == 6
    assert rate_budget.used_in_current_window() == 6
    assert Activity.objects.filter(kind="workout").count() == 6


def test_a_429_in_a_batch_stops_the_rest_of_the_batch_from_calling_oura(
    oura: OuraSimulator, settings: Any
) -> None:
    settings.OURA_COALESCE_FETCHES = False  # by id; test_coalesced_fetches.py: 429 on a range
    conn = connect_user(oura)
    envelopes = new_documents(oura, conn, "workout", 5, date(2024, 10, 1))
    oura.config.rate_limit_per_token = 2  # the third fetch gets a 429 with a long Retry-After
    fetches_before = len(oura.requests)

    with ThreadPoolExecutor(1) as one_at_a_time:
        results = handle_raw_batch(as_batch(envelopes), one_at_a_time)

    assert results[:2] == [None, None]
    assert [getattr(result, "error_type", None) for result in results[2:]] == [
        "OuraRateLimited",
        "BudgetExhausted",  # the 429 cancelled the batch's units: Postgres knows of the pause
        "BudgetExhausted",
    ]
    assert len(oura.requests) - fetches_before == 3
    assert Activity.objects.count() == 2
