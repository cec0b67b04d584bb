"""The relay against real Postgres, NATS and S3, in process and as `manage.py run_relay`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from core import raw_store
from ingestion.models import RawEvent
from ingestion.relay import relay_backlog_counts, relay_drain
from ingestion.tests.webhook_helpers import connect, raw_stream_messages, record_unpublished
from ingestion.webhook_services import WEBHOOK_SUBJECT

pytestmark = pytest.mark.django_db(transaction=True)

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


@pytest.fixture(autouse=True)
def _empty_streams(clean_streams: None) -> None:
    """Each test reads only what it published."""


def assert_archived_and_published_once(count: int) -> None:
    rows = list(RawEvent.objects.all())
    assert len(rows) == count
    for row in rows:
        assert row.archived_at is not None
        assert row.published_at is not None
        assert row.envelope is None
        day = row.received_at.date().isoformat()
        assert row.object_key == (
            f"provider=oura/date={day}/user={row.user_id or 'unknown'}/event={row.event_id}.json"
        )
        stored = raw_store.get(row.object_key)
        assert hashlib.sha256(stored).hexdigest() == row.sha256
        assert len(stored) == row.size_bytes
    messages = raw_stream_messages()
    assert sorted(m.msg_id for m in messages) == sorted(str(r.event_id) for r in rows)


def test_relay_publishes_archives_with_sse_and_then_clears_the_envelope() -> None:
    connect()
    events = record_unpublished(5)
    assert relay_backlog_counts() == {"publish": 5, "archive": 5}

    totals = relay_drain(batch_size=2, grace_s=0)

    assert (totals.published, totals.archived, totals.failed) == (5, 5, 0)
    assert_archived_and_published_once(5)
    row = RawEvent.objects.get(event_id=events[0].event_id)
    head = raw_store.head(row.object_key)
    assert head is not None
    assert head["ServerSideEncryption"] == settings.S3_SSE
    assert raw_store.get(row.object_key) == events[0].envelope  # the exact stored bytes
    messages = {m.msg_id: m for m in raw_stream_messages()}
    assert messages[str(row.event_id)].data == events[0].envelope
    assert messages[str(row.event_id)].subject == WEBHOOK_SUBJECT
    assert relay_backlog_counts() == {"publish": 0, "archive": 0}


def test_a_second_run_finds_nothing_to_do() -> None:
    connect()
    record_unpublished(3)
    relay_drain(grace_s=0)
    again = relay_drain(grace_s=0)
    assert (again.published, again.archived) == (0, 0)
    assert len(raw_stream_messages()) == 3


def test_republishing_after_a_lost_ack_reads_the_archive_and_is_deduplicated() -> None:
    connect()
    [event] = record_unpublished(1)
    relay_drain(grace_s=0)
    # As if the ack of the first publish never reached us: the row says "unpublished",
    # and its envelope is already gone from Postgres.
    RawEvent.objects.filter(pk=event.pk).update(published_at=None)

    assert relay_drain(grace_s=0).published == 1
    [message] = raw_stream_messages()  # JetStream dropped the copy (same Nats-Msg-Id)
    assert message.data == event.envelope


def test_orphans_are_archived_under_user_unknown_and_never_published() -> None:
    record_unpublished(2, user="oura-user-nobody-knows")
    totals = relay_drain(grace_s=0)
    assert (totals.published, totals.archived) == (0, 2)
    for row in RawEvent.objects.all():
        assert "/user=unknown/" in row.object_key
        assert row.envelope is None
        assert row.published_at is None
    assert raw_stream_messages() == []


def test_rows_inside_the_grace_period_are_left_to_the_request_path() -> None:
    connect()
    record_unpublished(2)
    totals = relay_drain(grace_s=60)
    assert (totals.published, totals.archived) == (0, 0)
    assert RawEvent.objects.filter(archived_at__isnull=True).count() == 2


def relay_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, MANAGE, "run_relay", "--grace", "0", *args],
        env=env | {"LOG_LEVEL": "INFO"},  # relay_started and relay_stopped are INFO records
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_relay_killed_mid_batch_and_restarted_archives_and_publishes_everything_once(
    subprocess_env: dict[str, str],
) -> None:
    connect()
    total = 400
    record_unpublished(total)
    relay = relay_process(subprocess_env, "--batch-size", "50", "--workers", "1")
    try:
        deadline = time.monotonic() + 60
        while RawEvent.objects.filter(archived_at__isnull=False).count() < 50:
            assert relay.poll() is None, relay.communicate()[0]
            assert time.monotonic() < deadline, "the relay made no progress"
            time.sleep(0.02)
        relay.send_signal(signal.SIGKILL)
    finally:
        relay.kill()
        relay.communicate(timeout=10)
    done_before_restart = RawEvent.objects.filter(archived_at__isnull=False).count()
    assert done_before_restart < total, "killed too late to be mid-backlog"

    restarted = relay_process(subprocess_env, "--once", "--batch-size", "50")
    output, _ = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, output

    assert_archived_and_published_once(total)


def log_record(line: str) -> dict[str, object]:
    """One line of the relay's output as the JSON log record it must be."""
    record = json.loads(line)
    assert isinstance(record, dict), line
    return record


def test_relay_stops_cleanly_on_sigterm(subprocess_env: dict[str, str]) -> None:
    relay = relay_process(subprocess_env, "--interval", "0.2")
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 30
        assert relay.stdout is not None
        while not any('"relay_started"' in line for line in lines):
            assert relay.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(relay.stdout.readline())
        relay.send_signal(signal.SIGTERM)
        output, _ = relay.communicate(timeout=15)
    finally:
        relay.kill()
    output = "".join(lines) + output
    assert relay.returncode == 0, output
    # One JSON line per record: no plain-text copy of the start or the stop.
    records = [log_record(line) for line in output.splitlines() if line.strip()]
    events = [record["message"] for record in records]
    assert events.count("relay_started") == 1, output
    stop_requested = [r for r in records if r["message"] == "relay_stop_requested"]
    assert [r["signal"] for r in stop_requested] == ["SIGTERM"], output
    assert events.index("relay_stop_requested") < events.index("relay_stopped"), output


@pytest.mark.parametrize("nice", ["-1", "20"])
def test_relay_refuses_a_niceness_outside_0_to_19(nice: str) -> None:
    with pytest.raises(CommandError, match="--nice"):
        call_command("run_relay", "--once", "--nice", nice)


def test_a_niced_relay_runs_at_that_niceness_and_drains(subprocess_env: dict[str, str]) -> None:
    connect()
    record_unpublished(3)
    relay = relay_process(subprocess_env, "--once", "--nice", "7")
    niceness = None
    deadline = time.monotonic() + 30
    while relay.poll() is None and time.monotonic() < deadline:
        # The last reading is after os.nice().
        with contextlib.suppress(OSError):
            niceness = os.getpriority(os.PRIO_PROCESS, relay.pid)
        time.sleep(0.01)
    output, _ = relay.communicate(timeout=60)

    assert relay.returncode == 0, output
    assert niceness == 7
    assert RawEvent.objects.filter(archived_at__isnull=True).count() == 0
