"""Typed tables for the remaining Oura document types (issue #18).

Daily: stress, SpO2, resilience, cardiovascular age, VO2 max (one row per person and day,
their unique (user_id, day) constraints INCLUDE the columns the daily page reads). Interval:
sleep time, tags (enhanced and deprecated, one table), rest mode periods (keyed by Oura's id).
Only new tables: nothing existing is locked or rewritten. Migration 0005_heartrate stacks on
this one.
"""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("normalized", "0003_daily_read_covering_indexes")]

    operations = [
        migrations.CreateModel(
            name="DailyCardiovascularAge",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64)),
                ("oura_id", models.CharField(help_text="Oura's document id", max_length=128)),
                ("raw_object_key", models.CharField(blank=True, max_length=512)),
                ("normalizer_version", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                ("day", models.DateField()),
                ("vascular_age", models.SmallIntegerField(help_text="years", null=True)),
                (
                    "pulse_wave_velocity",
                    models.FloatField(help_text="metres per second", null=True),
                ),
            ],
            options={
                "db_table": 'health"."oura_daily_cardiovascular_age',
                "indexes": [
                    models.Index(fields=["user_id", "oura_id"], name="daily_cv_age_oura_id_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user_id", "day"),
                        include=("vascular_age", "pulse_wave_velocity"),
                        name="daily_cv_age_user_day_uniq",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="DailyResilience",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64)),
                ("oura_id", models.CharField(help_text="Oura's document id", max_length=128)),
                ("raw_object_key", models.CharField(blank=True, max_length=512)),
                ("normalizer_version", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                ("day", models.DateField()),
                ("level", models.CharField(max_length=20)),
                ("sleep_recovery", models.FloatField(null=True)),
                ("daytime_recovery", models.FloatField(null=True)),
                ("stress", models.FloatField(null=True)),
            ],
            options={
                "db_table": 'health"."oura_daily_resilience',
                "indexes": [
                    models.Index(fields=["user_id", "oura_id"], name="daily_resilience_oura_id_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user_id", "day"),
                        include=("level", "sleep_recovery", "daytime_recovery", "stress"),
                        name="daily_resilience_user_day_uniq",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="DailySpO2",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64)),
                ("oura_id", models.CharField(help_text="Oura's document id", max_length=128)),
                ("raw_object_key", models.CharField(blank=True, max_length=512)),
                ("normalizer_version", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                ("day", models.DateField()),
                (
                    "spo2_percentage",
                    models.FloatField(help_text="the night's average, percent", null=True),
                ),
                ("breathing_disturbance_index", models.IntegerField(null=True)),
            ],
            options={
                "db_table": 'health"."oura_daily_spo2',
                "indexes": [
                    models.Index(fields=["user_id", "oura_id"], name="daily_spo2_oura_id_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user_id", "day"),
                        include=("spo2_percentage", "breathing_disturbance_index"),
                        name="daily_spo2_user_day_uniq",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="DailyStress",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64)),
                ("oura_id", models.CharField(help_text="Oura's document id", max_length=128)),
                ("raw_object_key", models.CharField(blank=True, max_length=512)),
                ("normalizer_version", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                ("day", models.DateField()),
                ("stress_high", models.IntegerField(help_text="seconds of high stress", null=True)),
                (
                    "recovery_high",
                    models.IntegerField(help_text="seconds of high recovery", null=True),
                ),
                ("day_summary", models.CharField(blank=True, max_length=20)),
            ],
            options={
                "db_table": 'health"."oura_daily_stress',
                "indexes": [
                    models.Index(fields=["user_id", "oura_id"], name="daily_stress_oura_id_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user_id", "day"),
                        include=("stress_high", "recovery_high", "day_summary"),
                        name="daily_stress_user_day_uniq",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="RestModePeriod",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64)),
                ("oura_id", models.CharField(help_text="Oura's document id", max_length=128)),
                ("raw_object_key", models.CharField(blank=True, max_length=512)),
                ("normalizer_version", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                ("day", models.DateField(help_text="Oura's start_day")),
                ("end_day", models.DateField(null=True)),
                ("start_time", models.DateTimeField(null=True)),
                ("end_time", models.DateTimeField(null=True)),
                (
                    "episodes",
                    models.JSONField(
                        default=list, help_text="[{tags, timestamp}] as Oura sends them"
                    ),
                ),
            ],
            options={
                "db_table": 'health"."oura_rest_mode_periods',
                "indexes": [
                    models.Index(fields=["user_id", "day", "id"], name="rest_mode_period_day_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user_id", "oura_id"), name="rest_mode_period_uniq"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SleepTime",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64)),
                ("oura_id", models.CharField(help_text="Oura's document id", max_length=128)),
                ("raw_object_key", models.CharField(blank=True, max_length=512)),
                ("normalizer_version", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                ("day", models.DateField()),
                ("optimal_bedtime", models.JSONField(null=True)),
                ("recommendation", models.CharField(blank=True, max_length=40)),
                ("status", models.CharField(blank=True, max_length=40)),
            ],
            options={
                "db_table": 'health"."oura_sleep_times',
                "indexes": [
                    models.Index(fields=["user_id", "day", "id"], name="sleep_time_day_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("user_id", "oura_id"), name="sleep_time_uniq")
                ],
            },
        ),
        migrations.CreateModel(
            name="Tag",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64)),
                ("oura_id", models.CharField(help_text="Oura's document id", max_length=128)),
                ("raw_object_key", models.CharField(blank=True, max_length=512)),
                ("normalizer_version", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "kind",
                    models.CharField(
                        choices=[("enhanced_tag", "Enhanced Tag"), ("tag", "Tag")], max_length=12
                    ),
                ),
                ("day", models.DateField()),
                ("start", models.DateTimeField()),
                ("end", models.DateTimeField(null=True)),
                ("end_day", models.DateField(null=True)),
                ("tag_type_code", models.CharField(blank=True, max_length=100)),
                ("custom_name", models.CharField(blank=True, max_length=200)),
                (
                    "comment",
                    models.CharField(
                        blank=True,
                        help_text="enhanced tag comment, or a tag's text",
                        max_length=4000,
                    ),
                ),
                ("tags", models.JSONField(default=list, help_text="a deprecated tag's tag codes")),
            ],
            options={
                "db_table": 'health"."oura_tags',
                "indexes": [models.Index(fields=["user_id", "start", "id"], name="tag_start_idx")],
                "constraints": [
                    models.UniqueConstraint(fields=("user_id", "kind", "oura_id"), name="tag_uniq")
                ],
            },
        ),
        migrations.CreateModel(
            name="VO2Max",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64)),
                ("oura_id", models.CharField(help_text="Oura's document id", max_length=128)),
                ("raw_object_key", models.CharField(blank=True, max_length=512)),
                ("normalizer_version", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("source_observed_at", models.DateTimeField(blank=True, null=True)),
                ("day", models.DateField()),
                ("vo2_max", models.SmallIntegerField(help_text="ml/kg/min")),
                ("timestamp", models.DateTimeField(null=True)),
            ],
            options={
                "db_table": 'health"."oura_vo2_max',
                "indexes": [
                    models.Index(fields=["user_id", "oura_id"], name="vo2_max_oura_id_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("user_id", "day"),
                        include=("vo2_max",),
                        name="vo2_max_user_day_uniq",
                    )
                ],
            },
        ),
    ]
