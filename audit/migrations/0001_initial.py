"""The audit log moves from backoffice to this app (issue #14), table, rows and triggers
untouched: this migration only tells Django's state that `audit.AuditEntry` owns the existing
table health.audit_log (created by backoffice 0001-0003, whose trigger stays). backoffice 0004
removes the model from backoffice's state, again without touching the database."""

import django.utils.timezone
from django.db import migrations, models

ACTIONS = [
    ("webhook.received", "Webhook Received"),
    ("webhook.orphaned", "Webhook Orphaned"),
    ("webhook.dropped", "Webhook Dropped"),
    ("connection.created", "Connection Created"),
    ("connection.revoked", "Connection Revoked"),
    ("connection.needs_reauth", "Connection Needs Reauth"),
    ("job.started", "Job Started"),
    ("job.finished", "Job Finished"),
    ("job.cancelled", "Job Cancelled"),
    ("raw.accessed", "Raw Accessed"),
    ("user.erased", "User Erased"),
    ("retention.purged", "Retention Purged"),
    ("dead_letter.replayed", "Dead Letter Replayed"),
    ("upkeep.run", "Upkeep Run"),
]


def _move_content_type(apps, schema_editor):
    """Keep the content type (and with it permissions and admin history) of the moved model."""
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label="audit", model="auditentry").exists():
        content_type.objects.filter(app_label="backoffice", model="auditentry").update(
            app_label="audit"
        )


def _restore_content_type(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label="backoffice", model="auditentry").exists():
        content_type.objects.filter(app_label="audit", model="auditentry").update(
            app_label="backoffice"
        )


class Migration(migrations.Migration):
    initial = True

    # The table exists once backoffice's migrations up to 0003 have run.
    dependencies = [
        ("core", "0001_health_schema"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("backoffice", "0003_audit_action_upkeep_run"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="AuditEntry",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "occurred_at",
                            models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                        ),
                        ("action", models.CharField(choices=ACTIONS, max_length=40)),
                        (
                            "actor",
                            models.CharField(
                                help_text="system component, API key or staff user",
                                max_length=150,
                            ),
                        ),
                        ("user_id", models.CharField(blank=True, max_length=64)),
                        ("provider", models.CharField(default="oura", max_length=20)),
                        ("event_id", models.UUIDField(blank=True, null=True)),
                        ("details", models.JSONField(blank=True, default=dict)),
                    ],
                    options={
                        "verbose_name_plural": "audit entries",
                        "db_table": 'health"."audit_log',
                        "ordering": ["-occurred_at", "-id"],
                        "indexes": [models.Index(fields=["user_id"], name="audit_user_idx")],
                    },
                ),
            ],
        ),
        migrations.RunPython(_move_content_type, _restore_content_type),
    ]
