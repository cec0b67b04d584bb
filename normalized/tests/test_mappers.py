"""Mappers are pure: a validated contract model in, the columns of one row out."""

from __future__ import annotations

from datetime import datetime

import pytest

from normalized import contracts, mappers
from normalized.models import Activity
from normalized.tests.normalizer_helpers import fixture_documents


def parsed(collection: str, index: int = 0) -> contracts.OuraDocument:
    document = contracts.parse_document(collection, fixture_documents(collection)[index])
    assert isinstance(document, contracts.OuraDocument)
    return document


def test_only_the_six_collections_with_tables_become_rows() -> None:
    assert set(mappers.TABLES) == {
        "daily_readiness", "daily_sleep", "daily_activity", "sleep", "workout", "session",
    }  # fmt: skip
    assert mappers.TABLES["workout"].model is Activity
    assert mappers.TABLES["session"].kind == "session"


@pytest.mark.parametrize("collection", sorted(mappers.TABLES))
def test_every_recorded_document_maps_to_columns_of_its_table(collection: str) -> None:
    mapping = mappers.TABLES[collection]
    columns = {f.name for f in mapping.model._meta.concrete_fields}
    for index in range(len(fixture_documents(collection))):
        row = mapping.row(parsed(collection, index))
        assert set(row) <= columns
        assert set(mapping.conflict_fields) - {"user_id"} <= set(row)


def test_readiness_keeps_scores_and_contributors_and_nulls_what_is_missing() -> None:
    raw = fixture_documents("daily_readiness")[0]
    row = mappers.daily_readiness_row(contracts.DailyReadiness.model_validate(raw))
    assert row["score"] == raw["score"]
    assert row["contributors"]["hrv_balance"] == raw["contributors"]["hrv_balance"]
    assert row["contributors"]["sleep_regularity"] is None  # absent from the 2024 recording
    assert row["timestamp"] == datetime.fromisoformat(raw["timestamp"])


def test_a_sleep_period_takes_its_readiness_score_from_the_nested_readiness() -> None:
    raw = fixture_documents("sleep")[0]
    row = mappers.sleep_period_row(contracts.SleepPeriod.model_validate(raw))
    assert row["readiness_score"] == raw["readiness"]["score"]
    assert row["average_hrv"] == float(raw["average_hrv"])
    assert row["type"] == raw["type"]


def test_a_workout_without_a_label_stores_blank_and_keeps_its_numbers() -> None:
    raw = next(d for d in fixture_documents("workout") if d["label"] is None)
    row = mappers.workout_row(contracts.Workout.model_validate(raw))
    assert (row["type"], row["label"], row["calories"]) == (raw["activity"], "", raw["calories"])


def test_a_workout_text_longer_than_its_column_is_refused_without_quoting_it() -> None:
    raw = dict(fixture_documents("workout")[0], activity="x" * 65)
    with pytest.raises(mappers.UnmappableDocument) as caught:
        mappers.workout_row(contracts.Workout.model_validate(raw))
    assert "x" * 10 not in str(caught.value)
    assert "activity" in str(caught.value)


def test_a_session_keeps_mood_and_summaries_of_its_samples() -> None:
    raw = fixture_documents("session")[0]
    row = mappers.session_row(contracts.Session.model_validate(raw))
    items = raw["motion_count"]["items"]
    assert row["metrics"]["mood"] == raw["mood"]
    assert row["metrics"]["heart_rate"] is None
    assert row["metrics"]["motion_count"] == {
        "average": round(sum(items) / len(items), 3), "min": min(items), "max": max(items),
        "count": len(items),
    }  # fmt: skip


def test_sample_summary_ignores_gaps_and_is_none_when_empty() -> None:
    sample = contracts.Sample.model_validate(
        {"interval": 5.0, "items": [None, 60.0, None, 70.0], "timestamp": "2024-01-01T00:00:00Z"}
    )
    assert mappers.sample_summary(sample) == {"average": 65.0, "min": 60.0, "max": 70.0, "count": 2}
    empty = contracts.Sample.model_validate(
        {"interval": 5.0, "items": [None], "timestamp": "2024-01-01T00:00:00Z"}
    )
    assert mappers.sample_summary(empty) is None
    assert mappers.sample_summary(None) is None


def test_a_mapping_refuses_a_document_of_another_type() -> None:
    with pytest.raises(TypeError):
        mappers.TABLES["workout"].row(parsed("session"))


def test_cardiovascular_age_without_an_id_gets_its_day_as_id() -> None:
    document = contracts.parse_document("daily_cardiovascular_age", {"day": "2024-11-11"})
    assert mappers.document_id(document) == "2024-11-11"
