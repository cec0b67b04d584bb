"""The missed-webhook watchdog against the simulator: a day whose webhooks never reached us
is caught up by a backfill job and recorded; lapsed subscriptions are re-synced; people whose
data is current get nothing; the admin page is for operators only."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import dramatiq
import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django.db import models
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

from audit.models import AuditEntry
from core.pseudonyms import person_hash
from ingestion.data_types import Kind
from ingestion.models import OuraConnection, RateLimitWindow, RawEvent
from ingestion.rate_budget import BACKFILL_SHARE, Priority, try_acquire
from ingestion.subscription_services import subscriptions_sync
from jobs.backfill import backfill_run
from jobs.models import IngestionJob, WatchdogFinding
from jobs.services import job_start
from jobs.tests.conftest import HISTORY_END, connect_user, day_bounds
from jobs.watchdog import WATCHED_TYPES, watchdog_run
from normalized.models import DailyActivity, DailyReadiness, DailySleep
from normalized.tests.normalizer_helpers import delete_durable, make_spec, run
from upkeep.services import upkeep_run

pytestmark = pytest.mark.django_db(transaction=True)

DROPPED_DAY = HISTORY_END
# Our side last heard from Oura at noon the day before the dropped day...
LAST_HEARD = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
# ...and the watchdog runs 32 hours later: past the daily types' 30 h, within the others' 72 h.
NOW = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
DAILY_TYPES = sorted(name for name, t in WATCHED_TYPES.items() if t.kind is Kind.DAILY)
ROWS: dict[str, type[models.Model]] = {"daily_activity": DailyActivity,
        "daily_readiness": DailyReadiness, "daily_sleep": DailySleep}  # fmt: skip


@pytest.fixture
def subscribed(oura, oura_webhook_receiver, settings):
    """Every subscription in place, for a callback that answers the challenge and swallows
    deliveries: nothing the simulator announces reaches our webhook endpoint."""
    oura_webhook_receiver.verification_token = settings.OURA_WEBHOOK_VERIFICATION_TOKEN
    settings.OURA_WEBHOOK_CALLBACK_URL = oura_webhook_receiver.url
    assert subscriptions_sync().failed == []
    return oura


def normalize() -> None:
    spec = make_spec()
    try:
        stats = run(spec, idle_exit_s=3.0)
    finally:
        delete_durable(spec)
    assert stats.dead_lettered == 0


def stored_ids(name: str, day: date) -> set[str]:
    rows = ROWS[name]._default_manager.filter(user_id="user-1", day=day)
    return set(rows.values_list("oura_id", flat=True))


def oura_ids(oura, oura_uid: str, name: str, day: date) -> set[str]:
    return {doc["id"] for doc in oura.documents(oura_uid, name, *day_bounds(day, day))}


def heard_until_the_day_before(oura) -> str:
    """A connected person whose history we hold up to the day before the dropped day, last
    heard of at LAST_HEARD; the dropped day's documents exist at Oura only."""
    conn, oura_uid = connect_user(oura, history_days=30)
    job = job_start(
        user_id="user-1", start=DROPPED_DAY - timedelta(days=9),
        end=DROPPED_DAY - timedelta(days=1), data_types=None, requested_by="test",
    ).job  # fmt: skip
    assert backfill_run(job_id=job.job_id) == "succeeded"
    normalize()
    RawEvent.objects.filter(user_id="user-1").update(received_at=LAST_HEARD)
    IngestionJob.objects.filter(pk=job.pk).update(finished_at=LAST_HEARD, updated_at=LAST_HEARD)
    OuraConnection.objects.filter(pk=conn.pk).update(connected_at=LAST_HEARD - timedelta(days=9))
    return oura_uid


def run_worker_until_done(broker, job_id: uuid.UUID) -> IngestionJob:
    worker = dramatiq.Worker(broker, worker_threads=1, queues={"backfill"})
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = IngestionJob.objects.get(job_id=job_id)
            if job.status in IngestionJob.TERMINAL_STATUSES:
                return job
            time.sleep(0.2)
        raise AssertionError("the catch-up job did not finish")
    finally:
        worker.stop()


def test_a_day_of_dropped_webhooks_is_caught_up_recorded_and_not_repeated(
    subscribed, broker, clean_streams, caplog
) -> None:
    oura = subscribed
    oura_uid = heard_until_the_day_before(oura)
    for name in ROWS:  # the day exists at Oura, we never heard of it
        assert oura_ids(oura, oura_uid, name, DROPPED_DAY)
        assert stored_ids(name, DROPPED_DAY) == set()

    with caplog.at_level(logging.INFO, logger="jobs.watchdog"):
        first = watchdog_run(now=NOW)

    [catch_up] = IngestionJob.objects.filter(requested_by="watchdog")
    assert first.catch_ups == [str(catch_up.job_id)]
    # Only the daily types are overdue; workouts, sessions, sleep periods may be quiet 72 h.
    assert catch_up.data_types == DAILY_TYPES
    assert "daily_activity" in DAILY_TYPES
    assert "workout" not in DAILY_TYPES
    # From the day before the last news to the watchdog's today: the dropped day inside.
    assert (catch_up.range_start, catch_up.range_end) == (
        LAST_HEARD.date() - timedelta(days=1), NOW.date(),
    )  # fmt: skip
    findings = WatchdogFinding.objects.filter(run_id=first.run_id)
    assert {(f.reason, f.user_id, f.data_type, f.action, f.job_id, f.stale_since)
            for f in findings} == {
        ("stale_data", "user-1", name, "catch_up_started", catch_up.job_id, LAST_HEARD)
        for name in DAILY_TYPES
    }  # fmt: skip
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.JOB_STARTED,
        actor="watchdog",
        person_ref=person_hash("user-1"),
        details__job_id=str(catch_up.job_id),
    ).exists()
    # The log names the person by keyed hash only.
    records = [r for r in caplog.records if r.name == "jobs.watchdog"]
    assert [r.getMessage() for r in records] == ["watchdog_stale_data"]
    assert getattr(records[0], "person", None) == person_hash("user-1")
    assert all("user-1" not in str(value) for r in records for value in vars(r).values())

    # Run again before the job ran: the active job covers every type, nothing new starts.
    second = watchdog_run(now=NOW)
    assert second.catch_ups == []
    assert IngestionJob.objects.filter(requested_by="watchdog").count() == 1
    assert set(
        WatchdogFinding.objects.filter(run_id=second.run_id).values_list("action", "job_id")
    ) == {("already_covered", catch_up.job_id)}

    assert run_worker_until_done(broker, catch_up.job_id).status == "succeeded"
    normalize()

    for name in ROWS:
        expected = oura_ids(oura, oura_uid, name, DROPPED_DAY)
        assert stored_ids(name, DROPPED_DAY) == expected, name
    # And once it has run, the catch-up is the news: a third run finds nothing stale.
    third = watchdog_run(now=NOW)
    assert (third.stale, third.catch_ups) == (0, [])
    assert IngestionJob.objects.filter(requested_by="watchdog").count() == 1


def test_a_catch_up_waits_on_the_backfill_share_while_webhook_fetches_still_get_through(
    subscribed, settings
) -> None:
    oura = subscribed
    heard_until_the_day_before(oura)
    watchdog_run(now=NOW)
    job = IngestionJob.objects.get(requested_by="watchdog")
    # A small budget (10 requests per 10 s) whose backfill share (8) is used up.
    settings.OURA_APP_RATE_LIMIT, settings.OURA_APP_RATE_WINDOW_S = 10, 10
    RateLimitWindow.objects.all().delete()
    try_acquire(Priority.BACKFILL, units=int(10 * BACKFILL_SHARE))
    oura.reset_requests()
    outcome: list[str | None] = []

    def work() -> None:
        try:
            outcome.append(backfill_run(job_id=job.job_id))
        finally:
            db_connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(2.0)
    # The catch-up asks Oura nothing while the backfill share is spent...
    assert not [r for r in oura.requests if r.path.startswith("/v2/usercollection")]
    assert IngestionJob.objects.get(pk=job.pk).status == "running"
    # ...while a webhook's fetch (live priority) still gets a unit.
    try_acquire(Priority.LIVE)
    RateLimitWindow.objects.all().delete()  # the window rolls on

    worker.join(timeout=60)
    assert outcome == ["succeeded"]
    assert [r for r in oura.requests if r.path.startswith("/v2/usercollection")]


def test_a_person_whose_data_is_current_gets_no_job(subscribed) -> None:
    oura = subscribed
    now = timezone.now()
    current, _ = connect_user(oura, user_id="current", history_days=10)
    OuraConnection.objects.filter(pk=current.pk).update(connected_at=now - timedelta(days=30))
    # Webhooks for every type within the last hours, in Oura's webhook spelling (vo2_max).
    from ingestion.data_types import DATA_TYPES

    for name in WATCHED_TYPES:
        RawEvent.objects.create(
            kind=RawEvent.Kind.WEBHOOK, dedupe_key=uuid.uuid4().hex, user_id="current",
            data_type=DATA_TYPES[name].webhook_data_type, event_type="update",
            received_at=now - timedelta(hours=3),
        )  # fmt: skip
    # Someone who connected an hour ago has had no time to hear anything yet.
    connect_user(oura, user_id="newcomer", history_days=10)

    report = watchdog_run(now=now)

    assert (report.stale, report.catch_ups) == (0, [])
    assert not IngestionJob.objects.exists()
    assert not WatchdogFinding.objects.exists()


def test_an_active_backfill_reaching_today_covers_a_silent_person(subscribed) -> None:
    now = timezone.now()
    conn, _ = connect_user(subscribed, user_id="backfilling", history_days=10)
    OuraConnection.objects.filter(pk=conn.pk).update(connected_at=now - timedelta(days=20))
    history = job_start(
        user_id="backfilling", start=now.date() - timedelta(days=700), end=now.date(),
        data_types=None, requested_by="test",
    ).job  # fmt: skip

    report = watchdog_run(now=now)

    assert report.catch_ups == []
    assert list(IngestionJob.objects.values_list("job_id", flat=True)) == [history.job_id]
    covered = WatchdogFinding.objects.filter(user_id="backfilling")
    # Every default type is in the history job; none is left without a job.
    assert set(covered.values_list("action", "job_id")) == {("already_covered", history.job_id)}
    assert set(covered.values_list("data_type", flat=True)) == set(WATCHED_TYPES)


def test_catch_ups_per_run_are_bounded_and_the_longest_silent_go_first(subscribed) -> None:
    oura = subscribed
    now = timezone.now()
    for days, user_id in ((5, "quiet-5"), (9, "quiet-9"), (7, "quiet-7")):
        conn, _ = connect_user(oura, user_id=user_id, history_days=10)
        OuraConnection.objects.filter(pk=conn.pk).update(connected_at=now - timedelta(days=days))

    report = watchdog_run(now=now, max_catch_ups=2)

    assert sorted(IngestionJob.objects.values_list("user_id", flat=True)) == ["quiet-7", "quiet-9"]
    assert len(report.catch_ups) == 2
    deferred = WatchdogFinding.objects.filter(reason="stale_data", action="deferred")
    assert set(deferred.values_list("user_id", flat=True)) == {"quiet-5"}
    assert report.deferred == deferred.count() == len(WATCHED_TYPES)

    # The next run starts the deferred one and nothing else.
    watchdog_run(now=now, max_catch_ups=2)
    assert sorted(IngestionJob.objects.values_list("user_id", flat=True)) == [
        "quiet-5", "quiet-7", "quiet-9",
    ]  # fmt: skip


def repairs(kind: str) -> float:
    value = REGISTRY.get_sample_value("watchdog_repairs_total", {"reason": f"subscription_{kind}"})
    return value or 0.0


def test_expired_and_missing_subscriptions_are_found_and_synced_by_the_scheduled_task(
    subscribed,
) -> None:
    oura = subscribed
    expired, gone = oura.subscriptions[0], oura.subscriptions[1]
    oura.expire_subscription(expired["id"])
    with oura.store.lock:  # cancelled at Oura (a 410 does that); our mirror still has it
        del oura.store.subscriptions[gone["id"]]

    repairs_before = {reason: repairs(reason) for reason in ("expired", "missing")}

    record = upkeep_run(task="watchdog", tick=None)

    assert record.outcome == "ok"
    assert record.counts["subscriptions_expired"] == 1
    assert record.counts["subscriptions_missing"] == 1
    findings = {
        (f.reason, f.event_type, f.data_type, f.action) for f in WatchdogFinding.objects.all()
    }
    assert findings == {
        ("subscription_expired", expired["event_type"], expired["data_type"],
         "subscriptions_synced"),
        ("subscription_missing", gone["event_type"], gone["data_type"], "subscriptions_synced"),
    }  # fmt: skip
    at_oura = {(s["event_type"], s["data_type"]): s for s in oura.subscriptions}
    renewed = at_oura[(expired["event_type"], expired["data_type"])]
    assert datetime.fromisoformat(renewed["expiration_time"]) > timezone.now() + timedelta(days=80)
    assert (gone["event_type"], gone["data_type"]) in at_oura
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.UPKEEP_RUN, details__task="watchdog"
    ).exists()
    assert {reason: repairs(reason) - repairs_before[reason] for reason in repairs_before} == {
        "expired": 1, "missing": 1,
    }  # fmt: skip

    again = watchdog_run()
    assert (again.subscriptions_expired, again.subscriptions_missing) == (0, 0)
    assert WatchdogFinding.objects.count() == 2


def staff_client(group: str | None) -> tuple[Client, str]:
    from backoffice.tests.test_admin_permissions import staff_client as make

    call_command("setup_staff_groups", verbosity=0)
    return make(group)


def test_findings_are_shown_read_only_to_operators_and_refused_to_other_staff() -> None:
    finding = WatchdogFinding.objects.create(
        run_id=uuid.uuid4(), reason="stale_data", user_id="ivy", data_type="daily_sleep",
        action="deferred",
    )  # fmt: skip
    operator, _ = staff_client("operator")
    page = operator.get("/admin/jobs/watchdogfinding/")
    assert page.status_code == 200
    assert "daily_sleep" in page.content.decode()
    detail = operator.get(f"/admin/jobs/watchdogfinding/{finding.pk}/change/")
    assert detail.status_code == 200
    assert (
        operator.post(
            f"/admin/jobs/watchdogfinding/{finding.pk}/change/", {"action": "catch_up_started"}
        ).status_code
        == 403
    )
    assert WatchdogFinding.objects.get(pk=finding.pk).action == "deferred"

    support, actor = staff_client("support")
    assert support.get("/admin/jobs/watchdogfinding/").status_code == 403
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.STAFF_REFUSED, actor=actor, details__action="changelist"
    ).exists()
