"""Contract models → column values of the normalized tables.

Pure functions, no database: `TABLES[collection].to_row(document)` gives the columns a row
takes from one validated Oura document. The service adds the bookkeeping columns (user, raw
object key, normalizer version, observation time) and upserts on `conflict_fields`.

Only six collections become rows (`TABLES`); the other valid document types are kept raw in
S3 and indexed, which is all the read API needs today (docs/phase-3/consumers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from normalized import contracts, models

# Bump when a mapping changes what a row holds; rows record the version that wrote them, so
# a re-normalization from S3 can find the rows an older mapping produced.
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
    kind: str = ""  # Activity.kind for the two collections sharing oura_activities

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
    )
}


def document_id(document: Any) -> str:
    """Oura's id of a validated document ('' for time-series rows, which have none)."""
    if isinstance(document, contracts.DailyCardiovascularAge):
        return document.document_id
    return str(getattr(document, "id", "") or "")


def document_day(document: Any) -> date | None:
    day = getattr(document, "day", None) or getattr(document, "start_day", None)
    return day if isinstance(day, date) else None
