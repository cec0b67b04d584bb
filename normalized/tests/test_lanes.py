"""The normalizer's two lanes: webhooks and backfill pages on their own durables (issue #17).

A fleet backfill put live webhooks behind thousands of pages on one first-in-first-out
durable (bench/README.md, "Fleet backfill"). These tests hold the split to what it promises:
every raw subject has exactly one owner, a webhook is written while pages are still queued,
and the split takes over an old single durable without losing or replaying its stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import ConsumerInfo

from core import bus
from core.consumers import CONSUMERS, PullConsumer, processes
from core.messages import WEBHOOK_SUBJECT, page_subject
from ingestion.data_types import BACKFILL_TYPES
from normalized.bus_consumers import PAGES, WEBHOOKS
from normalized.models import Activity
from normalized.tests.normalizer_helpers import (
    connect_user,
    fixture_documents,
    page_envelope,
    publish,
    webhook_envelope,
)
from oura_simulator import OuraSimulator

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or token not in ("*", have[index]):
            return False
    return len(want) == len(have)


def test_every_raw_subject_has_exactly_one_owning_durable() -> None:
    published = [WEBHOOK_SUBJECT, *(page_subject(name) for name in BACKFILL_TYPES)]
    raw = [spec for spec in CONSUMERS.values() if spec.stream == "HEALTH_RAW"]
    for subject in published:
        owners = [s.durable for s in raw if any(_matches(p, subject) for p in s.subjects)]
        assert len(owners) == 1, f"{subject}: owned by {owners}"
    assert [s.name for s in processes()["normalizer"]] == ["normalizer", "normalizer_pages"]
    # The matcher itself: a broad filter would own both kinds, which is what the split ends.
    assert _matches("health.raw.oura.>", WEBHOOK_SUBJECT)
    assert not _matches("health.raw.oura.webhook", page_subject("sleep"))


def test_registering_a_second_owner_of_a_durable_is_refused() -> None:
    from core.consumers import register

    register(WEBHOOKS)  # the same entry again: a no-op
    with pytest.raises(ValueError, match="already belongs"):
        register(dataclasses.replace(WEBHOOKS, name="another"))
    with pytest.raises(ValueError, match="registered twice"):
        register(dataclasses.replace(WEBHOOKS, batch_size=1))
    assert "another" not in CONSUMERS


# --- with the bus -----------------------------------------------------------------------------


def _info(durable: str) -> ConsumerInfo | None:
    async def _get() -> ConsumerInfo | None:
        nc = await bus.connect(name="tests")
        try:
            info: ConsumerInfo = await nc.jetstream().consumer_info("HEALTH_RAW", durable)
            return info
        except Exception:
            return None
        finally:
            await nc.close()

    return asyncio.run(_get())


def _unhandled(info: ConsumerInfo | None) -> int:
    """Messages of the durable not yet acked (pending plus in hand); -1 if it is missing."""
    if info is None:
        return -1
    return (info.num_pending or 0) + (info.num_ack_pending or 0)


def _delete(*durables: str) -> None:
    async def _go() -> None:
        nc = await bus.connect(name="tests")
        try:
            for durable in durables:
                try:
                    await nc.jetstream().delete_consumer("HEALTH_RAW", durable)
                except Exception:  # noqa: S112 - not there is what we want
                    continue
        finally:
            await nc.close()

    asyncio.run(_go())


@pytest.fixture
def lane_durables() -> Iterator[None]:
    """The registry's own durables, fresh: these tests are about their creation."""
    _delete(WEBHOOKS.durable, PAGES.durable)
    yield
    _delete(WEBHOOKS.durable, PAGES.durable)


pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
@pytest.mark.usefixtures("clean_streams", "lane_durables")
def test_the_page_lane_takes_over_after_the_old_single_durables_ack_floor(
    oura: OuraSimulator,
) -> None:
    conn = connect_user(oura)
    documents = fixture_documents("daily_readiness")[:1]
    # The old single lane: one durable for every raw subject, as before the split.
    old = dataclasses.replace(WEBHOOKS, filter_subject="health.raw.oura.>")
    puller = PullConsumer(old)
    puller.start()
    try:
        for _ in range(3):
            publish(page_envelope(conn, "daily_readiness", documents))
        publish(webhook_envelope(conn, "create", "workout", "w-1"))
        for _ in range(2):
            publish(page_envelope(conn, "daily_readiness", documents))
        # It handled the first four (three pages, the webhook) and then stopped.
        fetched = puller.fetch(4, timeout=2.0)
        assert len(fetched) == 4
        for msg in fetched:
            puller.ack(msg)
    finally:
        puller.close()
    old_info = _info("normalizer")
    assert old_info is not None
    assert old_info.ack_floor is not None
    # Its fourth delivery (the stream's sequence numbers go on across purges).
    assert old_info.ack_floor.consumer_seq == 4

    pages = PullConsumer(PAGES)
    pages.start()
    try:
        info = _info(PAGES.durable)
        assert info is not None
        # Only the two pages after the old floor: the three handled ones are not replayed.
        assert info.num_pending == 2
        assert info.config.filter_subjects == list(PAGES.subjects)
        # Started again, the durable keeps its own position (no second takeover).
        handled = pages.fetch(2, timeout=2.0)
        assert len(handled) == 2
        for msg in handled:
            pages.ack(msg)
    finally:
        pages.close()
    again = PullConsumer(PAGES)
    again.start()
    again.close()
    info = _info(PAGES.durable)
    assert info is not None
    assert info.num_pending == 0
    assert info.num_ack_pending == 0


@pytestmark_db
@pytest.mark.usefixtures("clean_streams", "lane_durables")
def test_a_fresh_install_reads_the_stream_from_its_start(oura: OuraSimulator) -> None:
    conn = connect_user(oura)
    for _ in range(3):
        publish(page_envelope(conn, "daily_readiness", fixture_documents("daily_readiness")[:1]))
    pages = PullConsumer(PAGES)
    pages.start()
    pages.close()
    info = _info(PAGES.durable)
    assert info is not None
    assert info.num_pending == 3


def _stopped_records(output: str) -> dict[str, dict[str, Any]]:
    records = [
        json.loads(line) for line in output.splitlines()
        if line.startswith("{") and '"consumer_stopped"' in line
    ]  # fmt: skip
    return {record["consumer"]: record for record in records}


@pytestmark_db
@pytest.mark.usefixtures("clean_streams", "lane_durables")
def test_a_webhook_is_written_while_a_backlog_of_pages_is_still_queued(
    oura: OuraSimulator, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    conn = connect_user(oura)
    readiness = fixture_documents("daily_readiness")
    # The backlog: pages of one person's days, each taking that person's advisory lock, so
    # they are written one after another whatever the lane's concurrency.
    backlog = 300
    for n in range(backlog):
        publish(page_envelope(conn, "daily_readiness", readiness[n % len(readiness) :][:3]))
    document = oura.put_document(
        conn.provider_user_id, "workout", None, emit=False, day=date(2024, 6, 1)
    )
    publish(webhook_envelope(conn, "create", "workout", document["id"]))

    env = subprocess_env | {
        "OURA_API_BASE_URL": oura.base_url,
        "OURA_TOKEN_URL": f"{oura.base_url}/oauth/token",
        "LOG_LEVEL": "INFO",
    }
    # Its log goes to a file: a pipe nobody reads while we wait would fill and block it.
    log = tmp_path / "consumer.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_consumer", "normalizer"],
        cwd=PROJECT_DIR, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not Activity.objects.filter(oura_id=document["id"]).exists():
            assert time.monotonic() < deadline, "the webhook's row never came"
            time.sleep(0.02)
        # Under one first-in-first-out durable the webhook came after all 300 pages.
        assert _unhandled(_info(PAGES.durable)) > 0, "the pages were all done first"
        deadline = time.monotonic() + 120
        while (left := _unhandled(_info(PAGES.durable))) != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the page lane did not drain: {left} left")
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    stopped = _stopped_records(output)
    assert set(stopped) == {"normalizer", "normalizer_pages"}
    assert stopped["normalizer"]["acked"] == 1
    assert stopped["normalizer_pages"]["acked"] == backlog
