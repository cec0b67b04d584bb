"""Mappers are pure: a validated contract model in, the columns of one row out."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from ingestion.data_types import DATA_TYPES, Kind
from normalized import contracts, mappers
from normalized.models import Activity, Tag
from normalized.tests.normalizer_helpers import FIXTURES, fixture_documents


def parsed(collection: str, index: int = 0) -> contracts.OuraDocument:
    document = contracts.parse_document(collection, fixture_documents(collection)[index])
    assert isinstance(document, contracts.OuraDocument)
    return document


def test_every_daily_document_and_interval_type_of_the_registry_becomes_rows() -> None:
    expected = {
        name for name, data_type in DATA_TYPES.items()
        if data_type.kind in (Kind.DAILY, Kind.DOCUMENT, Kind.INTERVAL)
    }  # fmt: skip
    assert expected == {
        "daily_readiness", "daily_sleep", "daily_activity", "sleep", "workout", "session",
        "daily_stress", "daily_spo2", "daily_resilience", "daily_cardiovascular_age", "vO2_max",
        "sleep_time", "enhanced_tag", "tag", "rest_mode_period",
    }  # fmt: skip
    assert expected <= set(mappers.TABLES)
    assert mappers.registry_mismatches() == []
    assert mappers.TABLES["workout"].model is Activity
    assert mappers.TABLES["session"].kind == "session"
    assert mappers.TABLES["tag"].model is mappers.TABLES["enhanced_tag"].model is Tag


def test_the_registry_check_names_a_type_without_a_table_and_a_table_without_a_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tables = dict(mappers.TABLES)
    stress = tables.pop("daily_stress")
    tables["not_an_oura_type"] = stress
    monkeypatch.setattr(mappers, "TABLES", tables)

    problems = mappers.registry_mismatches()

    assert any(p.startswith("daily_stress: daily type without a mapping") for p in problems)
    assert any(p.startswith("not_an_oura_type: mapped but not in") for p in problems)


def test_the_registry_check_refuses_a_daily_type_not_keyed_by_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tables = dict(mappers.TABLES)
    tables["daily_spo2"] = dataclasses.replace(
        tables["daily_spo2"], conflict_fields=("user_id", "oura_id")
    )
    monkeypatch.setattr(mappers, "TABLES", tables)

    assert mappers.registry_mismatches() == ["daily_spo2: daily type not keyed by (user_id, day)"]


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


# --- The types of issue #18 ---------------------------------------------------------------

EXAMPLES = Path("/work/shared/oura/examples")
if not EXAMPLES.exists():  # the vendored copy travels with the repository
    EXAMPLES = FIXTURES.parent / "examples"


def example(collection: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / f"{collection}.example.json").read_text())
    return document


@pytest.mark.parametrize(
    "collection",
    [
        "daily_stress", "daily_spo2", "daily_resilience", "daily_cardiovascular_age", "vO2_max",
        "sleep_time", "enhanced_tag", "tag", "rest_mode_period",
    ],
)  # fmt: skip
def test_oura_documented_example_maps_to_columns_of_its_table(collection: str) -> None:
    mapping = mappers.TABLES[collection]
    columns = {f.name for f in mapping.model._meta.concrete_fields}

    row = mapping.row(contracts.parse_document_as(mapping.contract, example(collection)))

    assert set(row) <= columns
    assert row["oura_id"]
    assert isinstance(row["day"], date)


def test_daily_stress_keeps_its_seconds_and_summary() -> None:
    raw = fixture_documents("daily_stress")[0]
    row = mappers.daily_stress_row(contracts.DailyStress.model_validate(raw))
    assert (row["stress_high"], row["recovery_high"], row["day_summary"]) == (
        raw["stress_high"], raw["recovery_high"], raw["day_summary"],
    )  # fmt: skip


def test_daily_stress_of_an_empty_day_stores_blank_summary_and_nulls() -> None:
    raw = {"id": "x", "day": "2024-11-13", "stress_high": None, "recovery_high": None,
           "day_summary": None}  # fmt: skip
    row = mappers.daily_stress_row(contracts.DailyStress.model_validate(raw))
    assert (row["stress_high"], row["day_summary"]) == (None, "")


def test_daily_spo2_keeps_the_average_and_nulls_a_document_without_one() -> None:
    raw = fixture_documents("daily_spo2")[0]
    row = mappers.daily_spo2_row(contracts.DailySpO2.model_validate(raw))
    assert row["spo2_percentage"] == raw["spo2_percentage"]["average"]
    assert row["breathing_disturbance_index"] == raw["breathing_disturbance_index"]
    empty = contracts.DailySpO2.model_validate(
        {"id": "y", "day": "2024-11-13", "spo2_percentage": None}
    )
    assert mappers.daily_spo2_row(empty)["spo2_percentage"] is None


def test_daily_resilience_spreads_its_contributors_into_columns() -> None:
    raw = fixture_documents("daily_resilience")[0]
    row = mappers.daily_resilience_row(contracts.DailyResilience.model_validate(raw))
    assert row["level"] == raw["level"]
    assert [row["sleep_recovery"], row["daytime_recovery"], row["stress"]] == [
        raw["contributors"]["sleep_recovery"], raw["contributors"]["daytime_recovery"],
        raw["contributors"]["stress"],
    ]  # fmt: skip


def test_recorded_cardiovascular_age_without_id_is_keyed_by_its_day() -> None:
    raw = fixture_documents("daily_cardiovascular_age")[0]
    assert "id" not in raw  # as Oura sent it in Dec 2024
    row = mappers.daily_cardiovascular_age_row(contracts.DailyCardiovascularAge.model_validate(raw))
    assert (row["oura_id"], row["vascular_age"], row["pulse_wave_velocity"]) == (
        raw["day"], raw["vascular_age"], None,
    )  # fmt: skip


def test_vo2_max_keeps_its_value_and_time() -> None:
    raw = fixture_documents("vO2_max")[0]
    row = mappers.vo2_max_row(contracts.VO2Max.model_validate(raw))
    assert row["vo2_max"] == raw["vo2_max"]
    assert row["timestamp"] == datetime.fromisoformat(raw["timestamp"])


def test_sleep_time_keeps_the_optimal_bedtime_window_or_null() -> None:
    recorded = fixture_documents("sleep_time")[0]
    row = mappers.sleep_time_row(contracts.SleepTime.model_validate(recorded))
    assert row["optimal_bedtime"] is None
    assert (row["recommendation"], row["status"]) == (
        recorded["recommendation"],
        recorded["status"],
    )
    documented = example("sleep_time")
    row = mappers.sleep_time_row(contracts.SleepTime.model_validate(documented))
    assert row["optimal_bedtime"] == documented["optimal_bedtime"]


def test_an_enhanced_tag_starts_on_its_start_day_and_blanks_what_is_missing() -> None:
    raw = fixture_documents("enhanced_tag")[0]
    row = mappers.enhanced_tag_row(contracts.EnhancedTag.model_validate(raw))
    assert row["day"] == date.fromisoformat(raw["start_day"])
    assert row["start"] == datetime.fromisoformat(raw["start_time"])
    assert (row["end"], row["end_day"], row["custom_name"], row["comment"]) == (None, None, "", "")
    assert (row["tag_type_code"], row["tags"]) == (raw["tag_type_code"], [])


def test_a_deprecated_tag_keeps_its_text_as_comment_and_its_tag_codes() -> None:
    raw = fixture_documents("tag")[0]
    row = mappers.tag_row(contracts.Tag.model_validate(raw))
    assert (row["comment"], row["tags"]) == (raw["text"], raw["tags"])
    assert row["start"] == datetime.fromisoformat(raw["timestamp"])


def test_a_tag_comment_longer_than_the_limit_is_refused_without_quoting_it() -> None:
    raw = dict(fixture_documents("enhanced_tag")[0], comment="secret " * 1000)
    with pytest.raises(mappers.UnmappableDocument) as caught:
        mappers.enhanced_tag_row(contracts.EnhancedTag.model_validate(raw))
    assert "secret" not in str(caught.value)


def test_a_tag_with_an_empty_id_is_refused() -> None:
    raw = dict(fixture_documents("enhanced_tag")[0], id="")
    with pytest.raises(mappers.UnmappableDocument):
        mappers.enhanced_tag_row(contracts.EnhancedTag.model_validate(raw))


def test_a_rest_mode_period_keeps_its_span_and_episodes_as_json() -> None:
    raw = example("rest_mode_period")
    row = mappers.rest_mode_period_row(contracts.RestModePeriod.model_validate(raw))
    assert row["day"] == date.fromisoformat(raw["start_day"])
    assert row["end_day"] == date.fromisoformat(raw["end_day"])
    assert row["episodes"][0]["tags"] == raw["episodes"][0]["tags"]
    assert datetime.fromisoformat(row["episodes"][0]["timestamp"]) == datetime.fromisoformat(
        raw["episodes"][0]["timestamp"]
    )
    json.dumps(row["episodes"])  # stored as JSON by the upsert
