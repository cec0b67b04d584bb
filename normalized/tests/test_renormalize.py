"""`manage.py renormalize`: rows rebuilt from the raw objects in S3, and Oura never asked.

The rows are first written the way production writes them: a backfill job pages the simulator
(pages in S3, indexed, published) and the normalizer consumes the pages; a webhook then
updates one document (fetched, stored as its own object, upserted). Real Postgres, NATS, S3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core import raw_store
from core.provisioning import ProvisionReport, provision_bucket
from devstack.stack import Stack
from ingestion.models import OuraConnection, RawEvent
from jobs.backfill import backfill_run
from jobs.services import job_start
from jobs.tests.conftest import HISTORY_END, broker, connect_user  # noqa: F401 - broker: a fixture used by name
from normalized import mappers, services
from normalized.models import DailyReadiness, DeletedDocument, HeartRateSample, SleepPeriod
from normalized.renormalize import NothingToRebuild, collections_to_rebuild
from normalized.tests.normalizer_helpers import (
    delete_durable,
    make_spec,
    publish,
    run,
    webhook_envelope,
)
from oura_simulator import OuraSimulator, SimulatorConfig

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]

TYPES = ["daily_readiness", "sleep", "workout"]
DAYS = 45  # two backfill windows (30 days each): two pages per type
FIRST_DAY = HISTORY_END - timedelta(days=DAYS - 1)


@pytest.fixture
def oura_sim_config() -> SimulatorConfig:
    return SimulatorConfig(history_end=HISTORY_END.isoformat())


@pytest.fixture
def spec() -> Iterator[Any]:
    spec = make_spec()
    yield spec
    delete_durable(spec)


def backfill_and_normalize(oura: OuraSimulator, spec: Any, user_id: str) -> OuraConnection:
    conn, _ = connect_user(oura, user_id=user_id, history_days=DAYS + 5)
    job = job_start(
        user_id=user_id, start=FIRST_DAY, end=HISTORY_END, data_types=TYPES, requested_by="test"
    ).job
    assert backfill_run(job_id=job.job_id) == "succeeded"
    stats = run(spec)
    assert stats.dead_lettered == 0
    return conn


@pytest.fixture
def alice(oura: OuraSimulator, spec: Any, broker: Any) -> OuraConnection:  # noqa: F811 - the fixture imported above
    conn = backfill_and_normalize(oura, spec, "alice")
    assert DailyReadiness.objects.filter(user_id="alice").count() == DAYS
    assert SleepPeriod.objects.filter(user_id="alice").exists()
    return conn


REWRITTEN = {"id", "updated_at", "normalizer_version"}


def rows() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, minus what a rewrite legitimately changes (its id, when it
    was written, the version); `source_observed_at` and `raw_object_key` must stay."""
    models = {mapping.model for mapping in mappers.TABLES.values()}
    return {
        model.__name__: sorted(
            (
                {k: v for k, v in row.items() if k not in REWRITTEN}
                for row in model._default_manager.values()
            ),
            key=lambda r: (r["user_id"], str(r.get("kind", "")), r["oura_id"]),
        )
        for model in sorted(models, key=lambda m: m.__name__)
    }


def versions(model: Any, **filters: Any) -> set[int]:
    return set(
        model._default_manager.filter(**filters).values_list("normalizer_version", flat=True)
    )


def bump(monkeypatch: pytest.MonkeyPatch, collection: str, **changes: Any) -> None:
    """What a release does to a mapping when it changes what its rows hold."""
    mapping = mappers.TABLES[collection]
    changes.setdefault("version", mapping.version + 1)
    monkeypatch.setitem(mappers.TABLES, collection, dataclasses.replace(mapping, **changes))


def renormalize(*args: str) -> str:
    out = StringIO()
    call_command("renormalize", *args, stdout=out)
    return out.getvalue()


# --- the test ------------------------------------------------------------------------


def test_a_bumped_mapping_is_rebuilt_from_raw_with_its_new_version_and_no_oura_request(
    oura: OuraSimulator, alice: OuraConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = rows()
    # The new mapping also writes something the old one did not: proof the rows were mapped
    # again, not just relabelled.
    old_row = mappers.TABLES["daily_readiness"].to_row
    bump(monkeypatch, "daily_readiness", to_row=lambda doc: {**old_row(doc), "score": 1})
    oura.reset_requests()

    output = renormalize("--type", "daily_readiness", "--older-than-version", "2")

    assert oura.requests == []
    assert versions(DailyReadiness) == {2}
    assert set(DailyReadiness.objects.values_list("score", flat=True)) == {1}
    assert versions(SleepPeriod) == {1}  # other mappings did not change
    after = rows()
    for row in before["DailyReadiness"]:
        row["score"] = 1
    assert after == before  # same keys, sources and observation times; only the score moved
    assert f"{DAYS} written" in output
    assert "still below version" not in output


def test_running_it_twice_gives_the_same_rows_as_the_normalizer(
    oura: OuraSimulator, alice: OuraConnection
) -> None:
    before = rows()
    oura.reset_requests()

    renormalize()
    once = rows()
    renormalize()

    assert once == before
    assert rows() == before
    assert oura.requests == []


def test_with_older_than_version_a_second_run_reads_nothing_again(
    alice: OuraConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    bump(monkeypatch, "sleep")
    first = renormalize("--type", "sleep", "--older-than-version", "2")

    second = renormalize("--type", "sleep", "--older-than-version", "2")

    assert versions(SleepPeriod) == {2}
    assert "done, up to raw event id" in first
    assert " 0 objects read" not in first
    assert " 0 objects read" in second


# --- newest wins, tombstones --------------------------------------------------------------------


def test_a_row_updated_by_a_webhook_is_rebuilt_from_the_webhook_not_the_older_page(
    oura: OuraSimulator, alice: OuraConnection, spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    period = SleepPeriod.objects.filter(user_id="alice").order_by("day").first()
    assert period is not None
    document = oura.get_document(alice.provider_user_id, "sleep", period.oura_id)
    assert document is not None
    oura.put_document(alice.provider_user_id, "sleep", {**document, "latency": 4321}, emit=False)
    publish(webhook_envelope(alice, "update", "sleep", period.oura_id))
    assert run(spec).acked == 1
    updated = SleepPeriod.objects.get(pk=period.pk)
    assert (updated.latency, updated.raw_object_key != period.raw_object_key) == (4321, True)
    bump(monkeypatch, "sleep")
    oura.reset_requests()

    # In one batch, the page's copy and the webhook's meet in one upsert; one object per
    # batch, the page's copy meets the row the webhook wrote.
    for batch_size in ("200", "1"):
        output = renormalize("--type", "sleep", "--batch-size", batch_size)

        rebuilt = SleepPeriod.objects.get(pk=period.pk)
        assert rebuilt.latency == 4321  # the page object (older) read too did not undo it
        assert rebuilt.raw_object_key == updated.raw_object_key
        assert rebuilt.source_observed_at == updated.source_observed_at
        assert rebuilt.normalizer_version == 2
    assert "1 newer kept" in output
    assert oura.requests == []


def test_a_deleted_document_does_not_come_back(alice: OuraConnection) -> None:
    period = SleepPeriod.objects.filter(user_id="alice").first()
    assert period is not None
    services.delete_document(
        user_id="alice", provider_user_id=alice.provider_user_id, collection="sleep",
        oura_id=period.oura_id,
    )  # fmt: skip
    count = SleepPeriod.objects.filter(user_id="alice").count()

    output = renormalize("--type", "sleep")

    assert not SleepPeriod.objects.filter(oura_id=period.oura_id).exists()
    assert SleepPeriod.objects.filter(user_id="alice").count() == count
    assert DeletedDocument.objects.filter(oura_id=period.oura_id).exists()
    assert "1 deleted" in output


# --- selection ------------------------------------------------------------------------------


def test_user_and_days_limit_what_is_rebuilt(
    oura: OuraSimulator, alice: OuraConnection, spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backfill_and_normalize(oura, spec, "bob")
    bump(monkeypatch, "daily_readiness")
    first, last = HISTORY_END - timedelta(days=6), HISTORY_END - timedelta(days=2)

    renormalize(
        "--user", "bob", "--since", first.isoformat(), "--until", last.isoformat(),
        "--older-than-version", "2",
    )  # fmt: skip

    assert versions(DailyReadiness, user_id="alice") == {1}
    in_days = {"user_id": "bob", "day__gte": first, "day__lte": last}
    assert versions(DailyReadiness, **in_days) == {2}
    assert DailyReadiness.objects.filter(**in_days).count() == 5
    assert versions(DailyReadiness, user_id="bob", day__gt=last) == {1}
    assert versions(DailyReadiness, user_id="bob", day__lt=first) == {1}


def test_an_unknown_type_is_refused_and_an_alias_means_its_registry_name() -> None:
    with pytest.raises(CommandError, match=r"unknown data type.*steps"):
        renormalize("--type", "steps")
    with pytest.raises(CommandError, match="ring_configuration"):
        renormalize("--type", "ring_configuration")  # kept raw only: no rows to rebuild
    assert collections_to_rebuild(["daily_sleep", "sleep"]) == ["daily_sleep", "sleep"]

    def outcome(name: str) -> object:
        try:
            return collections_to_rebuild([name])
        except NothingToRebuild as exc:
            return str(exc)

    assert outcome("vo2_max") == outcome("vO2_max")
    assert "vo2_max" not in str(outcome("vo2_max"))


@pytest.mark.usefixtures("broker")
def test_heart_rate_samples_are_rebuilt_for_the_days_asked_when_the_version_moves(
    oura: OuraSimulator, spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect_user(oura, user_id="carol", history_days=15)
    job = job_start(
        user_id="carol", start=HISTORY_END - timedelta(days=9), end=HISTORY_END,
        data_types=["heartrate"], requested_by="test",
    ).job  # fmt: skip
    assert backfill_run(job_id=job.job_id) == "succeeded"
    assert run(spec).dead_lettered == 0
    samples = HeartRateSample.objects.filter(user_id="carol").order_by("timestamp")
    fields = ("timestamp", "bpm", "source", "raw_object_key", "source_observed_at")
    before = list(samples.values(*fields))
    # Heart rate has no TableMapping: its writer (normalized/timeseries.py) writes the global.
    monkeypatch.setattr(mappers, "NORMALIZER_VERSION", 2)
    day = HISTORY_END - timedelta(days=3)
    oura.reset_requests()

    renormalize(
        "--type", "heartrate", "--older-than-version", "2",
        "--since", day.isoformat(), "--until", day.isoformat(),
    )  # fmt: skip

    assert oura.requests == []
    assert list(samples.values(*fields)) == before
    start = datetime.combine(day, time.min, UTC)
    on_the_day = {"timestamp__gte": start, "timestamp__lt": start + timedelta(days=1)}
    assert samples.filter(**on_the_day).exists()
    assert versions(HeartRateSample, user_id="carol", **on_the_day) == {2}
    assert versions(HeartRateSample, user_id="carol", timestamp__lt=start) == {1}
    after = on_the_day["timestamp__lt"]
    assert versions(HeartRateSample, user_id="carol", timestamp__gte=after) == {1}


# --- S3 ---------------------------------------------------------------------------------------


def test_a_missing_object_is_counted_and_the_rest_is_rebuilt(
    alice: OuraConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = RawEvent.objects.filter(user_id="alice", kind="page", data_type="daily_readiness")
    gone = pages.order_by("pk").first()
    assert gone is not None
    raw_store.delete_keys([gone.object_key])
    bump(monkeypatch, "daily_readiness")
    stranded = DailyReadiness.objects.filter(raw_object_key=gone.object_key).count()
    assert 0 < stranded < DAYS

    output = renormalize("--type", "daily_readiness", "--older-than-version", "2")

    assert "1 missing from S3" in output
    assert versions(DailyReadiness, raw_object_key=gone.object_key) == {1}
    assert DailyReadiness.objects.filter(normalizer_version=2).count() == DAYS - stranded
    assert f"{stranded} selected rows are still below version 2" in output


def test_an_erased_person_gets_nothing_back_and_the_others_are_rebuilt(
    oura: OuraSimulator, alice: OuraConnection, spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backfill_and_normalize(oura, spec, "bob")
    call_command("erase_user", "alice", stdout=StringIO())
    bump(monkeypatch, "daily_readiness")

    output = renormalize("--type", "daily_readiness", "--older-than-version", "2")

    assert not DailyReadiness.objects.filter(user_id="alice").exists()
    assert versions(DailyReadiness) == {2}
    assert DailyReadiness.objects.filter(user_id="bob").count() == DAYS
    assert "done, up to raw event id" in output


@pytest.mark.services
def test_with_s3_down_it_stops_clearly_and_writes_nothing(
    alice: OuraConnection, monkeypatch: pytest.MonkeyPatch, stack: Stack
) -> None:
    bump(monkeypatch, "daily_readiness")
    stack.stop("s3")
    try:
        with pytest.raises(CommandError, match=r"S3 unavailable.*Resume with --after-id 0"):
            renormalize("--type", "daily_readiness", "--older-than-version", "2")
        assert versions(DailyReadiness) == {1}
    finally:
        stack.start("s3")
        raw_store.reset_client()
        provision_bucket(ProvisionReport())  # moto kept the objects in memory: they are gone


def test_resuming_after_an_id_skips_what_was_done(
    alice: OuraConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    bump(monkeypatch, "daily_readiness")
    pages = list(RawEvent.objects.filter(kind="page", data_type="daily_readiness").order_by("pk"))
    assert len(pages) > 1
    done = pages[0]

    renormalize("--type", "daily_readiness", "--after-id", str(done.pk))

    assert versions(DailyReadiness, raw_object_key=done.object_key) == {1}
    assert versions(DailyReadiness, raw_object_key__in=[p.object_key for p in pages[1:]]) == {2}
