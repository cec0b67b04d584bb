"""The daily page's read model (issue #19): normalized/daily_entries.py says why and how.

- The table, its primary key (user_id, day) INCLUDING the entry, so a page is an index-only
  scan; the autovacuum settings of migration 0006 keep its visibility map current.
- The functions and triggers, installed with the SQL the code of this migration's day
  generates (the installed function is compared with the code's in a test: a later change to
  the page's shape needs a migration that installs and rebuilds again).
- The entries of the rows already stored, one person per transaction under their lock,
  after the triggers exist: a write during the rebuild refreshes its own days, and the
  rebuild of that person waits for it. Not atomic, so the rebuild of a large install holds
  no lock for its whole run.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

AUTOVACUUM = (
    "autovacuum_vacuum_insert_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0, "
    "autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0.01"
)


def install(apps: Any, schema_editor: Any) -> None:
    from normalized import daily_entries

    daily_entries.install()


def uninstall(apps: Any, schema_editor: Any) -> None:
    from normalized import daily_entries

    with schema_editor.connection.cursor() as cursor:
        for statement in daily_entries.uninstall_sql():
            cursor.execute(statement)


def rebuild(apps: Any, schema_editor: Any) -> None:
    from normalized import daily_entries

    daily_entries.rebuild()


class Migration(migrations.Migration):
    atomic = False  # the rebuild commits person by person

    dependencies = [("normalized", "0006_cold_read_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=(
                        "CREATE TABLE health.oura_daily_entries (user_id varchar(64) NOT NULL, "
                        "day date NOT NULL, entry text NULL, "
                        "CONSTRAINT oura_daily_entries_pkey PRIMARY KEY (user_id, day) "
                        f"INCLUDE (entry)) WITH ({AUTOVACUUM})"
                    ),
                    reverse_sql="DROP TABLE health.oura_daily_entries",
                )
            ],
            state_operations=[
                migrations.CreateModel(
                    name="DailyEntry",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "user_id",
                                "day",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("user_id", models.CharField(max_length=64)),
                        ("day", models.DateField()),
                        ("entry", models.TextField(null=True)),
                    ],
                    options={"db_table": 'health"."oura_daily_entries'},
                )
            ],
        ),
        migrations.RunPython(install, uninstall, atomic=True),
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
