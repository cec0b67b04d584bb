from django.db import migrations


class Migration(migrations.Migration):
    """Every project table lives in schema `health`; it must exist before any of them."""

    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.RunSQL(
            "CREATE SCHEMA IF NOT EXISTS health",
            reverse_sql=migrations.RunSQL.noop,
        )
    ]
