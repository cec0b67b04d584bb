"""Coalesced webhook fetches (normalized/coalesce.py): several webhooks of one user and type in
one batch are read with one Oura range request, with exactly the results of one by-id fetch
each. Real Postgres, NATS and S3; Oura is the simulator, which logs every request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from audit.models import AuditEntry
from core import raw_store
from core.consumers import MessageMeta, Retriable
from core.messages import WEBHOOK_SUBJECT, RawWebhookEnvelope
from core.models import DeadLetter
from ingestion import crypto, oura_client, rate_budget
from ingestion.models import OuraConnection, RateLimitWindow, RawEvent
from normalized.consumers import WebhookBatch, handle_raw_batch
from normalized.models import Activity, DeletedDocument, SleepPeriod
from normalized.tests.normalizer_helpers import (
    ROW_MODELS,
    connect_user,
    delete_durable,
    make_spec,
    publish,
    run,
    snapshot,
    subject_of,
    webhook_envelope,
)
from oura_simulator import OuraSimulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]

RAW_FIELDS = (
    "event_id", "dedupe_key", "object_key", "sha256", "size_bytes", "user_id",
    "provider_user_id", "data_type", "event_type", "object_id", "event_time", "status", "kind",
)  # fmt: skip


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


@pytest.fixture(autouse=True)
def fresh_oura_client() -> Iterator[None]:
    """The client singleton reads its retries per request, but tests set OURA_MAX_RETRIES."""
    oura_client._client = None
    yield
    oura_client._client = None


def today() -> date:
    return datetime.now(UTC).date()


def announced(
    oura: OuraSimulator,
    conn: OuraConnection,
    collection: str,
    count: int,
    day: date | None = None,
    event_type: str = "create",
) -> list[dict[str, Any]]:
    """`count` new documents of `day` (today: what a sync announces) at the simulator, and
    the webhook envelopes that announce them now."""
    envelopes = []
    for _ in range(count):
        document = oura.put_document(
            conn.provider_user_id, collection, None, emit=False, day=day or today()
        )
        envelopes.append(webhook_envelope(conn, event_type, collection, document["id"]))
    return envelopes


def as_batch(envelopes: list[dict[str, Any]]) -> list[tuple[bytes, MessageMeta]]:
    return [
        (
            json.dumps(envelope).encode(),
            MessageMeta("normalizer", subject_of(envelope), "HEALTH_RAW", seq, 1),
        )
        for seq, envelope in enumerate(envelopes, start=1)
    ]


def data_requests(oura: OuraSimulator, since: int) -> list[str]:
    """Paths of the Oura data requests since `since` (the token endpoint is not one)."""
    return [r.path for r in oura.requests[since:] if r.path.startswith("/v2/usercollection/")]


def stored() -> tuple[dict[str, list[dict[str, Any]]], list[tuple[Any, ...]], dict[str, bytes]]:
    """Rows, raw index rows and raw object bytes: what a webhook's handling leaves behind."""
    raw = sorted(
        RawEvent.objects.filter(kind="document").values_list(*RAW_FIELDS),
        key=lambda row: (row[0], row[1]),
    )
    objects = {
        key: raw_store.get(key)
        for key in RawEvent.objects.filter(kind="document")
        .exclude(object_key="")
        .values_list("object_key", flat=True)
    }
    return snapshot(), raw, objects


def end_the_429_pause() -> None:
    """What the passing of Retry-After does, without waiting for it."""
    RateLimitWindow.objects.update(blocked_until=None)


def forget_everything() -> None:
    """Back to before the webhooks: no rows, raw index rows, raw objects or tombstones."""
    keys = list(RawEvent.objects.exclude(object_key="").values_list("object_key", flat=True))
    raw_store.delete_keys(keys)
    RawEvent.objects.all().delete()
    DeletedDocument.objects.all().delete()
    for model in ROW_MODELS:
        model._default_manager.all().delete()


def test_webhooks_of_one_user_and_type_cost_one_request_and_store_what_by_id_fetches_do(
    oura: OuraSimulator, executor: ThreadPoolExecutor, settings: Any
) -> None:
    conn = connect_user(oura)
    envelopes = (
        announced(oura, conn, "sleep", 3)
        # Daily types: one document per day (rows are keyed by user and day).
        + announced(oura, conn, "daily_readiness", 1, day=today() - timedelta(days=1))
        + announced(oura, conn, "daily_readiness", 1)
        + announced(oura, conn, "workout", 4)
    )

    # Today's path: every webhook fetched by id, each in a batch of its own.
    settings.OURA_COALESCE_FETCHES = False
    before = len(oura.requests)
    for envelope in envelopes:
        assert handle_raw_batch(as_batch([envelope]), executor) == [None]
    assert len(data_requests(oura, before)) == 9
    one_by_one = stored()
    assert sum(len(rows) for rows in one_by_one[0].values()) == 9

    forget_everything()
    settings.OURA_COALESCE_FETCHES = True
    units_before = rate_budget.used_in_current_window()
    before = len(oura.requests)
    assert handle_raw_batch(as_batch(envelopes), executor) == [None] * 9

    # One range request per (user, type), each taking one budget unit.
    paths = data_requests(oura, before)
    assert sorted(paths) == [
        "/v2/usercollection/daily_readiness",
        "/v2/usercollection/sleep",
        "/v2/usercollection/workout",
    ]
    assert rate_budget.used_in_current_window() - units_before == 3
    # The same rows, raw index rows (dedupe keys, sha256, event ids, object keys) and bytes.
    assert stored() == one_by_one

    # A redelivery of the whole batch changes nothing.
    assert handle_raw_batch(as_batch(envelopes), executor) == [None] * 9
    assert stored() == one_by_one


def test_updates_and_deletes_in_a_coalesced_batch_end_as_they_do_one_by_one(
    oura: OuraSimulator, executor: ThreadPoolExecutor
) -> None:
    conn = connect_user(oura)
    first = announced(oura, conn, "sleep", 3)
    assert handle_raw_batch(as_batch(first), executor) == [None] * 3
    changed_id, deleted_id, unchanged_id = (e["notification"]["object_id"] for e in first)
    current = oura.get_document(conn.provider_user_id, "sleep", changed_id)
    assert current is not None
    changed = dict(current)
    changed["average_hrv"] = (changed.get("average_hrv") or 40) + 7
    oura.put_document(conn.provider_user_id, "sleep", changed, emit=False)
    oura.delete_document(conn.provider_user_id, "sleep", deleted_id, emit=False)
    # Created and deleted again before we read it: the range does not hold it, and its
    # by-id fetch answers 404, which is a delete, exactly as without coalescing.
    (gone,) = announced(oura, conn, "sleep", 1)
    gone_id = gone["notification"]["object_id"]
    oura.delete_document(conn.provider_user_id, "sleep", gone_id, emit=False)
    (new,) = announced(oura, conn, "sleep", 1)
    batch = [
        webhook_envelope(conn, "update", "sleep", changed_id),
        webhook_envelope(conn, "delete", "sleep", deleted_id),
        webhook_envelope(conn, "update", "sleep", unchanged_id),
        gone,
        new,
    ]
    before = len(oura.requests)

    assert handle_raw_batch(as_batch(batch), executor) == [None] * 5

    # One range for the four creates/updates, the missing one by id; the delete reads nothing.
    assert sorted(data_requests(oura, before)) == [
        "/v2/usercollection/sleep",
        f"/v2/usercollection/sleep/{gone_id}",
    ]
    rows = {row.oura_id: row for row in SleepPeriod.objects.all()}
    assert set(rows) == {changed_id, unchanged_id, new["notification"]["object_id"]}
    assert rows[changed_id].average_hrv == changed["average_hrv"]
    assert set(DeletedDocument.objects.values_list("oura_id", flat=True)) == {deleted_id, gone_id}


def test_a_document_outside_the_range_is_fetched_by_id(
    oura: OuraSimulator, executor: ThreadPoolExecutor
) -> None:
    conn = connect_user(oura)
    recent = announced(oura, conn, "workout", 2)
    # Announced now, but of a day long ago (a workout entered by hand weeks later).
    (old,) = announced(oura, conn, "workout", 1, day=date(2024, 1, 5))
    before = len(oura.requests)

    assert handle_raw_batch(as_batch([recent[0], old, recent[1]]), executor) == [None] * 3

    assert sorted(data_requests(oura, before)) == [
        "/v2/usercollection/workout",
        f"/v2/usercollection/workout/{old['notification']['object_id']}",
    ]
    assert set(Activity.objects.values_list("oura_id", flat=True)) == {
        e["notification"]["object_id"] for e in [*recent, old]
    }


def test_a_lone_webhook_of_a_type_is_fetched_by_id(
    oura: OuraSimulator, executor: ThreadPoolExecutor
) -> None:
    conn = connect_user(oura)
    envelopes = announced(oura, conn, "workout", 1) + announced(oura, conn, "sleep", 1)
    before = len(oura.requests)

    assert handle_raw_batch(as_batch(envelopes), executor) == [None, None]

    assert all(path.count("/") == 4 for path in data_requests(oura, before))  # by id
    assert len(data_requests(oura, before)) == 2


def test_a_batch_groups_just_the_creates_and_updates_of_one_active_user_and_type(
    oura: OuraSimulator, settings: Any
) -> None:
    settings.OURA_COALESCE_FETCHES = True
    first, second = connect_user(oura, "user-1"), connect_user(oura, "user-2")
    revoked = connect_user(oura, "user-3")
    OuraConnection.objects.filter(pk=revoked.pk).update(status=OuraConnection.Status.REVOKED)
    envelopes = {
        2: webhook_envelope(first, "create", "sleep", "s-1"),
        3: webhook_envelope(second, "create", "sleep", "s-2"),  # alone for its user
        4: webhook_envelope(first, "create", "workout", "w-1"),  # alone for its type
        5: webhook_envelope(first, "delete", "sleep", "s-3"),  # reads nothing
        6: webhook_envelope(first, "update", "sleep", "s-4"),
        7: webhook_envelope(second, "create", "workout", "w-2"),
        8: webhook_envelope(second, "update", "workout", "w-3"),
        9: webhook_envelope(revoked, "create", "sleep", "s-5"),  # never fetched
        10: webhook_envelope(revoked, "create", "sleep", "s-6"),
    }
    # Before them, a backfill page and a poison webhook: the indexes are the messages'.
    messages = [
        (b"{}", MessageMeta("normalizer", "health.raw.oura.sleep", "HEALTH_RAW", 1, 1)),
        (b"not json", MessageMeta("normalizer", WEBHOOK_SUBJECT, "HEALTH_RAW", 2, 1)),
        *as_batch(list(envelopes.values())),
    ]

    batch = WebhookBatch.prepare(messages)

    assert batch is not None
    assert batch.grouped_indexes == [2, 6, 7, 8]
    # The ones whose fetch takes its document from a range (`range_for`) are just those.
    assert [
        index
        for index, envelope in envelopes.items()
        if batch.group_of(RawWebhookEnvelope.model_validate(envelope)) is not None
    ] == [2, 6, 7, 8]


def classified(results: list[Exception | None]) -> list[tuple[type, str]]:
    return [(type(result), getattr(result, "error_type", "")) for result in results]


def test_during_an_outage_each_webhook_of_a_failed_range_fails_as_its_by_id_fetch_does(
    oura: OuraSimulator, executor: ThreadPoolExecutor, settings: Any
) -> None:
    settings.OURA_MAX_RETRIES = 0
    settings.OURA_BREAKER_FAILURES = 100  # this test compares classifications, not the breaker
    conn = connect_user(oura)
    envelopes = announced(oura, conn, "workout", 3)
    oura.config.error_rate = 1.0  # every data request answers 503
    oura.config.error_statuses = (503,)

    settings.OURA_COALESCE_FETCHES = False
    by_id = handle_raw_batch(as_batch(envelopes), executor)
    settings.OURA_COALESCE_FETCHES = True
    before = len(oura.requests)
    coalesced = handle_raw_batch(as_batch(envelopes), executor)

    assert classified(coalesced) == classified(by_id) == [(Retriable, "OuraUnavailable")] * 3
    # The range, then each webhook's own fetch: every failure counts with the breaker, as
    # the by-id fetches' did, so an outage opens it as soon as it did before.
    assert len(data_requests(oura, before)) == 4
    assert not Activity.objects.exists()
    assert not DeadLetter.objects.exists()

    oura.config.error_rate = 0.0
    assert handle_raw_batch(as_batch(envelopes), executor) == [None] * 3
    assert Activity.objects.count() == 3


def test_a_429_on_the_range_pauses_the_batch_without_more_requests_as_a_by_id_429_does(
    oura: OuraSimulator, executor: ThreadPoolExecutor, settings: Any
) -> None:
    settings.OURA_MAX_RETRIES = 0
    conn = connect_user(oura)
    envelopes = announced(oura, conn, "workout", 3)
    oura.config.force_next_statuses = [429]
    before = len(oura.requests)

    results = handle_raw_batch(as_batch(envelopes), executor)

    # The by-id fetches the range stood for find the budget paused until Retry-After and
    # do not reach Oura: retried after the pause, like the rest of a batch after a 429.
    assert len(data_requests(oura, before)) == 1
    assert classified(results) == [(Retriable, "BudgetExhausted")] * 3
    assert all(isinstance(r, Retriable) and (r.delay_s or 0) >= 1 for r in results)
    assert not Activity.objects.exists()

    end_the_429_pause()
    assert handle_raw_batch(as_batch(envelopes), executor) == [None] * 3
    assert Activity.objects.count() == 3


@pytest.mark.parametrize("status", [503, 422])
def test_a_range_request_that_fails_once_leaves_each_webhook_to_its_by_id_fetch(
    oura: OuraSimulator, executor: ThreadPoolExecutor, settings: Any, status: int
) -> None:
    settings.OURA_MAX_RETRIES = 0
    conn = connect_user(oura)
    envelopes = announced(oura, conn, "workout", 3)
    # A 5xx blip, or a 422 on the query that says nothing about the documents themselves.
    oura.config.force_next_statuses = [status]
    before = len(oura.requests)

    assert handle_raw_batch(as_batch(envelopes), executor) == [None] * 3

    paths = data_requests(oura, before)
    assert paths[0] == "/v2/usercollection/workout"
    assert sorted(paths[1:]) == sorted(
        f"/v2/usercollection/workout/{e['notification']['object_id']}" for e in envelopes
    )
    assert Activity.objects.count() == 3
    assert not DeadLetter.objects.exists()


def test_the_consumer_reads_a_backlog_of_one_users_morning_sync_with_one_request_per_type(
    oura: OuraSimulator,
) -> None:
    spec = make_spec()
    conn = connect_user(oura)
    envelopes = [
        *announced(oura, conn, "daily_activity", 1, day=today() - timedelta(days=1)),
        *announced(oura, conn, "daily_activity", 1),
        *announced(oura, conn, "sleep", 2),
        *announced(oura, conn, "workout", 3),
    ]
    for envelope in envelopes:
        publish(envelope)
    before = len(oura.requests)
    try:
        stats = run(spec)
    finally:
        delete_durable(spec)

    assert (stats.acked, stats.naked, stats.dead_lettered) == (7, 0, 0)
    assert sorted(data_requests(oura, before)) == [
        "/v2/usercollection/daily_activity",
        "/v2/usercollection/sleep",
        "/v2/usercollection/workout",
    ]
    assert Activity.objects.filter(kind="workout").count() == 3
    assert SleepPeriod.objects.count() == 2
    assert sum(len(rows) for rows in snapshot().values()) == 7


def test_a_token_refused_on_the_range_drops_the_group_once_without_by_id_fetches(
    oura: OuraSimulator, executor: ThreadPoolExecutor
) -> None:
    conn = connect_user(oura)
    envelopes = announced(oura, conn, "workout", 3)
    assert conn.refresh_token_enc is not None
    oura.revoke_token(crypto.decrypt(conn.refresh_token_enc))  # access and refresh token
    before = len(oura.requests)

    # Dropped, as each by-id fetch's NeedsReauth would drop it: only the person can fix it.
    assert handle_raw_batch(as_batch(envelopes), executor) == [None] * 3

    assert data_requests(oura, before) == ["/v2/usercollection/workout"]
    conn.refresh_from_db()
    assert conn.status == OuraConnection.Status.NEEDS_REAUTH
    assert AuditEntry.objects.filter(action="connection.needs_reauth").count() == 1
    assert not Activity.objects.exists()
