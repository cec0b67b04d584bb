"""The normalizer end to end for the types of issue #18 (stress, SpO2, resilience,
cardiovascular age, VO2 max, sleep time, tags, rest mode): real Postgres, NATS and S3, Oura
only through the simulator."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from core.models import DeadLetter
from ingestion.models import RawEvent
from normalized import mappers
from normalized.models import (
    DailyCardiovascularAge,
    DailyResilience,
    DailySpO2,
    DailyStress,
    RestModePeriod,
    SleepTime,
    Tag,
    VO2Max,
)
from normalized.tests.normalizer_helpers import (
    connect_user,
    delete_durable,
    fixture_documents,
    make_spec,
    page_envelope,
    publish,
    run,
    snapshot,
    webhook_envelope,
)
from oura_simulator import OuraSimulator
from privacy.models import ErasureRequest
from privacy.services import user_erase

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]

# type[Any]: django-stubs types `objects` per model, not for the abstract base.
NEW_TYPES: dict[str, type[Any]] = {
    "daily_stress": DailyStress,
    "daily_spo2": DailySpO2,
    "daily_resilience": DailyResilience,
    "daily_cardiovascular_age": DailyCardiovascularAge,
    "vO2_max": VO2Max,
    "sleep_time": SleepTime,
    "enhanced_tag": Tag,
    "tag": Tag,
    "rest_mode_period": RestModePeriod,
}


@pytest.fixture
def spec():
    spec = make_spec()
    yield spec
    delete_durable(spec)


def test_a_daily_stress_webhook_is_fetched_stored_raw_and_becomes_a_row(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    stress = fixture_documents("daily_stress")[0]
    oura.put_document(conn.provider_user_id, "daily_stress", stress, emit=False)
    publish(webhook_envelope(conn, "update", "daily_stress", stress["id"]))

    stats = run(spec)

    assert (stats.acked, stats.dead_lettered) == (1, 0)
    row = DailyStress.objects.get(user_id=conn.user_id)
    assert (row.oura_id, row.day) == (stress["id"], date.fromisoformat(stress["day"]))
    assert (row.stress_high, row.recovery_high, row.day_summary) == (
        stress["stress_high"], stress["recovery_high"], stress["day_summary"],
    )  # fmt: skip
    assert row.normalizer_version == mappers.NORMALIZER_VERSION
    raw = RawEvent.objects.get(kind="document", object_id=stress["id"])
    assert row.raw_object_key == raw.object_key


def test_every_recorded_page_of_the_new_types_becomes_rows_and_a_redelivery_changes_nothing(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    envelopes = [
        page_envelope(conn, collection, fixture_documents(collection)) for collection in NEW_TYPES
    ]
    for envelope in envelopes:
        publish(envelope)

    stats = run(spec)

    assert (stats.acked, stats.dead_lettered) == (len(envelopes), 0)
    assert not DeadLetter.objects.exists()
    for collection, model in NEW_TYPES.items():
        rows = model.objects.filter(user_id=conn.user_id)
        if model is Tag:
            rows = rows.filter(kind=collection)
        documents = fixture_documents(collection)
        assert rows.count() == len(documents), collection
        assert {row.oura_id for row in rows} == {mappers.document_id(
            mappers.TABLES[collection].contract.model_validate(d)) for d in documents}  # fmt: skip
    before = snapshot()

    for envelope in envelopes:  # the same pages again, as a redelivery would bring them
        publish(envelope)
    run(spec)

    assert snapshot() == before


def test_a_deleted_enhanced_tag_leaves_no_row_and_the_plain_tag_of_the_same_id_stays(
    oura: OuraSimulator, spec
) -> None:
    conn = connect_user(oura)
    tag = fixture_documents("enhanced_tag")[0]
    plain = dict(fixture_documents("tag")[0], id=tag["id"])  # ids are per collection
    oura.put_document(conn.provider_user_id, "enhanced_tag", tag, emit=False)
    oura.put_document(conn.provider_user_id, "tag", plain, emit=False)
    publish(webhook_envelope(conn, "create", "enhanced_tag", tag["id"]))
    publish(webhook_envelope(conn, "create", "tag", tag["id"]))
    run(spec)
    assert Tag.objects.filter(oura_id=tag["id"]).count() == 2

    oura.delete_document(conn.provider_user_id, "enhanced_tag", tag["id"], emit=False)
    publish(webhook_envelope(conn, "delete", "enhanced_tag", tag["id"]))
    stats = run(spec)

    assert stats.acked == 1
    assert list(Tag.objects.values_list("kind", flat=True)) == ["tag"]


def test_erasing_a_person_removes_their_rows_of_every_new_type(oura: OuraSimulator, spec) -> None:
    conn = connect_user(oura)
    other = connect_user(oura, user_id="user-2")
    for person in (conn, other):
        for collection in NEW_TYPES:
            publish(page_envelope(person, collection, fixture_documents(collection)))
    run(spec)
    assert all(model.objects.filter(user_id=conn.user_id).exists() for model in NEW_TYPES.values())

    done = user_erase(user_id=conn.user_id, actor="test")

    assert done.status == ErasureRequest.Status.DONE
    assert done.receipt["verification"]["found"] == 0
    for model in NEW_TYPES.values():
        assert not model.objects.filter(user_id=conn.user_id).exists(), model.__name__
        assert model.objects.filter(user_id=other.user_id).exists(), model.__name__
