"""Normalized Oura data in schema `health`.

Every row records the raw object it came from (`raw_object_key`) and the normalizer version
that wrote it. Each table has the unique key the normalizer upserts on, so redelivery of a
message rewrites the same row instead of adding one.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.db import health_table


class NormalizedRow(models.Model):
    user_id = models.CharField(max_length=64)
    oura_id = models.CharField(max_length=128, help_text="Oura's document id")
    raw_object_key = models.CharField(max_length=512, blank=True)
    normalizer_version = models.PositiveIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)
    # When the document was read from Oura (webhook fetch or backfill page). An upsert only
    # replaces a row with a document observed at the same time or later, so a message that
    # arrives late (an older fetch, an old backfill page) cannot undo a newer state.
    source_observed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class DailyReadiness(NormalizedRow):
    day = models.DateField()
    score = models.SmallIntegerField(null=True)
    temperature_deviation = models.FloatField(null=True)
    temperature_trend_deviation = models.FloatField(null=True)
    contributors = models.JSONField(default=dict)
    timestamp = models.DateTimeField(null=True)

    class Meta:
        db_table = health_table("oura_daily_readiness")
        constraints = [
            models.UniqueConstraint(fields=["user_id", "day"], name="readiness_user_day_uniq")
        ]
        indexes = [models.Index(fields=["user_id", "oura_id"], name="readiness_oura_id_idx")]

    def __str__(self) -> str:
        return f"readiness {self.user_id} {self.day}"


class DailySleep(NormalizedRow):
    day = models.DateField()
    score = models.SmallIntegerField(null=True)
    contributors = models.JSONField(default=dict)
    timestamp = models.DateTimeField(null=True)

    class Meta:
        db_table = health_table("oura_daily_sleep")
        constraints = [
            models.UniqueConstraint(fields=["user_id", "day"], name="daily_sleep_user_day_uniq")
        ]
        indexes = [models.Index(fields=["user_id", "oura_id"], name="daily_sleep_oura_id_idx")]

    def __str__(self) -> str:
        return f"daily sleep {self.user_id} {self.day}"


class DailyActivity(NormalizedRow):
    day = models.DateField()
    score = models.SmallIntegerField(null=True)
    active_calories = models.IntegerField(null=True)
    total_calories = models.IntegerField(null=True)
    target_calories = models.IntegerField(null=True)
    steps = models.IntegerField(null=True)
    equivalent_walking_distance = models.IntegerField(null=True)
    high_activity_time = models.IntegerField(null=True)
    medium_activity_time = models.IntegerField(null=True)
    low_activity_time = models.IntegerField(null=True)
    sedentary_time = models.IntegerField(null=True)
    resting_time = models.IntegerField(null=True)
    non_wear_time = models.IntegerField(null=True)
    average_met_minutes = models.FloatField(null=True)
    inactivity_alerts = models.IntegerField(null=True)
    contributors = models.JSONField(default=dict)
    timestamp = models.DateTimeField(null=True)

    class Meta:
        db_table = health_table("oura_daily_activity")
        constraints = [
            models.UniqueConstraint(fields=["user_id", "day"], name="daily_activity_user_day_uniq")
        ]
        indexes = [models.Index(fields=["user_id", "oura_id"], name="daily_act_oura_id_idx")]

    def __str__(self) -> str:
        return f"daily activity {self.user_id} {self.day}"


class SleepPeriod(NormalizedRow):
    day = models.DateField()
    type = models.CharField(max_length=20, blank=True)
    bedtime_start = models.DateTimeField()
    bedtime_end = models.DateTimeField()
    total_sleep_duration = models.IntegerField(null=True)
    deep_sleep_duration = models.IntegerField(null=True)
    light_sleep_duration = models.IntegerField(null=True)
    rem_sleep_duration = models.IntegerField(null=True)
    awake_time = models.IntegerField(null=True)
    time_in_bed = models.IntegerField(null=True)
    efficiency = models.SmallIntegerField(null=True)
    latency = models.IntegerField(null=True)
    average_heart_rate = models.FloatField(null=True)
    lowest_heart_rate = models.SmallIntegerField(null=True)
    average_hrv = models.FloatField(null=True)
    average_breath = models.FloatField(null=True)
    readiness_score = models.SmallIntegerField(null=True)

    class Meta:
        db_table = health_table("oura_sleep_periods")
        constraints = [
            models.UniqueConstraint(fields=["user_id", "oura_id"], name="sleep_period_uniq")
        ]
        # The sleep list and the daily page's main period read a person's days from this
        # index alone (index-only scans, migration 0006): the fleet writes day by day, so
        # their rows are one heap page per day, and a cold year would be ~366 page reads.
        indexes = [
            models.Index(
                fields=["user_id", "day"],
                include=[
                    "oura_id", "type", "bedtime_start", "bedtime_end", "total_sleep_duration",
                    "deep_sleep_duration", "light_sleep_duration", "rem_sleep_duration",
                    "awake_time", "time_in_bed", "efficiency", "latency", "average_heart_rate",
                    "lowest_heart_rate", "average_hrv", "average_breath", "readiness_score", "id",
                ],
                name="sleep_period_read_idx",
            )
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"sleep period {self.user_id} {self.day}"


class Activity(NormalizedRow):
    """Workouts and sessions ("Moments"), in one table as the draft's `oura_activities`."""

    class Kind(models.TextChoices):
        WORKOUT = "workout"
        SESSION = "session"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    day = models.DateField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    type = models.CharField(max_length=64, help_text="workout activity or session type")
    intensity = models.CharField(max_length=10, blank=True)
    calories = models.FloatField(null=True)
    distance = models.FloatField(null=True)
    source = models.CharField(max_length=30, blank=True)
    label = models.CharField(max_length=200, blank=True)
    metrics = models.JSONField(default=dict, help_text="summaries of samples, mood, etc.")

    class Meta:
        db_table = health_table("oura_activities")
        constraints = [
            models.UniqueConstraint(fields=["user_id", "kind", "oura_id"], name="activity_uniq")
        ]
        # The keyset order, covering what the activity list returns (index-only scans,
        # migration 0006). `metrics` is small: summaries of at most three samples and a mood.
        indexes = [
            models.Index(
                fields=["user_id", "start", "id"],
                include=[
                    "oura_id", "kind", "type", "day", "end", "intensity", "calories",
                    "distance", "source", "label", "metrics",
                ],
                name="activity_start_read_idx",
            )
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"activity {self.user_id} {self.start}"


# --- Daily types of issue #18 -------------------------------------------------------------
#
# One row per person and day like the three above. Their unique (user_id, day) constraints
# INCLUDE the columns the daily page reads, so the normalizer's ON CONFLICT and the read share
# one index and the read is an index-only scan (migration 0003 added separate covering indexes
# to the older tables; here one index does both and each write maintains one index fewer).


class DailyStress(NormalizedRow):
    day = models.DateField()
    stress_high = models.IntegerField(null=True, help_text="seconds of high stress")
    recovery_high = models.IntegerField(null=True, help_text="seconds of high recovery")
    day_summary = models.CharField(max_length=20, blank=True)

    class Meta:
        db_table = health_table("oura_daily_stress")
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "day"],
                include=["stress_high", "recovery_high", "day_summary"],
                name="daily_stress_user_day_uniq",
            )
        ]
        indexes = [models.Index(fields=["user_id", "oura_id"], name="daily_stress_oura_id_idx")]

    def __str__(self) -> str:
        return f"daily stress {self.user_id} {self.day}"


class DailySpO2(NormalizedRow):
    day = models.DateField()
    spo2_percentage = models.FloatField(null=True, help_text="the night's average, percent")
    breathing_disturbance_index = models.IntegerField(null=True)

    class Meta:
        db_table = health_table("oura_daily_spo2")
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "day"],
                include=["spo2_percentage", "breathing_disturbance_index"],
                name="daily_spo2_user_day_uniq",
            )
        ]
        indexes = [models.Index(fields=["user_id", "oura_id"], name="daily_spo2_oura_id_idx")]

    def __str__(self) -> str:
        return f"daily spo2 {self.user_id} {self.day}"


class DailyResilience(NormalizedRow):
    day = models.DateField()
    level = models.CharField(max_length=20)
    # Oura's three contributors, as columns: floats, unlike the integer contributors above.
    sleep_recovery = models.FloatField(null=True)
    daytime_recovery = models.FloatField(null=True)
    stress = models.FloatField(null=True)

    class Meta:
        db_table = health_table("oura_daily_resilience")
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "day"],
                include=["level", "sleep_recovery", "daytime_recovery", "stress"],
                name="daily_resilience_user_day_uniq",
            )
        ]
        indexes = [models.Index(fields=["user_id", "oura_id"], name="daily_resilience_oura_id_idx")]

    def __str__(self) -> str:
        return f"daily resilience {self.user_id} {self.day}"


class DailyCardiovascularAge(NormalizedRow):
    """`oura_id` is the day when Oura sent no id (see contracts.cardiovascular_age_fallback_id)."""

    day = models.DateField()
    vascular_age = models.SmallIntegerField(null=True, help_text="years")
    pulse_wave_velocity = models.FloatField(null=True, help_text="metres per second")

    class Meta:
        db_table = health_table("oura_daily_cardiovascular_age")
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "day"],
                include=["vascular_age", "pulse_wave_velocity"],
                name="daily_cv_age_user_day_uniq",
            )
        ]
        indexes = [models.Index(fields=["user_id", "oura_id"], name="daily_cv_age_oura_id_idx")]

    def __str__(self) -> str:
        return f"cardiovascular age {self.user_id} {self.day}"


class VO2Max(NormalizedRow):
    day = models.DateField()
    vo2_max = models.SmallIntegerField(help_text="ml/kg/min")
    timestamp = models.DateTimeField(null=True)

    class Meta:
        db_table = health_table("oura_vo2_max")
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "day"], include=["vo2_max"], name="vo2_max_user_day_uniq"
            )
        ]
        indexes = [models.Index(fields=["user_id", "oura_id"], name="vo2_max_oura_id_idx")]

    def __str__(self) -> str:
        return f"vo2 max {self.user_id} {self.day}"


# --- Interval types of issue #18 ----------------------------------------------------------
#
# Keyed by Oura's id; `day` is the Oura day the span starts on (start_day where Oura names it
# so), which the normalizer's upsert and delete report and the read endpoints filter on.


class SleepTime(NormalizedRow):
    """Oura's bedtime recommendation for a day."""

    day = models.DateField()
    # {"day_tz", "start_offset", "end_offset"} as Oura sends it (seconds), or null.
    optimal_bedtime = models.JSONField(null=True)
    recommendation = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=40, blank=True)

    class Meta:
        db_table = health_table("oura_sleep_times")
        constraints = [
            models.UniqueConstraint(fields=["user_id", "oura_id"], name="sleep_time_uniq")
        ]
        indexes = [models.Index(fields=["user_id", "day", "id"], name="sleep_time_day_idx")]

    def __str__(self) -> str:
        return f"sleep time {self.user_id} {self.day}"


class Tag(NormalizedRow):
    """Enhanced tags and the deprecated plain tags, in one table like `Activity`."""

    class Kind(models.TextChoices):
        ENHANCED_TAG = "enhanced_tag"
        TAG = "tag"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    day = models.DateField()
    start = models.DateTimeField()
    end = models.DateTimeField(null=True)
    end_day = models.DateField(null=True)
    tag_type_code = models.CharField(max_length=100, blank=True)
    custom_name = models.CharField(max_length=200, blank=True)
    comment = models.CharField(
        max_length=4000, blank=True, help_text="enhanced tag comment, or a tag's text"
    )
    tags = models.JSONField(default=list, help_text="a deprecated tag's tag codes")

    class Meta:
        db_table = health_table("oura_tags")
        constraints = [
            models.UniqueConstraint(fields=["user_id", "kind", "oura_id"], name="tag_uniq")
        ]
        indexes = [models.Index(fields=["user_id", "start", "id"], name="tag_start_idx")]

    def __str__(self) -> str:
        return f"tag {self.user_id} {self.start}"


class RestModePeriod(NormalizedRow):
    day = models.DateField(help_text="Oura's start_day")
    end_day = models.DateField(null=True)
    start_time = models.DateTimeField(null=True)
    end_time = models.DateTimeField(null=True)
    episodes = models.JSONField(default=list, help_text="[{tags, timestamp}] as Oura sends them")

    class Meta:
        db_table = health_table("oura_rest_mode_periods")
        constraints = [
            models.UniqueConstraint(fields=["user_id", "oura_id"], name="rest_mode_period_uniq")
        ]
        indexes = [models.Index(fields=["user_id", "day", "id"], name="rest_mode_period_day_idx")]

    def __str__(self) -> str:
        return f"rest mode {self.user_id} {self.day}"


class DeletedDocument(models.Model):
    """A tombstone: Oura deleted this document. Upserts of the same document are skipped.

    Oura's document ids are never reused, so once deleted, any copy of the document still in
    flight (a fetch made before the delete, an older backfill page) is stale by definition.
    """

    user_id = models.CharField(max_length=64)
    collection = models.CharField(max_length=40)
    oura_id = models.CharField(max_length=128)
    deleted_at = models.DateTimeField(default=timezone.now)
    event_id = models.CharField(max_length=64, blank=True, help_text="the delete notification")

    class Meta:
        db_table = health_table("oura_deleted_documents")
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "collection", "oura_id"], name="deleted_document_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"deleted {self.collection} {self.oura_id}"


# --- Heart rate (issue #18) ---------------------------------------------------------------
#
# The largest table by far (one sample every 5 minutes at rest, every few seconds in a workout,
# per person), so it is partitioned by month on `timestamp` (native Postgres partitioning,
# created by migration 0005 in SQL: Django cannot create partitioned tables). Old months can
# then be detached or dropped whole, and a time-range read touches only its months.


class HeartRateSample(models.Model):
    """One heart rate sample; Oura's time series rows have no id, (user, timestamp) is the key.

    The primary key includes the partition key, as Postgres requires of a unique key on a
    partitioned table. Provenance columns as on NormalizedRow, without `oura_id`.
    """

    pk = models.CompositePrimaryKey("user_id", "timestamp")
    user_id = models.CharField(max_length=64)
    timestamp = models.DateTimeField()
    bpm = models.SmallIntegerField()
    source = models.CharField(max_length=10, help_text="awake, rest, sleep, workout, live, ...")
    raw_object_key = models.CharField(max_length=512, blank=True)
    normalizer_version = models.PositiveIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)
    source_observed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = health_table("oura_heartrate_samples")

    def __str__(self) -> str:
        return f"heart rate {self.user_id} {self.timestamp}"


# --- The daily page's read model (issue #19) ------------------------------------------------


class DailyEntry(models.Model):
    """One person's day as the daily page serves it: the entry's JSON, written by Postgres.

    Derived data, kept by triggers on the daily tables and sleep periods (normalized/
    daily_entries.py says how and why); nothing in Python writes it. `entry` is null for an
    entry too long to keep (the page is then written from the tables).
    """

    pk = models.CompositePrimaryKey("user_id", "day")
    user_id = models.CharField(max_length=64)
    day = models.DateField()
    # Null, not "": an entry too long to store, which the reader must tell from an empty one.
    entry = models.TextField(null=True)  # noqa: DJ001 - null means "too long", see above

    class Meta:
        db_table = health_table("oura_daily_entries")

    def __str__(self) -> str:
        return f"daily entry {self.user_id} {self.day}"
