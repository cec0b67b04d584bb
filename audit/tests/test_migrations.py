"""The move out of backoffice and the hash chain keep every existing audit row."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.models import AuditEntry
from audit.selectors import audit_chain_verify
from core.pseudonyms import person_hash


@pytest.mark.django_db(transaction=True)
def test_existing_rows_survive_the_move_and_are_chained_in_id_order() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("audit", None)])  # back to the audit log living in backoffice
    executor.loader.build_graph()
    applied = executor.loader.applied_migrations
    assert ("backoffice", "0003_audit_action_upkeep_run") in applied
    assert ("backoffice", "0004_audit_entry_moves_to_audit") not in applied
    with connection.cursor() as cursor:
        for user_id, action in [("alice", "webhook.received"), ("", "upkeep.run"),
                                ("bob", "connection.created")]:  # fmt: skip
            cursor.execute(
                "INSERT INTO health.audit_log (occurred_at, action, actor, user_id, provider,"
                " details) VALUES (now(), %s, 'old', %s, 'oura', '{\"n\": 1}') RETURNING id",
                [action, user_id],
            )
        cursor.execute("SELECT id FROM health.audit_log ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    rows = list(AuditEntry.objects.order_by("id"))
    assert [r.pk for r in rows] == ids
    assert [r.seq for r in rows] == [1, 2, 3]
    assert [(r.user_id, r.person_ref) for r in rows] == [
        ("alice", person_hash("alice")), ("", ""), ("bob", person_hash("bob")),
    ]  # fmt: skip
    assert audit_chain_verify().verified == 3
    AuditEntry.objects.create(action="upkeep.run", actor="new")
    assert audit_chain_verify().verified == 4


@pytest.mark.django_db
def test_the_audit_log_has_only_the_indexes_its_model_declares() -> None:
    """Every accepted webhook writes an audit entry into each of these: none may be stale."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes"
            " WHERE schemaname = 'health' AND tablename = 'audit_log'"
        )
        names = {name for (name,) in cursor.fetchall()}
    declared = {index.name for index in AuditEntry._meta.indexes}
    assert names == declared | {
        "audit_log_pkey",  # id
        "audit_log_seq_key",  # seq, unique
        "audit_log_occurred_at_ad70ff09",  # occurred_at, db_index (purge, admin order)
    }
