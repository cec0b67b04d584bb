"""Typed contracts for the Oura Cloud API v2 documents the normalizer accepts.

One pydantic v2 model per document type is the single source of truth for what we accept.
The models follow the official export S137 (`openapi-1.37.json`) and deviate only where real
responses are known to differ (CONTRACT.md sections 3.7, 4 and 8); every deviation is commented
where it is made and listed in `normalized/tests/test_contracts.py`, which checks the models
against S137 and against the recorded fixtures.

Policy shared by every model (see `OuraContract`):

* Unknown fields are ignored (`extra="ignore"`). The untouched raw object is stored separately,
  so nothing is lost; keeping extras out of the model means only typed, reviewed fields can flow
  into normalized rows through attribute access or `model_dump()`. Fields that older or newer
  spec builds add (`meta` from S129, heartrate `producer_timestamp`) are tolerated that way.
* Scalars are strict: a string where S137 says integer is a wrong type, not something to coerce.
  Only days and timestamps are parsed from their JSON strings.
* A missing optional field becomes None; a missing required field or a wrong type raises, and
  `parse_document` turns that into `ContractViolation`, which the normalizer treats as poison.
* Value ranges written only in S137 prose ("in range [1, 100]") are not enforced: they are not
  part of the schema, and a surprising number is not a reason to dead-letter a document.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "DOCUMENT_MODELS",
    "ActivityContributors",
    "ContractViolation",
    "DailyActivity",
    "DailyCardiovascularAge",
    "DailyReadiness",
    "DailyResilience",
    "DailySleep",
    "DailySpO2",
    "DailyStress",
    "EnhancedTag",
    "HeartRateRow",
    "OuraContract",
    "OuraDocument",
    "PersonalInfo",
    "ReadinessContributors",
    "ResilienceContributors",
    "RestModeEpisode",
    "RestModePeriod",
    "RingBatteryLevelRow",
    "RingConfiguration",
    "Sample",
    "Session",
    "SleepContributors",
    "SleepPeriod",
    "SleepPeriodReadiness",
    "SleepTime",
    "SleepTimeWindow",
    "SpO2Percentage",
    "Tag",
    "VO2Max",
    "Workout",
    "cardiovascular_age_fallback_id",
    "parse_document",
    "parse_document_as",
    "summarize_validation_errors",
]


# --- Field types -------------------------------------------------------------------------------


def _require_json_string(value: object) -> object:
    # Lax date/datetime parsing would also read a number as Unix time. Oura always sends days
    # and timestamps as strings, so a number there is a wrong type, not a timestamp.
    if isinstance(value, str | date):  # datetime is a date subclass
        return value
    raise PydanticCustomError("string_type", "Input should be a valid string")


# ISODate, e.g. "2024-11-11".
OuraDay = Annotated[date, Strict(False), BeforeValidator(_require_json_string)]

# LocalizedDateTime / LocalDateTime / UtcDateTime. All observed values carry an offset or "Z"
# (CONTRACT 3.7), and the offset is kept: it is the user's local time, which day boundaries and
# "04:00 local" activity days depend on. A naive value could not be placed in time, so it is a
# violation rather than a guess.
OuraTimestamp = Annotated[AwareDatetime, Strict(False), BeforeValidator(_require_json_string)]

# S137 gives `minLength: 1` for the ids of the Public* documents.
DocumentId = Annotated[str, StringConstraints(min_length=1)]

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _unix_millis(moment: datetime) -> int:
    # Integer arithmetic: float seconds * 1000 can be off by one millisecond.
    return (moment - _UNIX_EPOCH) // timedelta(milliseconds=1)


# --- Base classes ------------------------------------------------------------------------------


class OuraContract(BaseModel):
    """Base of every contract model; `spec_schema` names the S137 schema it mirrors."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    spec_schema: ClassVar[str]


class OuraDocument(OuraContract):
    """A top-level document; `collection` is its REST collection name (`DOCUMENT_MODELS` key)."""

    collection: ClassVar[str]


# --- Shared nested models ----------------------------------------------------------------------


class Sample(OuraContract):
    spec_schema = "PublicSample"

    interval: float
    items: list[float | None]
    timestamp: OuraTimestamp


class ReadinessContributors(OuraContract):
    spec_schema = "PublicReadinessContributors"

    activity_balance: int | None = None
    body_temperature: int | None = None
    hrv_balance: int | None = None
    previous_day_activity: int | None = None
    previous_night: int | None = None
    recovery_index: int | None = None
    resting_heart_rate: int | None = None
    sleep_balance: int | None = None
    # Added in spec 1.28; absent from the Dec-2024 recordings, hence None there.
    sleep_regularity: int | None = None


# --- Daily documents ---------------------------------------------------------------------------


class DailyReadiness(OuraDocument):
    spec_schema = "PublicDailyReadiness"
    collection = "daily_readiness"

    id: DocumentId
    contributors: ReadinessContributors
    day: OuraDay
    score: int | None = None
    temperature_deviation: float | None = None
    temperature_trend_deviation: float | None = None
    timestamp: OuraTimestamp


class SleepContributors(OuraContract):
    spec_schema = "PublicSleepContributors"

    deep_sleep: int | None = None
    efficiency: int | None = None
    latency: int | None = None
    rem_sleep: int | None = None
    restfulness: int | None = None
    timing: int | None = None
    total_sleep: int | None = None


class DailySleep(OuraDocument):
    spec_schema = "PublicDailySleep"
    collection = "daily_sleep"

    id: DocumentId
    contributors: SleepContributors
    day: OuraDay
    score: int | None = None
    timestamp: OuraTimestamp


class ActivityContributors(OuraContract):
    spec_schema = "PublicActivityContributors"

    meet_daily_targets: int | None = None
    move_every_hour: int | None = None
    recovery_time: int | None = None
    stay_active: int | None = None
    training_frequency: int | None = None
    training_volume: int | None = None


class DailyActivity(OuraDocument):
    spec_schema = "PublicDailyActivity"
    collection = "daily_activity"

    id: DocumentId
    active_calories: int
    average_met_minutes: float
    class_5_min: str | None = None
    contributors: ActivityContributors
    day: OuraDay
    equivalent_walking_distance: int
    high_activity_met_minutes: int
    high_activity_time: int
    inactivity_alerts: int
    low_activity_met_minutes: int
    low_activity_time: int
    medium_activity_met_minutes: int
    medium_activity_time: int
    met: Sample
    meters_to_target: int
    non_wear_time: int
    resting_time: int
    score: int | None = None
    sedentary_met_minutes: int
    sedentary_time: int
    steps: int
    target_calories: int
    target_meters: int
    timestamp: OuraTimestamp
    total_calories: int


class SpO2Percentage(OuraContract):
    spec_schema = "PublicSpo2AggregatedValues"

    # Drift: S137 requires a number, but content-free documents carry a null or no `average`
    # (GOREP). Poisoning those would dead-letter documents that simply have no value yet.
    average: float | None = None


class DailySpO2(OuraDocument):
    spec_schema = "PublicDailySpO2"
    collection = "daily_spo2"

    id: DocumentId
    breathing_disturbance_index: int | None = None
    day: OuraDay
    spo2_percentage: SpO2Percentage | None = None


class DailyStress(OuraDocument):
    spec_schema = "PublicDailyStress"
    collection = "daily_stress"

    id: DocumentId
    day: OuraDay
    # Strict: S137 enum and the recordings agree (normal, restored; null on empty days).
    day_summary: Literal["restored", "normal", "stressful"] | None = None
    recovery_high: int | None = None
    stress_high: int | None = None


class ResilienceContributors(OuraContract):
    spec_schema = "ResilienceContributors"

    sleep_recovery: float
    daytime_recovery: float
    stress: float


class DailyResilience(OuraDocument):
    spec_schema = "DailyResilienceModel"
    collection = "daily_resilience"

    # S137 sets no minLength on this schema's id.
    id: str
    day: OuraDay
    contributors: ResilienceContributors
    # Strict: S137 enum and the recordings agree ("adequate").
    level: Literal["limited", "adequate", "solid", "strong", "exceptional"]


def cardiovascular_age_fallback_id(day: date) -> str:
    """Deterministic id for a daily_cardiovascular_age document that came without one.

    Real Dec-2024 documents had no `id` (EXO). There is one such document per user and day, so
    the ISO day is unique within a user's collection, is stable across re-fetches (redelivery
    upserts the same row) and cannot collide with Oura's UUID ids. If Oura later sends an id for
    the same day, rows should be matched on (user, day), which is the document's natural key.
    """
    return day.isoformat()


class DailyCardiovascularAge(OuraDocument):
    spec_schema = "PublicDailyCardiovascularAge"
    collection = "daily_cardiovascular_age"

    # Drift: S137 requires `id`, but the Dec-2024 API omitted it (EXO); see `document_id`.
    id: DocumentId | None = None
    day: OuraDay
    pulse_wave_velocity: float | None = None
    vascular_age: int | None = None

    @property
    def document_id(self) -> str:
        """Oura's id, or the deterministic day-based fallback when the document had none."""
        return self.id if self.id is not None else cardiovascular_age_fallback_id(self.day)


class VO2Max(OuraDocument):
    spec_schema = "PublicVO2Max"
    # REST path spelling; the webhook data_type is "vo2_max" (ingestion.data_types).
    collection = "vO2_max"

    id: DocumentId
    day: OuraDay
    timestamp: OuraTimestamp
    vo2_max: int


class SleepTimeWindow(OuraContract):
    spec_schema = "PublicSleepTimeWindow"

    day_tz: int
    end_offset: int
    start_offset: int


class SleepTime(OuraDocument):
    spec_schema = "PublicSleepTime"
    collection = "sleep_time"

    id: DocumentId
    day: OuraDay
    optimal_bedtime: SleepTimeWindow | None = None
    # Strict for recommendation and status: S137 enums and the recordings agree.
    recommendation: (
        Literal[
            "improve_efficiency",
            "earlier_bedtime",
            "later_bedtime",
            "earlier_wake_up_time",
            "later_wake_up_time",
            "follow_optimal_bedtime",
        ]
        | None
    ) = None
    status: (
        Literal[
            "not_enough_nights",
            "not_enough_recent_nights",
            "bad_sleep_quality",
            "only_recommended_found",
            "optimal_found",
        ]
        | None
    ) = None


# --- Sleep periods, workouts, sessions --------------------------------------------------------


class SleepPeriodReadiness(OuraContract):
    spec_schema = "PublicReadiness"

    contributors: ReadinessContributors
    score: int | None = None
    temperature_deviation: float | None = None
    temperature_trend_deviation: float | None = None


class SleepPeriod(OuraDocument):
    spec_schema = "PublicModifiedSleepModel"
    collection = "sleep"

    id: DocumentId
    average_breath: float | None = None
    average_heart_rate: float | None = None
    average_hrv: int | None = None
    awake_time: int | None = None
    bedtime_end: OuraTimestamp
    bedtime_start: OuraTimestamp
    day: OuraDay
    deep_sleep_duration: int | None = None
    efficiency: int | None = None
    heart_rate: Sample | None = None
    hrv: Sample | None = None
    latency: int | None = None
    light_sleep_duration: int | None = None
    low_battery_alert: bool
    lowest_heart_rate: int | None = None
    movement_30_sec: str | None = None
    period: int
    readiness: SleepPeriodReadiness | None = None
    readiness_score_delta: int | None = None
    rem_sleep_duration: int | None = None
    restless_periods: int | None = None
    # Open: S137 knows v1/v2 (only v2 observed). A new algorithm version is metadata and must not
    # dead-letter every sleep period; the normalizer stores it as text.
    sleep_algorithm_version: str | None = None
    # Open: S137 enum (foreground_sleep_analysis, bedtime_edit, background_sleep_analysis,
    # background_created_foreground_updated) was never observed; provenance metadata only.
    sleep_analysis_reason: str | None = None
    sleep_phase_30_sec: str | None = None
    sleep_phase_5_min: str | None = None
    sleep_score_delta: int | None = None
    time_in_bed: int
    total_sleep_duration: int | None = None
    # Strict: S137 enum and 48 recorded periods agree, and the normalizer decides from it which
    # periods count (e.g. "deleted", "rest"); an unknown type must not be guessed.
    type: Literal["deleted", "sleep", "long_sleep", "late_nap", "rest"] | None = None
    ring_id: str | None = None
    # S137: "will be removed in the future"; optional like every other phase string.
    app_sleep_phase_5_min: str | None = None


class Workout(OuraDocument):
    spec_schema = "PublicWorkout"
    collection = "workout"

    id: DocumentId
    # Free text in S137 (plain string, no enum); observed walking, running, and the app offers
    # dozens of activities.
    activity: str
    calories: float | None = None
    day: OuraDay
    distance: float | None = None
    end_datetime: OuraTimestamp
    # Strict: a three-step scale in S137, and 83 recorded workouts agree (easy, moderate).
    intensity: Literal["easy", "moderate", "hard"]
    label: str | None = None
    # Open: the S137 enum (manual, autodetected, confirmed, workout_heart_rate) has grown over
    # time and only "confirmed" was observed; a new source is provenance, not a broken workout.
    source: str
    start_datetime: OuraTimestamp


class Session(OuraDocument):
    spec_schema = "PublicSession"
    collection = "session"

    id: DocumentId
    day: OuraDay
    end_datetime: OuraTimestamp
    heart_rate: Sample | None = None
    heart_rate_variability: Sample | None = None
    # Strict for mood and type: S137 enums and the recordings agree.
    mood: Literal["bad", "worse", "same", "good", "great"] | None = None
    motion_count: Sample | None = None
    start_datetime: OuraTimestamp
    type: Literal["breathing", "meditation", "nap", "relaxation", "rest", "body_status"]


# --- Tags and rest mode ------------------------------------------------------------------------


class EnhancedTag(OuraDocument):
    spec_schema = "EnhancedTagModel"
    collection = "enhanced_tag"

    # S137 sets no minLength on this schema's id.
    id: str
    # Open by design in S137: a catalogue code ("tag_generic_fasting"), "custom", or null.
    tag_type_code: str | None = None
    start_time: OuraTimestamp
    end_time: OuraTimestamp | None = None
    start_day: OuraDay
    end_day: OuraDay | None = None
    comment: str | None = None
    custom_name: str | None = None


class Tag(OuraDocument):
    """Deprecated `tag` route (TagModel); only synthetic samples exist."""

    spec_schema = "TagModel"
    collection = "tag"

    id: str
    day: OuraDay
    # Required but nullable in S137: the key must be present, its value may be null.
    text: str | None
    timestamp: OuraTimestamp
    tags: list[str]


class RestModeEpisode(OuraContract):
    spec_schema = "PublicRestModeEpisode"

    tags: list[str]
    timestamp: OuraTimestamp


class RestModePeriod(OuraDocument):
    spec_schema = "PublicRestModePeriod"
    collection = "rest_mode_period"

    id: DocumentId
    end_day: OuraDay | None = None
    end_time: OuraTimestamp | None = None
    episodes: list[RestModeEpisode]
    start_day: OuraDay
    start_time: OuraTimestamp | None = None


# --- Ring --------------------------------------------------------------------------------------


class RingConfiguration(OuraDocument):
    spec_schema = "PublicRingConfiguration"
    collection = "ring_configuration"

    id: DocumentId
    # Open for color, design and hardware_type: S137 lists them (PublicRingColor,
    # PublicRingDesign, PublicRingHardwareType) and the recordings agree, but they are Oura's
    # product catalogue, which grows with every launch (cloud, petal, or5, ...). A new ring must
    # not turn the user's ring configuration into poison.
    color: str | None = None
    design: str | None = None
    firmware_version: str | None = None
    hardware_type: str | None = None
    # Observed "1970-01-01T00:00:00+00:00" for an old ring: kept as sent, not treated as null.
    set_up_at: OuraTimestamp | None = None
    size: int | None = None


# --- Time series rows --------------------------------------------------------------------------


def _timestamp_unix_or_derived(value: int, info: ValidationInfo) -> int:
    # Drift (CONTRACT 3.7): S137 requires `timestamp_unix`, but it was absent in Dec 2024 and is
    # 0 in 2026 range responses. It is only `timestamp` in epoch milliseconds, so derive it from
    # there instead of rejecting the row. A real value is kept as sent.
    if value != 0:
        return value
    timestamp = info.data.get("timestamp")
    if not isinstance(timestamp, datetime):
        # `timestamp` itself failed validation and is reported on its own.
        return value
    return _unix_millis(timestamp)


class HeartRateRow(OuraDocument):
    """One row of the heartrate time series; the route has no single-document variant."""

    spec_schema = "PublicHeartRateRow"
    collection = "heartrate"

    timestamp: OuraTimestamp
    # Always a real epoch-millisecond value after validation (see the validator). The 2026
    # undocumented `producer_timestamp` is ignored with the other unknown fields.
    timestamp_unix: int = Field(default=0, validate_default=True)
    bpm: int
    # Strict: S137 enum and 1101 recorded rows agree (awake, rest, workout).
    source: Literal["awake", "workout", "rest", "sleep", "live", "session"]

    _derive_timestamp_unix = field_validator("timestamp_unix")(_timestamp_unix_or_derived)


class RingBatteryLevelRow(OuraDocument):
    """One row of the ring_battery_level time series (no real sample was ever recorded)."""

    spec_schema = "PublicRingBatteryLevelRow"
    collection = "ring_battery_level"

    timestamp: OuraTimestamp
    # Same row family and generator as heartrate, so the same `timestamp_unix` drift is assumed.
    timestamp_unix: int = Field(default=0, validate_default=True)
    charging: bool | None = None
    in_charger: bool | None = None
    level: int

    _derive_timestamp_unix = field_validator("timestamp_unix")(_timestamp_unix_or_derived)


# --- Personal info -----------------------------------------------------------------------------


class PersonalInfo(OuraDocument):
    spec_schema = "PersonalInfoResponse"
    collection = "personal_info"

    # Equals the webhook `user_id`; not a UUID. S137 sets no minLength here.
    id: str
    age: int | None = None
    weight: float | None = None
    height: float | None = None
    # Plain string in S137 (no enum).
    biological_sex: str | None = None
    email: str | None = None


# --- Registry ----------------------------------------------------------------------------------

_DOCUMENT_MODEL_LIST: tuple[type[OuraDocument], ...] = (
    DailyReadiness,
    DailySleep,
    DailyActivity,
    SleepPeriod,
    Workout,
    Session,
    DailySpO2,
    DailyStress,
    DailyResilience,
    DailyCardiovascularAge,
    VO2Max,
    SleepTime,
    EnhancedTag,
    Tag,
    RestModePeriod,
    RingConfiguration,
    HeartRateRow,
    RingBatteryLevelRow,
    PersonalInfo,
)

DOCUMENT_MODELS: dict[str, type[BaseModel]] = {
    model.collection: model for model in _DOCUMENT_MODEL_LIST
}
"""REST collection name (the path segment after /v2/usercollection/) -> contract model."""

# --- Parsing -----------------------------------------------------------------------------------

_MAX_REPORTED_ERRORS = 20

DocumentT = TypeVar("DocumentT", bound=OuraDocument)


class ContractViolation(ValueError):
    """A document does not match its contract; the normalizer dead-letters it (poison).

    The message names field locations and pydantic error types only, never input values: the
    documents are health data and this message ends up in logs and dead-letter records.
    """

    def __init__(self, collection: str, errors_summary: str) -> None:
        super().__init__(f"{collection} document violates the Oura contract: {errors_summary}")
        self.collection = collection
        self.errors_summary = errors_summary


def summarize_validation_errors(exc: ValidationError) -> str:
    """`loc: type` pairs of a pydantic error, without input values, messages or context.

    pydantic's own `str(exc)` and `msg`/`ctx` can quote the input, so only `loc` (field names
    and list indices from our schema) and `type` (pydantic's error code) are used.
    """
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = [
        f"{'.'.join(str(part) for part in error['loc']) or '<document>'}: {error['type']}"
        for error in errors[:_MAX_REPORTED_ERRORS]
    ]
    if len(errors) > _MAX_REPORTED_ERRORS:
        # Bounded: a broken sample array could otherwise produce thousands of entries.
        parts.append(f"... {len(errors) - _MAX_REPORTED_ERRORS} more")
    return "; ".join(parts)


def _validate(model: type[DocumentT], collection: str, raw: Mapping[str, Any]) -> DocumentT:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        summary = summarize_validation_errors(exc)
    # Raised outside the except block: chaining the ValidationError would print its input
    # values in every logged traceback.
    raise ContractViolation(collection, summary)


def parse_document(collection: str, raw: Mapping[str, Any]) -> BaseModel:
    """Validate one raw document of a REST collection against its contract.

    Raises `ContractViolation` for an unknown collection, a missing required field or a wrong
    type. Time-series collections (heartrate, ring_battery_level) take one row, not a page.
    """
    model = DOCUMENT_MODELS.get(collection)
    if model is None or not issubclass(model, OuraDocument):
        raise ContractViolation(collection, "<collection>: unknown_collection")
    return _validate(model, collection, raw)


def parse_document_as(model: type[DocumentT], raw: Mapping[str, Any]) -> DocumentT:
    """Typed variant of `parse_document` for callers that know the model they expect."""
    return _validate(model, model.collection, raw)
