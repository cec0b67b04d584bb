"""AuditEntry now belongs to the audit app (audit 0001 takes over the same table). Removed
from backoffice's state only: the table health.audit_log, its rows and its append-only trigger
stay exactly as they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("backoffice", "0003_audit_action_upkeep_run"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[migrations.DeleteModel(name="AuditEntry")],
        ),
    ]
