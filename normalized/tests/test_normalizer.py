"""The normalizer end to end: real Postgres, NATS and S3; Oura only through the simulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection as db

from audit.models import AuditEntry
from core import bus, raw_store
from core.consumers import Action, MessageMeta, dispatch
from core.models import DeadLetter
from core.provisioning import ProvisionReport, provision_bucket
from ingestion import oura_client
from ingestion.models import OuraConnection, RawEvent
from normalized import mappers, services, timeseries
from normalized.consumers import handle_raw_message
from normalized.models import (
    Activity,
    DailyActivity,
    DailyReadiness,
    DailySleep,
    DeletedDocument,
    SleepPeriod,
)
from normalized.tests.normalizer_helpers import (
    FIXTURE_PAGES,
    connect_user,
    delete_durable,
    fixture_documents,
    make_spec,
    page_envelope,
    publish,
    run,
    snapshot,
    stream_messages,
    subject_of,
    webhook_envelope,
)
from oura_simulator import OuraSimulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]

PROJECT_DIR = Path(__file__).resolve().parents[2]
ROW_COLLECTIONS = (
    "daily_readiness",
    "daily_sleep",
    "daily_activity",
    "sleep",
    "workout",
    "session",
)


@pytest.fixture
def spec():
    spec = make_spec()
    yield spec
    delete_durable(spec)


@pytest.fixture
def fresh_oura_client():
    """The client singleton reads OURA_MAX_RETRIES once; tests that change it get a new one."""
    oura_client._client = None
    yield
    oura_client._client = None


def publish_fixture_pages(conn: OuraConnection) -> list[dict[str, Any]]:
    envelopes = [
        page_envelope(conn, collection, fixture_documents(collection))
        for collection in FIXTURE_PAGES
    ]
    for envelope in envelopes:
        publish(envelope)
    return envelopes


def put_fixture_documents(oura: OuraSimulator, conn: OuraConnection) -> list[dict[str, Any]]:
    """Every recorded document of the six row collections, stored at the simulator, and the
    webhook envelopes announcing them."""
    envelopes = []
    for collection in ROW_COLLECTIONS:
        for document in fixture_documents(collection):
            oura.put_document(conn.provider_user_id, collection, document, emit=False)
            envelopes.append(webhook_envelope(conn, "create", collection, document["id"]))
    return envelopes


# --- every data type -------------------------------------------------------------------------


def assert_fixture_rows(user_id: str) -> None:
    readiness = {d["day"]: d for d in fixture_documents("daily_readiness")}
    assert DailyReadiness.objects.filter(user_id=user_id).count() == len(readiness)
    for row in DailyReadiness.objects.filter(user_id=user_id):
        doc = readiness[row.day.isoformat()]
        assert (row.oura_id, row.score) == (doc["id"], doc["score"])
        assert row.temperature_deviation == doc["temperature_deviation"]
        assert row.temperature_trend_deviation == doc["temperature_trend_deviation"]
        # A contributor absent from the 2024 recordings (sleep_regularity) becomes null.
        assert row.contributors == {"sleep_regularity": None} | doc["contributors"]
        assert row.timestamp == datetime.fromisoformat(doc["timestamp"])
        assert row.normalizer_version == mappers.NORMALIZER_VERSION
        assert row.raw_object_key.startswith("provider=oura/date=")
        assert f"/user={user_id}/event=" in row.raw_object_key

    sleep_days = {d["day"]: d for d in fixture_documents("daily_sleep")}
    assert DailySleep.objects.filter(user_id=user_id).count() == len(sleep_days)
    for sleep_row in DailySleep.objects.filter(user_id=user_id):
        doc = sleep_days[sleep_row.day.isoformat()]
        assert (sleep_row.oura_id, sleep_row.score, sleep_row.contributors) == (
            doc["id"], doc["score"], doc["contributors"],
        )  # fmt: skip

    (activity_doc,) = fixture_documents("daily_activity")
    activity = DailyActivity.objects.get(user_id=user_id)
    for name in ("steps", "active_calories", "total_calories", "target_calories",
                 "equivalent_walking_distance", "high_activity_time", "sedentary_time",
                 "non_wear_time", "average_met_minutes", "inactivity_alerts", "score"):  # fmt: skip
        assert getattr(activity, name) == activity_doc[name], name
    assert activity.day == date.fromisoformat(activity_doc["day"])
    # Local 04:00 with its offset is the same instant once stored.
    assert activity.timestamp == datetime.fromisoformat(activity_doc["timestamp"])

    periods = {d["id"]: d for d in fixture_documents("sleep")}
    assert SleepPeriod.objects.filter(user_id=user_id).count() == len(periods) == 48
    for period in SleepPeriod.objects.filter(user_id=user_id):
        doc = periods[period.oura_id]
        assert period.type == doc["type"]
        assert period.bedtime_start == datetime.fromisoformat(doc["bedtime_start"])
        assert period.total_sleep_duration == doc["total_sleep_duration"]
        assert period.deep_sleep_duration == doc["deep_sleep_duration"]
        assert period.time_in_bed == doc["time_in_bed"]
        assert period.average_heart_rate == doc["average_heart_rate"]
        assert period.lowest_heart_rate == doc["lowest_heart_rate"]
        assert period.average_hrv == doc["average_hrv"]
        assert period.readiness_score == (doc["readiness"] or {}).get("score")

    workouts = {d["id"]: d for d in fixture_documents("workout")}
    workout_rows = Activity.objects.filter(user_id=user_id, kind="workout")
    assert workout_rows.count() == len(workouts) == 83
    for workout_row in workout_rows:
        doc = workouts[workout_row.oura_id]
        assert (workout_row.type, workout_row.intensity, workout_row.source) == (
            doc["activity"], doc["intensity"], doc["source"],
        )  # fmt: skip
        assert workout_row.calories == doc["calories"]
        assert workout_row.distance == doc["distance"]
        assert workout_row.label == (doc["label"] or "")
        assert workout_row.start == datetime.fromisoformat(doc["start_datetime"])
        assert workout_row.end == datetime.fromisoformat(doc["end_datetime"])

    (session_doc,) = fixture_documents("session")
    session = Activity.objects.get(user_id=user_id, kind="session")
    assert (session.oura_id, session.type) == (session_doc["id"], session_doc["type"])
    assert session.metrics["mood"] == session_doc["mood"]
    assert session.start == datetime.fromisoformat(session_doc["start_datetime"])
    # A missing sample series becomes null; a present one is summarised.
    assert session.metrics["heart_rate"] is None
    motion = session_doc["motion_count"]["items"]
    assert session.metrics["motion_count"]["max"] == max(motion)
    assert session.metrics["motion_count"]["count"] == len(motion)


def test_every_fixture_type_in_backfill_pages_lands_as_rows_with_the_right_values(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    envelopes = publish_fixture_pages(conn)

    stats = run(spec)

    assert stats.received == len(envelopes) == len(FIXTURE_PAGES)
    assert stats.acked == len(envelopes)
    assert not DeadLetter.objects.exists()
    assert_fixture_rows(conn.user_id)
    # Pages keep their own S3 key as the source of every row they produced.
    workout_page = next(e for e in envelopes if e["collection"] == "workout")
    assert set(
        Activity.objects.filter(kind="workout").values_list("raw_object_key", flat=True)
    ) == {workout_page["object_key"]}
    # Each page that changed rows is announced, with ids and days only.
    announced = [
        json.loads(m) for m in stream_messages(f"health.normalized.user.{conn.user_id}.metrics")
    ]
    # Every recorded type that has a table, the six above and those of issue #18.
    # Heart rate too: its samples have no ids, so its announcement names days only.
    rows_kept = set(mappers.TABLES) | {timeseries.COLLECTION}
    assert {m["dataType"] for m in announced} == set(FIXTURE_PAGES) & rows_kept
    workout_message = next(m for m in announced if m["dataType"] == "workout")
    assert len(workout_message["ids"]) == 83
    assert set(workout_message) == {
        "userId", "provider", "dataType", "change", "days", "ids", "normalizerVersion",
        "occurredAt",
    }  # fmt: skip


def test_every_fixture_document_announced_by_webhook_is_fetched_stored_raw_and_normalized(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    envelopes = put_fixture_documents(oura, conn)
    for envelope in envelopes:
        publish(envelope)

    stats = run(spec)

    assert stats.acked == len(envelopes)
    assert not DeadLetter.objects.exists()
    assert_fixture_rows(conn.user_id)
    # Each document was stored raw once, indexed, and is the source of its row.
    documents = RawEvent.objects.filter(kind="document", status="accepted")
    assert documents.count() == len(envelopes)
    row = SleepPeriod.objects.filter(user_id=conn.user_id).first()
    assert row is not None
    raw = documents.get(object_id=row.oura_id)
    assert row.raw_object_key == raw.object_key
    stored = json.loads(raw_store.get(raw.object_key))
    assert stored == next(d for d in fixture_documents("sleep") if d["id"] == row.oura_id)
    head = raw_store.head(raw.object_key)
    assert head is not None
    assert head["ServerSideEncryption"] == "AES256"


def test_valid_types_without_a_table_are_stored_raw_and_acked(oura: OuraSimulator, spec) -> None:
    conn = connect_user(oura)
    assert "ring_configuration" not in mappers.TABLES  # a raw_only type of the registry
    (ring,) = fixture_documents("ring_configuration")[:1]
    oura.put_document(conn.provider_user_id, "ring_configuration", ring, emit=False)
    publish(webhook_envelope(conn, "update", "ring_configuration", ring["id"]))

    stats = run(spec)

    assert (stats.acked, stats.dead_lettered) == (1, 0)
    raw = RawEvent.objects.get(kind="document", object_id=ring["id"])
    assert json.loads(raw_store.get(raw.object_key)) == ring
    assert snapshot() == {name: [] for name in snapshot()}


# --- redelivery ----------------------------------------------------------------------------


def test_redelivering_every_message_leaves_identical_rows_and_no_duplicates(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    envelopes = publish_fixture_pages(conn) + put_fixture_documents(oura, conn)
    for envelope in envelopes[len(FIXTURE_PAGES) :]:
        publish(envelope)
    run(spec)
    first = snapshot()
    raw_documents = RawEvent.objects.filter(kind="document").count()

    for envelope in envelopes:  # every message once more, as a redelivery would bring it
        publish(envelope)
    stats = run(spec)

    assert stats.acked == len(envelopes)
    assert snapshot() == first
    # The six first types' rows, then those of issue #18 (stress, SpO2, resilience,
    # cardiovascular age, VO2 max, sleep time, enhanced tags, tags, rest mode).
    assert sum(len(rows) for rows in first.values()) == (
        2 + 2 + 1 + 48 + 83 + 1 + 2 + 2 + 2 + 2 + 1 + 19 + 2 + 1 + 1
    )
    # Re-fetched identical bytes are the same raw event and the same S3 object.
    assert RawEvent.objects.filter(kind="document").count() == raw_documents


# --- crash and shutdown --------------------------------------------------------------------


def consumer_process(subprocess_env: dict[str, str], oura: OuraSimulator, *args: str):
    env = subprocess_env | {
        "OURA_API_BASE_URL": oura.base_url,
        "OURA_TOKEN_URL": f"{oura.base_url}/oauth/token",
        "OURA_AUTHORIZE_URL": f"{oura.base_url}/oauth/authorize",
        "OURA_REVOKE_URL": f"{oura.base_url}/oauth/revoke",
        "LOG_LEVEL": "INFO",  # consumer_stopped, with the run's counts, is an INFO record
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_consumer", "normalizer", "--ack-wait", "2", *args],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stopped_record(output: str) -> dict[str, Any]:
    """The consumer's last record, `consumer_stopped`, from its JSON log lines."""
    # One record per lane; these tests send webhooks, the `normalizer` lane's.
    (record,) = [
        json.loads(line) for line in output.splitlines()
        if line.startswith("{") and '"consumer_stopped"' in line
        and json.loads(line).get("consumer") == "normalizer"
    ]  # fmt: skip
    assert isinstance(record, dict)
    return record


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_consumer_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    oura: OuraSimulator, subprocess_env
) -> None:
    conn = connect_user(oura)
    total = 150
    oura.config.latency_ms = 5  # keeps the first process busy long enough to be killed
    envelopes = []
    for n in range(total):
        document = oura.put_document(
            conn.provider_user_id, "workout", None, emit=False,
            day=date(2024, 1, 1) + timedelta(days=n),
        )  # fmt: skip
        envelopes.append(webhook_envelope(conn, "create", "workout", document["id"]))
    for envelope in envelopes:
        publish(envelope)

    # Two processes share the durable consumer; one of them is killed mid-batch.
    victim = consumer_process(subprocess_env, oura, "--batch", "20")
    survivor = consumer_process(subprocess_env, oura, "--batch", "20")
    try:
        wait_for(lambda: Activity.objects.count() >= 30, 60, "the first rows")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert Activity.objects.count() < total, "killed too late to prove anything"
        # The survivor takes the victim's unacked messages once AckWait (2 s) has passed.
        wait_for(lambda: Activity.objects.count() == total, 90, "every row")
        time.sleep(3)  # anything still to come would be a duplicate
        survivor.send_signal(signal.SIGTERM)
        output = survivor.communicate(timeout=30)[0].decode()
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
    assert survivor.returncode == 0, output
    assert stopped_record(output)["received"] > 0
    assert Activity.objects.count() == total
    assert set(Activity.objects.values_list("oura_id", flat=True)) == {
        e["notification"]["object_id"] for e in envelopes
    }
    assert RawEvent.objects.filter(kind="document").count() == total
    assert not DeadLetter.objects.exists()
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT oura_id FROM health.oura_activities "
            "GROUP BY user_id, kind, oura_id HAVING count(*) > 1) d"
        )
        assert cursor.fetchone() == (0,)


def test_sigterm_finishes_the_batch_acks_and_exits_cleanly(
    oura: OuraSimulator, subprocess_env
) -> None:
    conn = connect_user(oura)
    oura.config.latency_ms = 20
    envelopes = []
    for n in range(40):
        document = oura.put_document(
            conn.provider_user_id, "session", None, emit=False,
            day=date(2024, 3, 1) + timedelta(days=n),
        )  # fmt: skip
        envelopes.append(webhook_envelope(conn, "create", "session", document["id"]))
        publish(envelopes[-1])
    process = consumer_process(subprocess_env, oura, "--batch", "10")
    try:
        wait_for(lambda: Activity.objects.exists(), 60, "the first row")
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    done = Activity.objects.count()
    # Whole batches only: the process stopped at a batch boundary, having acked all of it.
    assert done % 10 == 0, done
    assert 0 < done < 40, done
    record = stopped_record(output)
    assert record["received"] == record["acked"] == done


# --- poison, dead letters, replay ----------------------------------------------------------


def test_a_poison_document_is_dead_lettered_then_replayed_once_fixed(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    (workout,) = fixture_documents("workout")[:1]
    broken = dict(workout, intensity=None, calories="SECRET-VALUE-123")
    oura.put_document(conn.provider_user_id, "workout", broken, emit=False)
    envelope = webhook_envelope(conn, "create", "workout", workout["id"])
    publish(envelope)

    stats = run(spec)

    assert (stats.received, stats.dead_lettered) == (1, 1)
    dead = DeadLetter.objects.get()
    assert dead.consumer == "normalizer"
    assert dead.subject == "health.raw.oura.webhook"
    assert dead.error_type == "ContractViolation"
    assert "intensity" in dead.reason
    assert "calories" in dead.reason
    assert "SECRET-VALUE-123" not in dead.reason
    assert json.loads(bytes(dead.data))["event_id"] == envelope["event_id"]
    assert not Activity.objects.exists()
    # Announced on the DLQ subject too, and the broken document is kept raw.
    assert len(stream_messages("health.dlq.normalizer")) == 1
    assert RawEvent.objects.filter(kind="document", object_id=workout["id"]).exists()

    oura.put_document(conn.provider_user_id, "workout", workout, emit=False)  # cause fixed
    call_command("replay_dead_letters", "--id", str(dead.pk))
    stats = run(spec)

    assert (stats.acked, stats.dead_lettered) == (1, 0)
    row = Activity.objects.get(oura_id=workout["id"])
    assert row.calories == workout["calories"]
    dead.refresh_from_db()
    assert dead.resolved
    assert dead.replayed_at is not None
    assert AuditEntry.objects.filter(action="dead_letter.replayed").count() == 1


def test_a_message_that_keeps_failing_is_dead_lettered_after_max_deliver_minus_one_tries(
    oura: OuraSimulator, settings, fresh_oura_client
) -> None:
    settings.OURA_MAX_RETRIES = 0
    spec = make_spec(max_deliver=4, retry_delays_s=(0.1,))
    try:
        conn = connect_user(oura)
        document = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
        oura.config.error_rate = 1.0  # Oura answers 5xx to everything
        publish(webhook_envelope(conn, "create", "workout", document["id"]))

        stats = run(spec)

        assert (stats.received, stats.naked, stats.dead_lettered) == (3, 2, 1)
        dead = DeadLetter.objects.get()
        assert (dead.error_type, dead.attempts) == ("OuraUnavailable", 3)
        assert not Activity.objects.exists()

        oura.config.error_rate = 0.0
        call_command("replay_dead_letters", "--all")
        stats = run(spec)
        assert stats.acked == 1
        assert Activity.objects.filter(oura_id=document["id"]).count() == 1
    finally:
        delete_durable(spec)


def test_dispatch_classifies_each_failure_once() -> None:
    spec = make_spec(max_deliver=5, retry_delays_s=(1.0, 5.0))
    meta = MessageMeta("normalizer", "health.raw.oura.webhook", "HEALTH_RAW", 7, 1)

    def fails(exc: Exception):
        def handler(data: bytes, meta: MessageMeta) -> None:
            raise exc

        return handler

    from core.consumers import Poison, Retriable

    assert dispatch(spec, lambda d, m: None, b"{}", meta).action is Action.ACK
    assert dispatch(spec, fails(Poison("bad")), b"{}", meta).action is Action.DEAD_LETTER
    nak = dispatch(spec, fails(Retriable("away")), b"{}", meta)
    assert (nak.action, nak.delay_s) == (Action.NAK, 1.0)
    later = dispatch(
        spec,
        fails(Retriable("away")),
        b"{}",
        meta.__class__(**{**meta.__dict__, "num_delivered": 2}),
    )
    assert later.delay_s == 5.0
    limited = dispatch(spec, fails(Retriable("429", delay_s=42.0)), b"{}", meta)
    assert limited.delay_s == 42.0
    last = MessageMeta("normalizer", "s", "HEALTH_RAW", 7, 4)
    assert dispatch(spec, fails(Retriable("away")), b"{}", last).action is Action.DEAD_LETTER
    assert dispatch(spec, fails(KeyError("x")), b"{}", meta).action is Action.NAK
    assert dispatch(spec, fails(KeyError("x")), b"{}", last).error_type == "KeyError"


def test_malformed_envelopes_and_unknown_types_are_poison(oura: OuraSimulator, spec) -> None:
    conn = connect_user(oura)
    bus.get_bus().publish("health.raw.oura.webhook", b"not json", msg_id="bad-1")
    envelope = webhook_envelope(conn, "create", "meal", "abc")
    publish(envelope)
    page = page_envelope(conn, "workout", [])
    page["sha256"] = "0" * 64
    publish(page)

    stats = run(spec)

    assert stats.dead_lettered == 3
    assert set(DeadLetter.objects.values_list("error_type", flat=True)) == {
        "BadEnvelope", "UnknownCollection", "ChecksumMismatch",
    }  # fmt: skip


# --- ordering ------------------------------------------------------------------------------


def test_a_delete_before_the_update_it_overtook_ends_deleted(oura: OuraSimulator, spec) -> None:
    conn = connect_user(oura)
    document = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    publish(webhook_envelope(conn, "create", "workout", document["id"]))
    run(spec)
    assert Activity.objects.filter(oura_id=document["id"]).exists()

    # Oura: update, then delete. We receive the delete first, the update after it.
    oura.put_document(conn.provider_user_id, "workout", dict(document, calories=999.0), emit=False)
    oura.delete_document(conn.provider_user_id, "workout", document["id"], emit=False)
    publish(webhook_envelope(conn, "delete", "workout", document["id"]))
    publish(webhook_envelope(conn, "update", "workout", document["id"]))
    stats = run(spec)

    assert stats.acked == 2
    assert not Activity.objects.filter(oura_id=document["id"]).exists()
    assert DeletedDocument.objects.filter(oura_id=document["id"]).exists()
    tombstone = RawEvent.objects.get(status="tombstone", object_id=document["id"])
    assert (tombstone.kind, tombstone.data_type) == ("document", "workout")


def test_an_update_fetched_before_a_delete_but_written_after_it_stays_deleted(
    oura: OuraSimulator,
) -> None:
    conn = connect_user(oura)
    (workout,) = fixture_documents("workout")[:1]
    fetched_at = datetime.now(UTC)  # the in-flight copy was read from Oura here
    services.delete_document(
        user_id=conn.user_id, provider_user_id=conn.provider_user_id,
        collection="workout", oura_id=workout["id"],
    )  # fmt: skip
    result = services.normalize_documents(
        user_id=conn.user_id, collection="workout", documents=[workout],
        raw_object_key="k", observed_at=fetched_at,
    )  # fmt: skip
    assert result.skipped_deleted == 1
    assert result.written_ids == []
    assert not Activity.objects.exists()


def test_an_older_update_arriving_after_a_newer_one_does_not_win(oura: OuraSimulator) -> None:
    conn = connect_user(oura)
    doc = fixture_documents("daily_readiness")[0]
    newer, older = datetime.now(UTC), datetime.now(UTC) - timedelta(minutes=5)
    services.normalize_documents(
        user_id=conn.user_id, collection="daily_readiness",
        documents=[dict(doc, score=91)], raw_object_key="new", observed_at=newer,
    )  # fmt: skip
    late = services.normalize_documents(
        user_id=conn.user_id, collection="daily_readiness",
        documents=[dict(doc, score=40)], raw_object_key="old", observed_at=older,
    )  # fmt: skip
    assert late.skipped_stale == 1
    row = DailyReadiness.objects.get()
    assert (row.score, row.raw_object_key) == (91, "new")
    # The same observation again (a redelivery) is applied: equal times are not stale.
    again = services.normalize_documents(
        user_id=conn.user_id, collection="daily_readiness",
        documents=[dict(doc, score=91)], raw_object_key="new", observed_at=newer,
    )  # fmt: skip
    assert again.written_ids == [doc["id"]]


def test_an_old_backfill_page_does_not_undo_a_newer_webhook(oura: OuraSimulator, spec) -> None:
    conn = connect_user(oura)
    doc = fixture_documents("workout")[0]
    oura.put_document(conn.provider_user_id, "workout", dict(doc, calories=500.0), emit=False)
    publish(webhook_envelope(conn, "update", "workout", doc["id"]))
    run(spec)
    page = page_envelope(
        conn, "workout", [dict(doc, calories=1.0)],
        received_at=datetime.now(UTC) - timedelta(hours=1),
    )  # fmt: skip
    publish(page)
    run(spec)
    assert Activity.objects.get(oura_id=doc["id"]).calories == 500.0


# --- dependencies away ---------------------------------------------------------------------


@pytest.mark.services
def test_s3_unavailable_naks_and_the_redelivery_succeeds(oura: OuraSimulator, spec, stack) -> None:
    conn = connect_user(oura)
    document = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    publish(webhook_envelope(conn, "create", "workout", document["id"]))
    stack.stop("s3")
    try:
        stats = run(spec, max_messages=1)
        assert (stats.naked, stats.acked) == (1, 0)
        assert not Activity.objects.exists()
    finally:
        stack.start("s3")
        raw_store.reset_client()
        provision_bucket(ProvisionReport())
    stats = run(spec)
    assert stats.acked == 1
    assert Activity.objects.filter(oura_id=document["id"]).count() == 1


@pytest.mark.services
def test_nats_unavailable_after_the_commit_is_retried_and_then_succeeds(
    oura: OuraSimulator, spec, stack
) -> None:
    conn = connect_user(oura)
    document = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    envelope = webhook_envelope(conn, "create", "workout", document["id"])
    data = json.dumps(envelope).encode()
    meta = MessageMeta("normalizer", subject_of(envelope), "HEALTH_RAW", 1, 1)
    stack.stop("nats")
    try:
        outcome = dispatch(spec, handle_raw_message, data, meta)
        # The row is committed but not announced: nak, so that the announcement happens.
        assert (outcome.action, outcome.error_type) == (Action.NAK, "BusUnavailable")
    finally:
        stack.start("nats")
        bus.reset_bus()
    outcome = dispatch(
        spec, handle_raw_message, data, meta.__class__(**{**meta.__dict__, "num_delivered": 2})
    )
    assert outcome.action is Action.ACK
    assert Activity.objects.filter(oura_id=document["id"]).count() == 1
    assert len(stream_messages(f"health.normalized.user.{conn.user_id}.metrics")) == 1


def test_oura_429_and_5xx_are_retried_in_the_client_and_by_redelivery(
    oura: OuraSimulator, spec, settings, fresh_oura_client
) -> None:
    conn = connect_user(oura)
    first = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    oura.config.force_next_statuses = [429, 503, 500]
    publish(webhook_envelope(conn, "create", "workout", first["id"]))
    stats = run(spec)
    assert (stats.acked, stats.naked) == (1, 0)  # the client's own retries were enough
    statuses = [r.status for r in oura.requests if first["id"] in r.path]
    assert statuses == [429, 503, 500, 200]

    settings.OURA_MAX_RETRIES = 0
    oura_client._client = None
    second = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    oura.config.force_next_statuses = [503, 429]
    publish(webhook_envelope(conn, "create", "workout", second["id"]))
    stats = run(spec)
    assert (stats.naked, stats.acked) == (2, 1)  # 503 → nak, 429 → nak after Retry-After
    assert Activity.objects.count() == 2
    assert not DeadLetter.objects.exists()


def test_a_connection_that_needs_reauth_drops_the_event_without_a_crash_loop(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    document = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    from ingestion import crypto

    assert conn.refresh_token_enc is not None
    oura.revoke_token(crypto.decrypt(conn.refresh_token_enc))
    publish(webhook_envelope(conn, "create", "workout", document["id"]))

    stats = run(spec)

    assert (stats.acked, stats.naked, stats.dead_lettered) == (1, 0, 0)
    conn.refresh_from_db()
    assert conn.status == OuraConnection.Status.NEEDS_REAUTH
    assert AuditEntry.objects.filter(action="connection.needs_reauth").count() == 1
    assert not Activity.objects.exists()


def test_a_delete_announced_by_webhook_removes_the_row_and_announces_it(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    doc = fixture_documents("sleep")[0]
    oura.put_document(conn.provider_user_id, "sleep", doc, emit=False)
    publish(webhook_envelope(conn, "create", "sleep", doc["id"]))
    run(spec)
    oura.delete_document(conn.provider_user_id, "sleep", doc["id"], emit=False)
    delete = webhook_envelope(conn, "delete", "sleep", doc["id"])
    publish(delete)
    publish(delete)  # and its redelivery
    run(spec)

    assert not SleepPeriod.objects.exists()
    assert RawEvent.objects.filter(status="tombstone", object_id=doc["id"]).count() == 1
    announced = [
        json.loads(m) for m in stream_messages(f"health.normalized.user.{conn.user_id}.metrics")
    ]
    assert [(m["change"], m["ids"]) for m in announced] == [
        ("upsert", [doc["id"]]), ("delete", [doc["id"]]),
    ]  # fmt: skip
    assert announced[1]["days"] == [doc["day"]]


def test_an_expired_access_token_is_refreshed_and_the_fetch_retried(
    oura: OuraSimulator, spec
) -> None:
    from ingestion import crypto

    conn = connect_user(oura)
    document = oura.put_document(conn.provider_user_id, "workout", None, emit=False)
    assert conn.access_token_enc is not None
    oura.expire_access_token(crypto.decrypt(conn.access_token_enc))  # Oura now answers 401
    publish(webhook_envelope(conn, "create", "workout", document["id"]))

    stats = run(spec)

    assert (stats.acked, stats.naked, stats.dead_lettered) == (1, 0, 0)
    assert Activity.objects.filter(oura_id=document["id"]).count() == 1
    conn.refresh_from_db()
    assert conn.token_version == 1
    assert conn.status == OuraConnection.Status.ACTIVE
