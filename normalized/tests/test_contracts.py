"""The Oura contracts against the official spec (S137), the recorded fixtures and the examples.

No database: these tests only read the Oura research snapshot, by default the copy vendored in
oura_simulator/tests/contract_data (OURA_CONTRACT_DIR points elsewhere).
"""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ingestion.data_types import WEBHOOK_TYPES
from normalized import contracts
from normalized.contracts import (
    DOCUMENT_MODELS,
    ContractViolation,
    DailyActivity,
    DailyCardiovascularAge,
    DailyReadiness,
    DailySpO2,
    HeartRateRow,
    OuraContract,
    OuraDocument,
    RingBatteryLevelRow,
    RingConfiguration,
    SleepPeriod,
    Workout,
    cardiovascular_age_fallback_id,
    parse_document,
    parse_document_as,
)

# The in-repo copy of the shared research snapshot (a fresh clone has it; see its README).
VENDORED_OURA_DIR = Path(__file__).resolve().parents[2] / "oura_simulator/tests/contract_data"
OURA_DIR = Path(os.environ.get("OURA_CONTRACT_DIR", VENDORED_OURA_DIR))
FIXTURES_DIR = OURA_DIR / "fixtures"
EXAMPLES_DIR = OURA_DIR / "examples"

# Where our models deliberately differ from S137. Each entry is (S137 schema, field): reason.
REQUIRED_IN_SPEC_BUT_OPTIONAL_HERE = {
    ("PublicHeartRateRow", "timestamp_unix"): (
        "absent in the Dec-2024 recordings (EXO) and 0 in 2026 (FN26); derived from timestamp"
    ),
    ("PublicRingBatteryLevelRow", "timestamp_unix"): (
        "same time-series row family as heartrate; assumed to drift the same way"
    ),
    ("PublicDailyCardiovascularAge", "id"): (
        "real Dec-2024 documents have no id (EXO); cardiovascular_age_fallback_id covers it"
    ),
    ("PublicSpo2AggregatedValues", "average"): ("null or absent on content-free documents (GOREP)"),
}
NULLABLE_HERE_BUT_NOT_IN_SPEC = {
    ("PublicDailyCardiovascularAge", "id"): "missing id is read as None, then the fallback id",
    ("PublicSpo2AggregatedValues", "average"): "null on content-free documents (GOREP)",
}
# S137 enums that we accept as open strings, so a new value does not poison the document.
OPEN_ENUMS = {
    ("PublicModifiedSleepModel", "sleep_algorithm_version"): "version metadata, expected to grow",
    ("PublicModifiedSleepModel", "sleep_analysis_reason"): "never observed; provenance only",
    ("PublicWorkout", "source"): "enum has grown over time; only 'confirmed' observed",
    ("PublicRingConfiguration", "color"): "product catalogue, grows with launches",
    ("PublicRingConfiguration", "design"): "product catalogue, grows with launches",
    ("PublicRingConfiguration", "hardware_type"): "product catalogue, grows with launches",
}


# --- helpers -----------------------------------------------------------------------------------


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


@cache
def _spec() -> dict[str, Any]:
    spec_path = OURA_DIR / "openapi-1.37.json"
    if not spec_path.exists():
        pytest.fail(f"S137 not found at {spec_path}; set OURA_CONTRACT_DIR to the oura/ directory")
    spec: dict[str, Any] = _load(spec_path)
    return spec


def _spec_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = _spec()["components"]["schemas"]
    return schemas


def _contract_models() -> list[type[OuraContract]]:
    return [
        value
        for value in vars(contracts).values()
        if isinstance(value, type)
        and issubclass(value, OuraContract)
        and "spec_schema" in vars(value)
    ]


CONTRACT_MODELS = _contract_models()
# DOCUMENT_MODELS is typed with BaseModel values; this view keeps the ClassVars visible to mypy.
DOCUMENTS = {
    collection: model
    for collection, model in DOCUMENT_MODELS.items()
    if issubclass(model, OuraDocument)
}


def _resolve(schema: dict[str, Any], defs: dict[str, Any], prefix: str) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].removeprefix(prefix)]
    return schema


def _shape(schema: dict[str, Any], defs: dict[str, Any], prefix: str) -> tuple[set[str], Any]:
    """(JSON kinds incl. "null", enum values or None) of a property schema."""
    schema = _resolve(schema, defs, prefix)
    if "anyOf" in schema:
        kinds: set[str] = set()
        enum = None
        for option in schema["anyOf"]:
            option_kinds, option_enum = _shape(option, defs, prefix)
            kinds |= option_kinds
            enum = enum or option_enum
        return kinds, enum
    if "enum" in schema:
        return {schema.get("type", "string")}, frozenset(schema["enum"])
    if "const" in schema:
        return {schema.get("type", "string")}, frozenset([schema["const"]])
    if "properties" in schema:
        return {"object"}, None
    return {schema["type"]}, None


def _documents_in(path: Path) -> list[dict[str, Any]]:
    body = _load(path)
    if isinstance(body, dict) and "data" in body:
        documents: list[dict[str, Any]] = body["data"]
        return documents
    return [body]


def _fixture_files() -> list[Path]:
    return sorted(
        path
        for path in FIXTURES_DIR.glob("*.json")
        if not path.name.startswith("_") and path.name != "empty_collection.json"
    )


def _example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.example.json"))


def _collection_of(path: Path) -> str:
    return path.name.split(".")[0]


def _readiness(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = _load(EXAMPLES_DIR / "daily_readiness.example.json")
    document.update(overrides)
    return document


# --- models vs S137 ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", CONTRACT_MODELS, ids=lambda model: model.__name__)
def test_model_required_fields_equal_spec_required_except_documented_drift(
    model: type[OuraContract],
) -> None:
    spec_schema = _spec_schemas()[model.spec_schema]
    relaxed = {
        field
        for (schema, field) in REQUIRED_IN_SPEC_BUT_OPTIONAL_HERE
        if schema == model.spec_schema
    }

    model_required = set(model.model_json_schema().get("required", []))

    assert model_required == set(spec_schema.get("required", [])) - relaxed
    assert relaxed <= set(spec_schema.get("required", [])), "stale drift entry"


@pytest.mark.parametrize("model", CONTRACT_MODELS, ids=lambda model: model.__name__)
def test_every_spec_property_exists_on_the_model_with_the_spec_type(
    model: type[OuraContract],
) -> None:
    spec_schema = _spec_schemas()[model.spec_schema]
    model_schema = model.model_json_schema()
    model_properties = model_schema["properties"]
    model_defs = model_schema.get("$defs", {})

    missing = set(spec_schema["properties"]) - set(model_properties)
    assert not missing, f"spec fields dropped from {model.__name__}: {missing}"

    for name, spec_property in spec_schema["properties"].items():
        key = (model.spec_schema, name)
        spec_kinds, spec_enum = _shape(spec_property, _spec_schemas(), "#/components/schemas/")
        model_kinds, model_enum = _shape(model_properties[name], model_defs, "#/$defs/")
        if key in NULLABLE_HERE_BUT_NOT_IN_SPEC:
            spec_kinds = spec_kinds | {"null"}
        assert model_kinds == spec_kinds, name
        if key in OPEN_ENUMS:
            assert spec_enum is not None, name
            assert model_enum is None, name
        else:
            assert model_enum == spec_enum, name


def test_every_spec_document_and_nested_object_schema_has_a_model() -> None:
    schemas = _spec_schemas()
    document_schemas = {
        schemas[name]["properties"]["data"]["items"]["$ref"].rsplit("/", 1)[-1]
        for name in schemas
        if name.startswith(("MultiDocumentResponse_", "TimeSeriesResponse_"))
    } | {"PersonalInfoResponse"}
    reachable: set[str] = set()
    pending = list(document_schemas)
    while pending:
        name = pending.pop()
        if name in reachable or "properties" not in schemas[name]:
            continue
        reachable.add(name)
        pending.extend(
            ref.rsplit("/", 1)[-1]
            for ref in _refs_in(schemas[name]["properties"])
            if ref.startswith("#/components/schemas/")
        )

    assert {model.spec_schema for model in CONTRACT_MODELS} == reachable
    assert {model.spec_schema for model in DOCUMENTS.values()} == document_schemas


def _refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in _refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs_in(value)]
    return []


def test_registry_is_keyed_by_rest_collection_name() -> None:
    assert set(DOCUMENT_MODELS) == {
        "daily_readiness",
        "daily_sleep",
        "daily_activity",
        "sleep",
        "workout",
        "session",
        "daily_spo2",
        "daily_stress",
        "daily_resilience",
        "daily_cardiovascular_age",
        "vO2_max",
        "sleep_time",
        "enhanced_tag",
        "tag",
        "rest_mode_period",
        "ring_configuration",
        "heartrate",
        "ring_battery_level",
        "personal_info",
    }
    assert DOCUMENTS == DOCUMENT_MODELS, "every registry value is an OuraDocument"
    for collection, model in DOCUMENTS.items():
        assert model.collection == collection
        assert f"/v2/usercollection/{collection}" in _spec()["paths"]


def test_webhook_data_types_map_to_collections_with_vo2_max_spelled_as_the_rest_path() -> None:
    spec_data_types = set(_spec_schemas()["ExtApiV2DataType"]["enum"])

    assert WEBHOOK_TYPES["vo2_max"] == "vO2_max"
    # "meal" has no usercollection route or document schema in S137, so it cannot be fetched.
    assert set(WEBHOOK_TYPES) == spec_data_types - {"meal"}
    for data_type, collection in WEBHOOK_TYPES.items():
        assert collection in DOCUMENT_MODELS
        if data_type != "vo2_max":
            assert collection == data_type


# --- recorded fixtures and examples ------------------------------------------------------------


@pytest.mark.parametrize("path", _fixture_files(), ids=lambda path: path.name)
def test_every_recorded_fixture_document_parses(path: Path) -> None:
    documents = _documents_in(path)

    parsed = [parse_document(_collection_of(path), document) for document in documents]

    assert parsed
    assert all(isinstance(model, DOCUMENT_MODELS[_collection_of(path)]) for model in parsed)


def test_fixture_files_cover_every_recorded_collection() -> None:
    recorded = {_collection_of(path) for path in _fixture_files()}

    # ring_battery_level was never recorded; it is covered by the inline example below.
    assert recorded == set(DOCUMENT_MODELS) - {"ring_battery_level"}


@pytest.mark.parametrize("path", _example_files(), ids=lambda path: path.name)
def test_every_example_validates_against_s137_and_parses(path: Path) -> None:
    body = _load(path)
    schema_name = DOCUMENTS[_collection_of(path)].spec_schema
    if isinstance(body, dict) and "data" in body:
        # A page: validate the envelope too (heartrate is a time series, the rest documents).
        envelopes = [
            f"{kind}_{schema_name}_" for kind in ("TimeSeriesResponse", "MultiDocumentResponse")
        ]
        (schema_name,) = [name for name in envelopes if name in _spec_schemas()]
    validator = Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema_name}", "components": _spec()["components"]},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )

    errors = [error.message for error in validator.iter_errors(body)]

    assert not errors
    for document in _documents_in(path):
        parse_document(_collection_of(path), document)


def test_examples_cover_every_collection_except_ring_battery_level() -> None:
    assert {_collection_of(path) for path in _example_files()} == set(DOCUMENT_MODELS) - {
        "ring_battery_level"
    }


def test_ring_battery_level_row_from_contract_example_is_spec_valid_and_parses() -> None:
    row = {
        "timestamp": "2024-12-14T10:00:00+00:00",
        "timestamp_unix": 1734170400000,
        "charging": False,
        "in_charger": False,
        "level": 62,
    }
    validator = Draft202012Validator(
        {
            "$ref": "#/components/schemas/PublicRingBatteryLevelRow",
            "components": _spec()["components"],
        }
    )

    validator.validate(row)
    parsed = parse_document_as(RingBatteryLevelRow, row)

    assert parsed.level == 62
    assert parsed.charging is False
    assert parsed.timestamp_unix == 1734170400000


def test_readiness_fixture_values_survive_parsing() -> None:
    readiness = parse_document_as(
        DailyReadiness, _load(FIXTURES_DIR / "daily_readiness.single.json")
    )

    assert readiness.id == "93b2a8ec-ccdb-49bf-84f5-d06a77873f25"
    assert readiness.day == date(2024, 11, 11)
    assert readiness.score == 86
    assert readiness.temperature_deviation == pytest.approx(0.1)
    assert readiness.contributors.activity_balance == 94
    assert readiness.contributors.previous_night == 77
    # Recorded before spec 1.28 added it: a missing optional field is None.
    assert readiness.contributors.sleep_regularity is None
    assert readiness.timestamp.utcoffset() == timedelta(0)


def test_readiness_with_null_contributor_from_2018_keeps_its_offset() -> None:
    first = _documents_in(FIXTURES_DIR / "daily_readiness.large_range_head.json")[0]

    readiness = parse_document_as(DailyReadiness, first)

    assert readiness.contributors.hrv_balance is None
    assert readiness.temperature_trend_deviation is None
    assert readiness.timestamp.utcoffset() == timedelta(hours=2)


def test_sleep_period_durations_samples_and_nested_readiness_survive_parsing() -> None:
    sleep = parse_document_as(SleepPeriod, _load(FIXTURES_DIR / "sleep.single.json"))

    assert sleep.day == date(2024, 10, 10)
    assert sleep.type == "long_sleep"
    assert sleep.total_sleep_duration == 23220
    assert sleep.deep_sleep_duration == 3060
    assert sleep.rem_sleep_duration == 3000
    assert sleep.light_sleep_duration == 17160
    assert sleep.awake_time == 5713
    assert sleep.time_in_bed == 28933
    assert sleep.low_battery_alert is False
    assert sleep.bedtime_start.isoformat() == "2024-10-10T01:01:59+02:00"
    assert sleep.heart_rate is not None
    assert sleep.heart_rate.interval == 300.0
    assert sleep.heart_rate.items[:3] == [76.0, 77.0, 76.0]
    assert sleep.heart_rate.timestamp.utcoffset() == timedelta(hours=2)
    assert sleep.readiness is not None
    assert sleep.readiness.score == 71
    assert sleep.readiness.contributors.hrv_balance == 64
    # Fields added to the spec after the recording are None, not errors.
    assert sleep.ring_id is None
    assert sleep.sleep_phase_30_sec is None


def test_daily_activity_met_sample_and_totals_survive_parsing() -> None:
    activity = parse_document_as(DailyActivity, _load(FIXTURES_DIR / "daily_activity.single.json"))

    assert activity.steps == 15185
    assert activity.meters_to_target == -3500
    assert activity.contributors.stay_active == 65
    assert activity.met.interval == 60.0
    assert activity.met.timestamp.utcoffset() == timedelta(hours=1)
    assert activity.timestamp.isoformat() == "2024-11-11T04:00:00+01:00"


def test_workout_fixture_values_and_free_text_activity() -> None:
    workouts = [
        parse_document_as(Workout, document)
        for document in _documents_in(FIXTURES_DIR / "workout.json")
    ]

    assert {workout.activity for workout in workouts} == {"walking", "running"}
    assert {workout.intensity for workout in workouts} == {"easy", "moderate"}
    assert workouts[0].distance is None
    unseen_activity = {**_load(EXAMPLES_DIR / "workout.example.json"), "activity": "padel"}
    assert parse_document_as(Workout, unseen_activity).activity == "padel"


def test_enum_fields_are_strict_where_spec_and_observations_agree() -> None:
    workout = {**_load(EXAMPLES_DIR / "workout.example.json"), "intensity": "extreme"}
    session = {**_load(EXAMPLES_DIR / "session.example.json"), "mood": "ecstatic"}

    with pytest.raises(ContractViolation, match=r"intensity: literal_error"):
        parse_document("workout", workout)
    with pytest.raises(ContractViolation, match=r"mood: literal_error"):
        parse_document("session", session)


def test_open_enum_fields_accept_values_outside_the_spec_enum() -> None:
    ring = {**_load(EXAMPLES_DIR / "ring_configuration.example.json"), "color": "aurora_green"}
    workout = {**_load(EXAMPLES_DIR / "workout.example.json"), "source": "new_source"}

    assert parse_document_as(RingConfiguration, ring).color == "aurora_green"
    assert parse_document_as(Workout, workout).source == "new_source"


# --- tolerance and violations ------------------------------------------------------------------


def test_unknown_extra_field_is_tolerated_and_not_kept_on_the_model() -> None:
    readiness = parse_document_as(DailyReadiness, _readiness(brand_new_metric=42))

    assert readiness.score == 86
    assert "brand_new_metric" not in readiness.model_dump()


def test_missing_optional_field_becomes_none() -> None:
    document = _readiness()
    del document["score"]
    del document["temperature_deviation"]

    readiness = parse_document_as(DailyReadiness, document)

    assert readiness.score is None
    assert readiness.temperature_deviation is None


def test_missing_required_field_raises_contract_violation_naming_the_field() -> None:
    document = _readiness()
    del document["timestamp"]

    with pytest.raises(ContractViolation) as caught:
        parse_document("daily_readiness", document)

    assert caught.value.collection == "daily_readiness"
    assert caught.value.errors_summary == "timestamp: missing"


def test_wrong_type_raises_contract_violation_instead_of_coercing() -> None:
    with pytest.raises(ContractViolation, match=r"score: int_type"):
        parse_document("daily_readiness", _readiness(score="86"))
    with pytest.raises(ContractViolation, match=r"day: string_type"):
        parse_document("daily_readiness", _readiness(day=20241111))


def test_naive_timestamp_is_a_violation() -> None:
    with pytest.raises(ContractViolation, match=r"timestamp: timezone_aware"):
        parse_document("daily_readiness", _readiness(timestamp="2024-11-11T00:00:00"))


def test_nested_violation_is_located_by_path() -> None:
    contributors = {**_readiness()["contributors"], "hrv_balance": "high"}

    with pytest.raises(ContractViolation, match=r"contributors\.hrv_balance: int_type"):
        parse_document("daily_readiness", _readiness(contributors=contributors))


def test_contract_violation_message_never_contains_input_values() -> None:
    secret = "SECRET-HEALTH-VALUE-7731"
    document = _readiness(
        score=secret,
        temperature_deviation=secret,
        timestamp=secret,
        contributors={"hrv_balance": secret},
    )

    with pytest.raises(ContractViolation) as caught:
        parse_document("daily_readiness", document)

    violation = caught.value
    for text in (
        str(violation),
        repr(violation),
        violation.errors_summary,
        *map(str, violation.args),
    ):
        assert secret not in text
    # The pydantic error (whose str quotes inputs) must not ride along in logged tracebacks.
    assert violation.__cause__ is None
    assert violation.__context__ is None
    assert "score: int_type" in violation.errors_summary


def test_contract_violation_message_is_bounded_for_broken_sample_arrays() -> None:
    document = _load(FIXTURES_DIR / "daily_activity.single.json")
    document["met"] = {**document["met"], "items": ["x"] * 500}

    with pytest.raises(ContractViolation) as caught:
        parse_document("daily_activity", document)

    assert caught.value.errors_summary.endswith("... 480 more")


def test_unknown_collection_is_a_contract_violation() -> None:
    with pytest.raises(ContractViolation, match="unknown_collection"):
        parse_document("meal", {"id": "x"})


def test_non_object_document_is_a_contract_violation() -> None:
    with pytest.raises(ContractViolation, match=r"<document>: model_type"):
        parse_document("daily_readiness", ["not", "a", "document"])  # type: ignore[arg-type]  # the wrong type is the test


# --- drift -------------------------------------------------------------------------------------


def test_heartrate_row_without_timestamp_unix_derives_it_from_timestamp() -> None:
    row = {"bpm": 91, "source": "awake", "timestamp": "2024-12-13T12:31:21+00:00"}

    parsed = parse_document_as(HeartRateRow, row)

    assert parsed.timestamp_unix == 1734093081000


def test_heartrate_row_with_zero_timestamp_unix_and_producer_timestamp_is_accepted() -> None:
    (row,) = _documents_in(FIXTURES_DIR / "heartrate.latest.fieldnotes-2026-07.json")
    row = {**row, "timestamp_unix": 0}

    parsed = parse_document_as(HeartRateRow, row)

    assert parsed.timestamp.isoformat() == "2026-07-30T04:03:19+00:00"
    assert parsed.timestamp_unix == 1785384199000
    assert parsed.bpm == 76
    assert "producer_timestamp" not in parsed.model_dump()


def test_heartrate_row_with_real_timestamp_unix_keeps_it() -> None:
    rows = _documents_in(EXAMPLES_DIR / "heartrate.example.json")

    parsed = [parse_document_as(HeartRateRow, row) for row in rows]

    assert [row.timestamp_unix for row in parsed] == [row["timestamp_unix"] for row in rows]


def test_heartrate_row_with_bad_timestamp_reports_the_timestamp() -> None:
    with pytest.raises(ContractViolation, match=r"^heartrate .*: timestamp: \w+$"):
        parse_document("heartrate", {"bpm": 60, "source": "rest", "timestamp": "yesterday"})


def test_ring_battery_row_without_timestamp_unix_derives_it() -> None:
    row = {"timestamp": "2024-12-14T10:00:00+00:00", "level": 62}

    parsed = parse_document_as(RingBatteryLevelRow, row)

    assert parsed.timestamp_unix == 1734170400000
    assert parsed.charging is None


def test_cardiovascular_age_without_id_gets_the_deterministic_day_fallback() -> None:
    recorded = _documents_in(FIXTURES_DIR / "daily_cardiovascular_age.json")

    parsed = [parse_document_as(DailyCardiovascularAge, document) for document in recorded]

    assert [document.id for document in parsed] == [None, None]
    assert [document.document_id for document in parsed] == ["2024-11-11", "2024-11-12"]
    assert cardiovascular_age_fallback_id(date(2024, 11, 11)) == "2024-11-11"
    assert parsed[0].vascular_age == 39
    assert parsed[0].pulse_wave_velocity is None


def test_cardiovascular_age_with_id_uses_oura_id() -> None:
    document = parse_document_as(
        DailyCardiovascularAge, _load(EXAMPLES_DIR / "daily_cardiovascular_age.example.json")
    )

    assert document.document_id == "4c0b6c5e-8f0d-4a5c-9d0e-2f0a4c9e1b11"
    assert document.pulse_wave_velocity == pytest.approx(7.2)


def test_s129_meta_object_is_tolerated_on_every_document_type() -> None:
    meta = {"updated_at": "2026-04-01T10:00:00+00:00", "version": 3}
    for path in _example_files():
        for document in _documents_in(path):
            parsed = parse_document(_collection_of(path), {**document, "meta": meta})
            assert "meta" not in parsed.model_dump()


def test_spo2_without_average_is_accepted_as_none() -> None:
    document = {**_load(EXAMPLES_DIR / "daily_spo2.example.json"), "spo2_percentage": {}}

    parsed = parse_document_as(DailySpO2, document)

    assert parsed.spo2_percentage is not None
    assert parsed.spo2_percentage.average is None
