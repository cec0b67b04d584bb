"""Normalized rows for read-API tests, created directly (the normalizer is tested elsewhere)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import factory

from normalized.models import (
    Activity,
    DailyActivity,
    DailyCardiovascularAge,
    DailyReadiness,
    DailyResilience,
    DailySleep,
    DailySpO2,
    DailyStress,
    RestModePeriod,
    SleepPeriod,
    SleepTime,
    Tag,
    VO2Max,
)


class NormalizedRowFactory(factory.django.DjangoModelFactory):
    user_id = "user-a"
    oura_id = factory.Sequence(lambda n: f"oura-{n}")
    raw_object_key = factory.LazyAttribute(
        lambda o: f"provider=oura/date=2024-01-01/user={o.user_id}/event={o.oura_id}.json"
    )
    normalizer_version = 1


class DailyReadinessFactory(NormalizedRowFactory):
    class Meta:
        model = DailyReadiness

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    score = 80
    temperature_deviation = -0.2
    temperature_trend_deviation = 0.1
    contributors = factory.LazyFunction(
        lambda: {
            "activity_balance": 70,
            "body_temperature": 95,
            "hrv_balance": 60,
            "previous_day_activity": 80,
            "previous_night": 75,
            "recovery_index": 90,
            "resting_heart_rate": 85,
            "sleep_balance": 78,
            "sleep_regularity": None,
        }
    )
    timestamp = factory.LazyAttribute(lambda o: datetime.combine(o.day, datetime.min.time(), UTC))


class DailySleepFactory(NormalizedRowFactory):
    class Meta:
        model = DailySleep

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    score = 82
    contributors = factory.LazyFunction(
        lambda: {
            "deep_sleep": 90,
            "efficiency": 85,
            "latency": 70,
            "rem_sleep": 88,
            "restfulness": 65,
            "timing": 80,
            "total_sleep": 77,
        }
    )
    timestamp = factory.LazyAttribute(lambda o: datetime.combine(o.day, datetime.min.time(), UTC))


class DailyActivityFactory(NormalizedRowFactory):
    class Meta:
        model = DailyActivity

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    score = 75
    active_calories = 450
    total_calories = 2400
    target_calories = 500
    steps = 9000
    equivalent_walking_distance = 7200
    high_activity_time = 600
    medium_activity_time = 1800
    low_activity_time = 12000
    sedentary_time = 30000
    resting_time = 28000
    non_wear_time = 0
    average_met_minutes = 1.6
    inactivity_alerts = 1
    contributors = factory.LazyFunction(
        lambda: {
            "meet_daily_targets": 60,
            "move_every_hour": 95,
            "recovery_time": 100,
            "stay_active": 70,
            "training_frequency": 80,
            "training_volume": 90,
        }
    )
    timestamp = factory.LazyAttribute(lambda o: datetime.combine(o.day, datetime.min.time(), UTC))


class SleepPeriodFactory(NormalizedRowFactory):
    class Meta:
        model = SleepPeriod

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    type = "long_sleep"
    bedtime_start = factory.LazyAttribute(
        lambda o: datetime.combine(o.day, datetime.min.time(), UTC) - timedelta(hours=1)
    )
    bedtime_end = factory.LazyAttribute(lambda o: o.bedtime_start + timedelta(hours=8))
    total_sleep_duration = 25200
    deep_sleep_duration = 5400
    light_sleep_duration = 14400
    rem_sleep_duration = 5400
    awake_time = 1800
    time_in_bed = 28800
    efficiency = 88
    latency = 600
    average_heart_rate = 55.5
    lowest_heart_rate = 48
    average_hrv = 42.0
    average_breath = 14.5
    readiness_score = 80


class ActivityFactory(NormalizedRowFactory):
    class Meta:
        model = Activity

    kind = Activity.Kind.WORKOUT
    day = date(2024, 1, 1)
    start = factory.LazyAttribute(
        lambda o: datetime.combine(o.day, datetime.min.time(), UTC) + timedelta(hours=7)
    )
    end = factory.LazyAttribute(lambda o: o.start + timedelta(minutes=45))
    type = "walking"
    intensity = "moderate"
    calories = 210.5
    distance = 3500.0
    source = "autodetected"
    label = ""
    metrics = factory.LazyFunction(dict)


# --- The types of issue #18 ---------------------------------------------------------------


class DailyStressFactory(NormalizedRowFactory):
    class Meta:
        model = DailyStress

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    stress_high = 1800
    recovery_high = 7200
    day_summary = "normal"


class DailySpO2Factory(NormalizedRowFactory):
    class Meta:
        model = DailySpO2

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    spo2_percentage = 97.5
    breathing_disturbance_index = 12


class DailyResilienceFactory(NormalizedRowFactory):
    class Meta:
        model = DailyResilience

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    level = "adequate"
    sleep_recovery = 46.2
    daytime_recovery = 49.3
    stress = 34.5


class DailyCardiovascularAgeFactory(NormalizedRowFactory):
    class Meta:
        model = DailyCardiovascularAge

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    oura_id = factory.LazyAttribute(lambda o: o.day.isoformat())
    vascular_age = 39
    pulse_wave_velocity = None


class VO2MaxFactory(NormalizedRowFactory):
    class Meta:
        model = VO2Max

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    vo2_max = 45
    timestamp = factory.LazyAttribute(
        lambda o: datetime.combine(o.day, datetime.min.time(), UTC) + timedelta(hours=14)
    )


class SleepTimeFactory(NormalizedRowFactory):
    class Meta:
        model = SleepTime

    day = factory.Sequence(lambda n: date(2024, 1, 1) + timedelta(days=n))
    optimal_bedtime = None
    recommendation = "earlier_bedtime"
    status = "only_recommended_found"


class TagFactory(NormalizedRowFactory):
    class Meta:
        model = Tag

    kind = Tag.Kind.ENHANCED_TAG
    day = date(2024, 1, 1)
    start = factory.LazyAttribute(
        lambda o: datetime.combine(o.day, datetime.min.time(), UTC) + timedelta(hours=20)
    )
    end = None
    end_day = None
    tag_type_code = "tag_generic_fasting"
    custom_name = ""
    comment = ""
    tags = factory.LazyFunction(list)


class RestModePeriodFactory(NormalizedRowFactory):
    class Meta:
        model = RestModePeriod

    day = date(2024, 1, 1)
    end_day = factory.LazyAttribute(lambda o: o.day + timedelta(days=2))
    start_time = factory.LazyAttribute(
        lambda o: datetime.combine(o.day, datetime.min.time(), UTC) + timedelta(hours=9)
    )
    end_time = factory.LazyAttribute(
        lambda o: datetime.combine(o.end_day, datetime.min.time(), UTC) + timedelta(hours=9)
    )
    episodes = factory.LazyFunction(list)
