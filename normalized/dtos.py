"""The normalized data transfer objects: what REST v1 says about a person.

One pydantic model per shape is the single source for three things: its OpenAPI components
(drf-spectacular, see `normalized/apis.py`), the JSON Schemas in `docs/phase-3/schemas/`
(`JSON_SCHEMAS`, written by `manage.py export_api_docs`) and the JSON the read API sends.

Pydantic rather than DRF output serializers because of the read benchmark: a year of daily
entries (366 x ~50 fields) takes about 16 ms through nested DRF serializers, and the target
for the whole request is P95 <= 30 ms. Most endpoints send `model_dump_json()` of these
models. The daily page goes one step further: building 366 nested models still cost ~15 ms a
request, so Postgres writes its JSON (normalized/selectors.py) with keys, columns and value
forms derived from the models below; tests check that it parses to what `model_dump_json()`
writes and validates against the schemas.

JSON keys are camelCase like the rest of v1 (`userId`, `jobId`); Python names stay snake_case.
Every output field is always present (null when unknown), so clients see one stable shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from core.messages import BUS_SCHEMAS
from core.messages import NormalizedMetricsMessage as NormalizedMetricsMessage
from core.messages import normalized_metrics_subject as normalized_metrics_subject

__all__ = [
    "JSON_SCHEMAS",
    "ApiModel",
    "NormalizedMetricsMessage",
    "OuraActivity",
    "OuraActivityContributors",
    "OuraActivityPage",
    "OuraDailyActivity",
    "OuraDailyCardiovascularAge",
    "OuraDailyEntry",
    "OuraDailyPage",
    "OuraDailyReadiness",
    "OuraDailyResilience",
    "OuraDailySleep",
    "OuraDailySpO2",
    "OuraDailyStress",
    "OuraHeartRatePage",
    "OuraHeartRateSample",
    "OuraMainSleepPeriod",
    "OuraReadinessContributors",
    "OuraResilienceContributors",
    "OuraRestModeEpisode",
    "OuraRestModePeriod",
    "OuraRestModePeriodPage",
    "OuraSleepContributors",
    "OuraSleepPeriod",
    "OuraSleepPeriodPage",
    "OuraSleepTime",
    "OuraSleepTimePage",
    "OuraSleepTimeWindow",
    "OuraTag",
    "OuraTagPage",
    "OuraVO2Max",
    "blank_is_null",
    "fields_of",
    "normalized_metrics_subject",
]


class ApiModel(BaseModel):
    """Base of every DTO: camelCase on the wire, built from rows by attribute name."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        from_attributes=True,
        frozen=True,
        # Every field is always sent (null when unknown), so the schemas say so.
        json_schema_serialization_defaults_required=True,
    )


def _blank_as_none(value: object) -> object:
    # The tables store "" where Oura sent nothing (CharField(blank=True)); the API says null.
    return value if value != "" else None


OptionalText = Annotated[str | None, BeforeValidator(_blank_as_none)]


# --- Daily --------------------------------------------------------------------------------


class OuraReadinessContributors(ApiModel):
    activity_balance: int | None = None
    body_temperature: int | None = None
    hrv_balance: int | None = None
    previous_day_activity: int | None = None
    previous_night: int | None = None
    recovery_index: int | None = None
    resting_heart_rate: int | None = None
    sleep_balance: int | None = None
    sleep_regularity: int | None = None


class OuraDailyReadiness(ApiModel):
    score: int | None = Field(description="Readiness score, 1-100.")
    temperature_deviation: float | None = Field(
        description="Deviation of body temperature from the personal baseline, in °C."
    )
    temperature_trend_deviation: float | None = Field(
        description="Weighted average of recent temperature deviations, in °C."
    )
    contributors: OuraReadinessContributors


class OuraSleepContributors(ApiModel):
    deep_sleep: int | None = None
    efficiency: int | None = None
    latency: int | None = None
    rem_sleep: int | None = None
    restfulness: int | None = None
    timing: int | None = None
    total_sleep: int | None = None


class OuraMainSleepPeriod(ApiModel):
    """The night's main sleep: the long_sleep period, else the longest one of that day."""

    id: str = Field(validation_alias="oura_id", description="Oura's sleep period id.")
    type: OptionalText = Field(description="Oura's period type, e.g. long_sleep.")
    bedtime_start: datetime
    bedtime_end: datetime
    total_sleep_duration: int | None = Field(description="Seconds asleep.")
    time_in_bed: int | None = Field(description="Seconds in bed.")
    efficiency: int | None = Field(description="Percentage of time in bed spent asleep.")
    average_heart_rate: float | None = Field(description="Beats per minute.")
    lowest_heart_rate: int | None = Field(description="Beats per minute.")
    average_hrv: float | None = Field(description="Milliseconds (RMSSD).")


class OuraDailySleep(ApiModel):
    score: int | None = Field(description="Sleep score, 1-100.")
    contributors: OuraSleepContributors
    main_period: OuraMainSleepPeriod | None


class OuraActivityContributors(ApiModel):
    meet_daily_targets: int | None = None
    move_every_hour: int | None = None
    recovery_time: int | None = None
    stay_active: int | None = None
    training_frequency: int | None = None
    training_volume: int | None = None


class OuraDailyActivity(ApiModel):
    score: int | None = Field(description="Activity score, 1-100.")
    steps: int | None
    active_calories: int | None = Field(description="Kilocalories burned by activity.")
    total_calories: int | None = Field(description="Kilocalories burned in total.")
    target_calories: int | None
    equivalent_walking_distance: int | None = Field(description="Metres.")
    high_activity_time: int | None = Field(description="Seconds.")
    medium_activity_time: int | None = Field(description="Seconds.")
    low_activity_time: int | None = Field(description="Seconds.")
    sedentary_time: int | None = Field(description="Seconds.")
    resting_time: int | None = Field(description="Seconds.")
    non_wear_time: int | None = Field(description="Seconds.")
    average_met_minutes: float | None
    inactivity_alerts: int | None
    contributors: OuraActivityContributors


class OuraDailyStress(ApiModel):
    stress_high: int | None = Field(
        description="Seconds in Oura's high stress zone (the day's top quartile)."
    )
    recovery_high: int | None = Field(
        description="Seconds in Oura's high recovery zone (the day's bottom quartile)."
    )
    day_summary: OptionalText = Field(
        description="restored, normal or stressful; null when Oura had too little data."
    )


class OuraDailySpO2(ApiModel):
    spo2_percentage: float | None = Field(
        description="Average blood oxygen saturation during the night, percent."
    )
    breathing_disturbance_index: int | None = Field(
        description="Breathing disturbance index, 0-100, from the night's SpO2 drops."
    )


class OuraResilienceContributors(ApiModel):
    sleep_recovery: float | None = Field(description="0-100.")
    daytime_recovery: float | None = Field(description="0-100.")
    stress: float | None = Field(description="0-100.")


class OuraDailyResilience(ApiModel):
    level: str = Field(description="limited, adequate, solid, strong or exceptional.")
    contributors: OuraResilienceContributors


class OuraDailyCardiovascularAge(ApiModel):
    vascular_age: int | None = Field(description="Predicted vascular age, years (18-100).")
    pulse_wave_velocity: float | None = Field(description="Metres per second.")


class OuraVO2Max(ApiModel):
    vo2_max: int = Field(description="Estimated VO2 max, ml/kg/min.")


class OuraDailyEntry(ApiModel):
    """One day of a person's Oura summaries; a part is null when Oura has none for the day."""

    day: date
    readiness: OuraDailyReadiness | None
    sleep: OuraDailySleep | None
    activity: OuraDailyActivity | None
    # Added with issue #18, after the first three so that their keys keep their place.
    stress: OuraDailyStress | None
    spo2: OuraDailySpO2 | None
    resilience: OuraDailyResilience | None
    cardiovascular_age: OuraDailyCardiovascularAge | None
    vo2_max: OuraVO2Max | None


class OuraDailyPage(ApiModel):
    data: list[OuraDailyEntry] = Field(description="Days in ascending order.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to read the next page; null on the last page."
    )


# --- The daily page, written by Postgres ------------------------------------------------
#
# The daily page is written as JSON by one SQL statement (normalized/selectors.py), whose
# keys, columns and value forms are derived from the models above through these helpers, so
# the page cannot drift from the schemas; tests check it parses to what `model_dump_json()`
# writes.


def fields_of(
    model: type[ApiModel], *, without: tuple[str, ...] = ()
) -> Iterator[tuple[str, str, str]]:
    """(field name, JSON key, table column) per field, in model order.

    The column is the field's name, or an explicit `validation_alias` such as `id` <-
    `oura_id` (the camelCase alias generator sets every other validation alias).
    """
    for name, field in model.model_fields.items():
        if name in without:
            continue
        column = (
            field.validation_alias
            if isinstance(field.validation_alias, str) and field.validation_alias != field.alias
            else name
        )
        yield name, field.alias or name, column


def blank_is_null(model: type[ApiModel], field: str) -> bool:
    """Whether the field is `OptionalText`: a stored "" goes out as null."""
    return any(
        isinstance(item, BeforeValidator) and item.func is _blank_as_none
        for item in model.model_fields[field].metadata
    )


# --- Sleep time, tags and rest mode ------------------------------------------------------


class OuraSleepTimeWindow(ApiModel):
    day_tz: int = Field(description="The person's UTC offset on that day, seconds.")
    start_offset: int = Field(
        description="Start of the window, seconds from midnight of `day` (negative: before it)."
    )
    end_offset: int = Field(description="End of the window, seconds from midnight of `day`.")


class OuraSleepTime(ApiModel):
    """Oura's bedtime recommendation for a day."""

    id: str = Field(validation_alias="oura_id", description="Oura's sleep time id.")
    day: date
    optimal_bedtime: OuraSleepTimeWindow | None = Field(
        description="The bedtime window Oura found best; null until it has enough nights."
    )
    recommendation: OptionalText = Field(
        description="e.g. earlier_bedtime, follow_optimal_bedtime, improve_efficiency."
    )
    status: OptionalText = Field(
        description="e.g. optimal_found, only_recommended_found, not_enough_nights."
    )


class OuraSleepTimePage(ApiModel):
    data: list[OuraSleepTime] = Field(description="Ordered by day, then id.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to read the next page; null on the last page."
    )


class OuraTag(ApiModel):
    """A tag the person added in the Oura app: an enhanced tag, or a deprecated plain tag."""

    id: str = Field(validation_alias="oura_id", description="Oura's tag id.")
    kind: Literal["enhanced_tag", "tag"] = Field(
        description="enhanced_tag, or tag for Oura's deprecated plain tags."
    )
    day: date = Field(description="Oura's day the tag starts on.")
    start: datetime = Field(description="When the tag starts (its moment if it has no end).")
    end: datetime | None = Field(description="When it ends; null for a tag without duration.")
    end_day: date | None
    tag_type_code: OptionalText = Field(
        description="Oura's tag type, e.g. tag_generic_fasting, or custom; null for text-only "
        "tags and deprecated tags."
    )
    custom_name: OptionalText = Field(description="The name of a custom tag.")
    comment: OptionalText = Field(description="The person's note (a deprecated tag's text).")
    tags: list[str] = Field(description="A deprecated tag's tag codes; empty for enhanced tags.")


class OuraTagPage(ApiModel):
    data: list[OuraTag] = Field(description="Ordered by start, then id.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to read the next page; null on the last page."
    )


class OuraRestModeEpisode(ApiModel):
    tags: list[str] = Field(description="Oura's tag codes, e.g. tag_generic_cold.")
    timestamp: datetime


class OuraRestModePeriod(ApiModel):
    """A span the person had rest mode on."""

    id: str = Field(validation_alias="oura_id", description="Oura's rest mode period id.")
    start_day: date = Field(validation_alias="day")
    end_day: date | None = Field(description="null while rest mode is still on.")
    start_time: datetime | None
    end_time: datetime | None
    episodes: list[OuraRestModeEpisode]


class OuraRestModePeriodPage(ApiModel):
    data: list[OuraRestModePeriod] = Field(description="Ordered by start day, then id.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to read the next page; null on the last page."
    )


# --- Workouts, sessions and sleep periods -------------------------------------------------


class OuraActivity(ApiModel):
    """A workout or a session (meditation, breathing, nap, ...)."""

    id: str = Field(validation_alias="oura_id", description="Oura's workout or session id.")
    kind: Literal["workout", "session"]
    type: str = Field(description="Workout activity (e.g. walking) or session type.")
    day: date
    start: datetime
    end: datetime
    intensity: OptionalText = Field(description="easy, moderate or hard; null for sessions.")
    calories: float | None = Field(description="Kilocalories.")
    distance: float | None = Field(description="Metres.")
    source: OptionalText = Field(description="How Oura learned of it, e.g. manual, autodetected.")
    label: OptionalText
    metrics: dict[str, Any] = Field(
        description="Summaries kept by the normalizer (e.g. mood, heart-rate statistics)."
    )


class OuraActivityPage(ApiModel):
    data: list[OuraActivity] = Field(description="Ordered by start, then id.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to read the next page; null on the last page."
    )


class OuraSleepPeriod(ApiModel):
    id: str = Field(validation_alias="oura_id", description="Oura's sleep period id.")
    day: date
    type: OptionalText = Field(description="long_sleep, sleep, late_nap or rest.")
    bedtime_start: datetime
    bedtime_end: datetime
    total_sleep_duration: int | None = Field(description="Seconds.")
    deep_sleep_duration: int | None = Field(description="Seconds.")
    light_sleep_duration: int | None = Field(description="Seconds.")
    rem_sleep_duration: int | None = Field(description="Seconds.")
    awake_time: int | None = Field(description="Seconds.")
    time_in_bed: int | None = Field(description="Seconds.")
    efficiency: int | None = Field(description="Percent.")
    latency: int | None = Field(description="Seconds to fall asleep.")
    average_heart_rate: float | None
    lowest_heart_rate: int | None
    average_hrv: float | None
    average_breath: float | None
    readiness_score: int | None


class OuraSleepPeriodPage(ApiModel):
    data: list[OuraSleepPeriod] = Field(description="Ordered by bedtime start, then id.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to read the next page; null on the last page."
    )


# --- Heart rate -------------------------------------------------------------------------


class OuraHeartRateSample(ApiModel):
    """One heart rate sample, as Oura's heartrate time series gives it."""

    timestamp: datetime = Field(description="When the ring measured it (UTC).")
    bpm: int = Field(description="Beats per minute.")
    source: str = Field(
        description="What the ring was doing: awake, rest, sleep, workout, live or session."
    )


class OuraHeartRatePage(ApiModel):
    data: list[OuraHeartRateSample] = Field(description="Ordered by timestamp, one per instant.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to read the next page; null on the last page."
    )


# --- Bus ----------------------------------------------------------------------------------
#
# The announcement on health.normalized.user.{userId}.metrics is the bus contract's
# NormalizedMetricsMessage (core/messages.py), with every other message on the bus; it is
# re-exported here for the code that knew it as a DTO.

# File stem in docs/phase-3/schemas/ -> model: the DTOs, then every message on the bus.
# Renaming a stem breaks links; add, don't rename.
JSON_SCHEMAS: dict[str, type[BaseModel]] = {
    "oura-daily-entry": OuraDailyEntry,
    "oura-activity": OuraActivity,
    "oura-sleep-period": OuraSleepPeriod,
    "oura-sleep-time": OuraSleepTime,
    "oura-tag": OuraTag,
    "oura-rest-mode-period": OuraRestModePeriod,
    "oura-heartrate-sample": OuraHeartRateSample,
    **BUS_SCHEMAS,
}
