"""Contract models → column values of the normalized tables.

Pure functions, no database: `TABLES[collection].to_row(document)` gives the columns a row
takes from one validated Oura document. The service adds the bookkeeping columns (user, raw
object key, normalizer version, observation time) and upserts on `conflict_fields`.

Every registry type (`ingestion.data_types.DATA_TYPES`) of kind DAILY, DOCUMENT or INTERVAL
becomes rows through `TABLES`, checked when this module is imported (`registry_mismatches`);
the others are kept raw in S3 and indexed (docs/phase-3/consumers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from ingestion.data_types import DATA_TYPES, Kind
from normalized import contracts, models

# The version every mapping starts at (and that of a writer without a TableMapping). Each
# mapping has its own `version`, which its rows record in `normalizer_version`: bump that one
# when the mapping changes what its rows hold, and `manage.py renormalize --type T
# --older-than-version N` rebuilds just those rows from the raw objects in S3.
NORMALIZER_VERSION = 1


class UnmappableDocument(ValueError):
    """A valid document that does not fit its table (e.g. a text longer than the column).

    Like ContractViolation, the message names the field and the problem, never the value.
    """

    def __init__(self, collection: str, field: str, problem: str) -> None:
        super().__init__(f"{collection} document cannot be stored: {field}: {problem}")


@dataclass(frozen=True)
class TableMapping:
    collection: str
    model: type[models.NormalizedRow]
    conflict_fields: tuple[str, ...]
    to_row: Callable[[Any], dict[str, Any]]
    contract: type[contracts.OuraDocument]
    kind: str = ""  # the `kind` column of a table two collections share (activities, tags)
    version: int = NORMALIZER_VERSION  # written to normalizer_version; see NORMALIZER_VERSION

    def row(self, document: contracts.OuraDocument) -> dict[str, Any]:
        if not isinstance(document, self.contract):
            raise TypeError(f"{self.collection} mapping got a {type(document).__name__}")
        values = self.to_row(document)
        if self.kind:
            values["kind"] = self.kind
        return values


def _text(collection: str, field: str, value: str | None, max_length: int) -> str:
    # The tables use "" for "not given" (CharField(blank=True)); the read DTOs turn it into null.
    text = value or ""
    if len(text) > max_length:
        raise UnmappableDocument(collection, field, f"longer than {max_length} characters")
    return text


# Free text a person types into the app (a tag's comment): bounded so that one document cannot
# make a row (and every page that carries it) arbitrarily large.
_MAX_COMMENT = 4000


def _required_id(collection: str, oura_id: str) -> str:
    # A few S137 schemas set no minLength on `id`. Rows are found by it (delete notifications,
    # the unique key of interval tables), so an empty one cannot be stored.
    if not oura_id:
        raise UnmappableDocument(collection, "id", "empty")
    return oura_id


def daily_readiness_row(doc: contracts.DailyReadiness) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "score": doc.score,
        "temperature_deviation": doc.temperature_deviation,
        "temperature_trend_deviation": doc.temperature_trend_deviation,
        "contributors": doc.contributors.model_dump(),
        "timestamp": doc.timestamp,
    }


def daily_sleep_row(doc: contracts.DailySleep) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "score": doc.score,
        "contributors": doc.contributors.model_dump(),
        "timestamp": doc.timestamp,
    }


def daily_activity_row(doc: contracts.DailyActivity) -> dict[str, Any]:
    # The 1440-item MET series and class_5_min stay in the raw object: the read API serves
    # daily totals, and S3 keeps the series for anyone who needs it later.
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "score": doc.score,
        "active_calories": doc.active_calories,
        "total_calories": doc.total_calories,
        "target_calories": doc.target_calories,
        "steps": doc.steps,
        "equivalent_walking_distance": doc.equivalent_walking_distance,
        "high_activity_time": doc.high_activity_time,
        "medium_activity_time": doc.medium_activity_time,
        "low_activity_time": doc.low_activity_time,
        "sedentary_time": doc.sedentary_time,
        "resting_time": doc.resting_time,
        "non_wear_time": doc.non_wear_time,
        "average_met_minutes": doc.average_met_minutes,
        "inactivity_alerts": doc.inactivity_alerts,
        "contributors": doc.contributors.model_dump(),
        "timestamp": doc.timestamp,
    }


def sleep_period_row(doc: contracts.SleepPeriod) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "type": doc.type or "",
        "bedtime_start": doc.bedtime_start,
        "bedtime_end": doc.bedtime_end,
        "total_sleep_duration": doc.total_sleep_duration,
        "deep_sleep_duration": doc.deep_sleep_duration,
        "light_sleep_duration": doc.light_sleep_duration,
        "rem_sleep_duration": doc.rem_sleep_duration,
        "awake_time": doc.awake_time,
        "time_in_bed": doc.time_in_bed,
        "efficiency": doc.efficiency,
        "latency": doc.latency,
        "average_heart_rate": doc.average_heart_rate,
        "lowest_heart_rate": doc.lowest_heart_rate,
        "average_hrv": None if doc.average_hrv is None else float(doc.average_hrv),
        "average_breath": doc.average_breath,
        "readiness_score": doc.readiness.score if doc.readiness is not None else None,
    }


def workout_row(doc: contracts.Workout) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "start": doc.start_datetime,
        "end": doc.end_datetime,
        "type": _text("workout", "activity", doc.activity, 64),
        "intensity": doc.intensity,
        "calories": doc.calories,
        "distance": doc.distance,
        "source": _text("workout", "source", doc.source, 30),
        "label": _text("workout", "label", doc.label, 200),
        "metrics": {},
    }


def sample_summary(sample: contracts.Sample | None) -> dict[str, float | int] | None:
    """Average, minimum, maximum and count of the non-null items; None when there are none."""
    if sample is None:
        return None
    values = [item for item in sample.items if item is not None]
    if not values:
        return None
    return {
        "average": round(sum(values) / len(values), 3),
        "min": min(values),
        "max": max(values),
        "count": len(values),
    }


def session_row(doc: contracts.Session) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "start": doc.start_datetime,
        "end": doc.end_datetime,
        "type": doc.type,
        "intensity": "",
        "calories": None,
        "distance": None,
        "source": "",
        "label": "",
        "metrics": {
            "mood": doc.mood,
            "heart_rate": sample_summary(doc.heart_rate),
            "heart_rate_variability": sample_summary(doc.heart_rate_variability),
            "motion_count": sample_summary(doc.motion_count),
        },
    }


def daily_stress_row(doc: contracts.DailyStress) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "stress_high": doc.stress_high,
        "recovery_high": doc.recovery_high,
        "day_summary": doc.day_summary or "",
    }


def daily_spo2_row(doc: contracts.DailySpO2) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "spo2_percentage": None if doc.spo2_percentage is None else doc.spo2_percentage.average,
        "breathing_disturbance_index": doc.breathing_disturbance_index,
    }


def daily_resilience_row(doc: contracts.DailyResilience) -> dict[str, Any]:
    return {
        # S137 sets no minLength on this id; an empty one would make every such document of a
        # person one "document" for delete notifications, so it is refused like a long text.
        "oura_id": _required_id("daily_resilience", doc.id),
        "day": doc.day,
        "level": doc.level,
        "sleep_recovery": doc.contributors.sleep_recovery,
        "daytime_recovery": doc.contributors.daytime_recovery,
        "stress": doc.contributors.stress,
    }


def daily_cardiovascular_age_row(doc: contracts.DailyCardiovascularAge) -> dict[str, Any]:
    return {
        "oura_id": doc.document_id,
        "day": doc.day,
        "vascular_age": doc.vascular_age,
        "pulse_wave_velocity": doc.pulse_wave_velocity,
    }


def vo2_max_row(doc: contracts.VO2Max) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "vo2_max": doc.vo2_max,
        "timestamp": doc.timestamp,
    }


def sleep_time_row(doc: contracts.SleepTime) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.day,
        "optimal_bedtime": None
        if doc.optimal_bedtime is None
        else doc.optimal_bedtime.model_dump(),
        "recommendation": doc.recommendation or "",
        "status": doc.status or "",
    }


def enhanced_tag_row(doc: contracts.EnhancedTag) -> dict[str, Any]:
    return {
        "oura_id": _required_id("enhanced_tag", doc.id),
        "day": doc.start_day,
        "start": doc.start_time,
        "end": doc.end_time,
        "end_day": doc.end_day,
        "tag_type_code": _text("enhanced_tag", "tag_type_code", doc.tag_type_code, 100),
        "custom_name": _text("enhanced_tag", "custom_name", doc.custom_name, 200),
        "comment": _text("enhanced_tag", "comment", doc.comment, _MAX_COMMENT),
        "tags": [],
    }


def tag_row(doc: contracts.Tag) -> dict[str, Any]:
    return {
        "oura_id": _required_id("tag", doc.id),
        "day": doc.day,
        "start": doc.timestamp,
        "end": None,
        "end_day": None,
        "tag_type_code": "",
        "custom_name": "",
        "comment": _text("tag", "text", doc.text, _MAX_COMMENT),
        "tags": list(doc.tags),
    }


def rest_mode_period_row(doc: contracts.RestModePeriod) -> dict[str, Any]:
    return {
        "oura_id": doc.id,
        "day": doc.start_day,
        "end_day": doc.end_day,
        "start_time": doc.start_time,
        "end_time": doc.end_time,
        # JSON text in the row: timestamps as Oura wrote them (ISO 8601 with their offset).
        "episodes": [episode.model_dump(mode="json") for episode in doc.episodes],
    }


TABLES: dict[str, TableMapping] = {
    mapping.collection: mapping
    for mapping in (
        TableMapping(
            "daily_readiness",
            models.DailyReadiness,
            ("user_id", "day"),
            daily_readiness_row,
            contracts.DailyReadiness,
        ),
        TableMapping(
            "daily_sleep",
            models.DailySleep,
            ("user_id", "day"),
            daily_sleep_row,
            contracts.DailySleep,
        ),
        TableMapping(
            "daily_activity",
            models.DailyActivity,
            ("user_id", "day"),
            daily_activity_row,
            contracts.DailyActivity,
        ),
        TableMapping(
            "sleep",
            models.SleepPeriod,
            ("user_id", "oura_id"),
            sleep_period_row,
            contracts.SleepPeriod,
        ),
        TableMapping(
            "workout",
            models.Activity,
            ("user_id", "kind", "oura_id"),
            workout_row,
            contracts.Workout,
            kind=models.Activity.Kind.WORKOUT.value,
        ),
        TableMapping(
            "session",
            models.Activity,
            ("user_id", "kind", "oura_id"),
            session_row,
            contracts.Session,
            kind=models.Activity.Kind.SESSION.value,
        ),
        TableMapping(
            "daily_stress",
            models.DailyStress,
            ("user_id", "day"),
            daily_stress_row,
            contracts.DailyStress,
        ),
        TableMapping(
            "daily_spo2",
            models.DailySpO2,
            ("user_id", "day"),
            daily_spo2_row,
            contracts.DailySpO2,
        ),
        TableMapping(
            "daily_resilience",
            models.DailyResilience,
            ("user_id", "day"),
            daily_resilience_row,
            contracts.DailyResilience,
        ),
        TableMapping(
            "daily_cardiovascular_age",
            models.DailyCardiovascularAge,
            ("user_id", "day"),
            daily_cardiovascular_age_row,
            contracts.DailyCardiovascularAge,
        ),
        TableMapping(
            "vO2_max",
            models.VO2Max,
            ("user_id", "day"),
            vo2_max_row,
            contracts.VO2Max,
        ),
        TableMapping(
            "sleep_time",
            models.SleepTime,
            ("user_id", "oura_id"),
            sleep_time_row,
            contracts.SleepTime,
        ),
        TableMapping(
            "enhanced_tag",
            models.Tag,
            ("user_id", "kind", "oura_id"),
            enhanced_tag_row,
            contracts.EnhancedTag,
            kind=models.Tag.Kind.ENHANCED_TAG.value,
        ),
        TableMapping(
            "tag",
            models.Tag,
            ("user_id", "kind", "oura_id"),
            tag_row,
            contracts.Tag,
            kind=models.Tag.Kind.TAG.value,
        ),
        TableMapping(
            "rest_mode_period",
            models.RestModePeriod,
            ("user_id", "oura_id"),
            rest_mode_period_row,
            contracts.RestModePeriod,
        ),
    )
}

# The kinds whose types must all have a mapping here. TIMESERIES (heartrate) is stored by its
# own path (a partitioned table); when its mapping joins TABLES, add Kind.TIMESERIES here and
# the check below holds it to the registry like the rest. Until then a TIMESERIES entry in
# TABLES is allowed but not required.
TABLE_KINDS = frozenset({Kind.DAILY, Kind.DOCUMENT, Kind.INTERVAL})


def registry_mismatches() -> list[str]:
    """How TABLES differs from the registry: a type of a TABLE_KINDS kind without a mapping,
    a mapping for a name the registry does not know, or a daily type not keyed by day (the
    daily page has one entry per day). Empty when they agree."""
    problems = [
        f"{name}: {data_type.kind} type without a mapping in normalized.mappers.TABLES"
        for name, data_type in DATA_TYPES.items()
        if data_type.kind in TABLE_KINDS and name not in TABLES
    ]
    for name, mapping in TABLES.items():
        data_type = DATA_TYPES.get(name)
        if data_type is None:
            problems.append(f"{name}: mapped but not in ingestion.data_types.DATA_TYPES")
        elif data_type.kind is Kind.RAW_ONLY:
            problems.append(f"{name}: mapped but its registry kind is raw_only")
        elif data_type.kind is Kind.DAILY and mapping.conflict_fields != ("user_id", "day"):
            problems.append(f"{name}: daily type not keyed by (user_id, day)")
    return problems


# At import, so that no process (web, normalizer, renormalize) runs with a registry type that
# silently stays raw: a new registry entry without its table stops start-up here.
if _mismatches := registry_mismatches():
    raise RuntimeError(
        "normalized.mappers.TABLES disagrees with the registry: " + "; ".join(_mismatches)
    )


def document_id(document: Any) -> str:
    """Oura's id of a validated document ('' for time-series rows, which have none)."""
    if isinstance(document, contracts.DailyCardiovascularAge):
        return document.document_id
    return str(getattr(document, "id", "") or "")


def document_day(document: Any) -> date | None:
    day = getattr(document, "day", None) or getattr(document, "start_day", None)
    return day if isinstance(day, date) else None
