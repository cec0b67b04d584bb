"""The audit log's hash chain, append-only guards and retention, on real Postgres."""

from __future__ import annotations

import itertools
import threading
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone

from audit.chain import GENESIS
from audit.models import AuditCheckpoint, AuditEntry
from audit.selectors import audit_chain_verify
from audit.services import audit_forget_person, audit_purge, audit_record
from core.pseudonyms import person_hash


def record(n: int, **kwargs: object) -> list[AuditEntry]:
    return [
        audit_record(
            action=str(kwargs.get("action", "connection.created")),
            actor="test",
            user_id=str(kwargs.get("user_id", f"user-{i}")),
            details={"i": i, "note": 'quoted "é" \\ \t'},
        )
        for i in range(n)
    ]


def run_sql(*statements: str) -> None:
    """Statements in one savepoint, so that a refused one rolls back only itself."""
    with transaction.atomic(), connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def superuser_sql(sql: str, params: list[Any]) -> None:
    """What someone who owns the table could do: switch the guard off, change, switch it on."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE health.audit_log DISABLE TRIGGER audit_log_append_only")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE health.audit_log ENABLE TRIGGER audit_log_append_only")


@pytest.mark.django_db
def test_every_entry_links_to_the_one_before_whoever_writes_it() -> None:
    record(3)
    with connection.cursor() as cursor:  # a writer that bypasses the ORM, as the webhook path
        cursor.execute(
            "INSERT INTO health.audit_log (occurred_at, action, actor, user_id, person_ref,"
            " provider, details, prev_hash, entry_hash)"
            " VALUES (now(), 'webhook.received', 'sql', '', 'abc', 'oura', '{\"n\": 1.50}',"
            " 'forged', 'forged')"
        )
    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
    assert "forged" not in {entries[-1].prev_hash, entries[-1].entry_hash}
    assert audit_chain_verify().verified == 4
    assert audit_chain_verify().ok


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_in_their_own_transactions_produce_one_unbroken_chain() -> None:
    threads, per_thread = 8, 25
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with transaction.atomic():
                    audit_record(
                        action="job.started", actor=f"thread-{t}", user_id=f"u{t}",
                        details={"i": i},
                    )  # fmt: skip
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    report = audit_chain_verify()
    assert report.ok, report
    assert report.verified == threads * per_thread
    seqs = list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, threads * per_thread + 1))


@pytest.mark.django_db
def test_altered_details_break_exactly_that_link() -> None:
    entries = record(5)
    superuser_sql(
        "UPDATE health.audit_log SET details = '{\"i\": 99}' WHERE id = %s", [entries[2].pk]
    )
    report = audit_chain_verify()
    assert (report.broken_seq, report.broken_id, report.verified) == (3, entries[2].pk, 2)
    assert "contents" in report.reason


@pytest.mark.django_db
def test_a_deleted_middle_entry_breaks_the_link_of_the_one_after_it() -> None:
    entries = record(5)
    superuser_sql("DELETE FROM health.audit_log WHERE id = %s", [entries[2].pk])
    report = audit_chain_verify()
    assert (report.broken_seq, report.broken_id, report.verified) == (4, entries[3].pk, 2)
    assert "3..3 are missing" in report.reason


@pytest.mark.django_db
def test_a_user_id_swapped_for_another_persons_is_caught() -> None:
    entries = record(3)
    superuser_sql("UPDATE health.audit_log SET user_id = 'mallory' WHERE id = %s", [entries[1].pk])
    report = audit_chain_verify()
    assert (report.broken_seq, report.verified) == (2, 1)


@pytest.mark.django_db
def test_verify_command_prints_the_count_or_exits_non_zero_at_the_broken_link() -> None:
    entries = record(4)
    out = StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert "4 entries" in out.getvalue()
    superuser_sql("UPDATE health.audit_log SET actor = 'x' WHERE id = %s", [entries[1].pk])
    with pytest.raises(CommandError, match=rf"seq 2 \(entry id {entries[1].pk}\)"):
        call_command("verify_audit_chain")


@pytest.mark.django_db
def test_update_delete_and_truncate_are_refused() -> None:
    entry = audit_record(action="connection.created", actor="test", user_id="frank")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(actor="someone else")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        # Blanking user_id needs the allowance, and then may change nothing else.
        AuditEntry.objects.filter(pk=entry.pk).update(user_id="")
    for table in ("audit_log", "audit_checkpoint"):
        # Test databases allow TRUNCATE for Django's flush (core/postgres/base.py).
        off = "SET LOCAL health.audit_allow_truncate = 'off'"
        with pytest.raises(DatabaseError, match="TRUNCATE refused"):
            run_sql(off, f"TRUNCATE health.{table}")
    allowance = "SET LOCAL health.audit_purge = 'on'"
    with pytest.raises(DatabaseError, match="append-only"):
        run_sql(allowance, "UPDATE health.audit_log SET user_id = '', actor = 'x'")
    assert AuditEntry.objects.get(pk=entry.pk).actor == "test"


@pytest.mark.django_db
def test_entries_name_people_by_keyed_hash_and_keep_the_plain_id_only_where_needed() -> None:
    kept = audit_record(action="connection.created", actor="test", user_id="alice")
    hashed = audit_record(action="job.started", actor="test", user_id="alice")
    nobody = audit_record(action="upkeep.run", actor="scheduler")
    kept.refresh_from_db()
    hashed.refresh_from_db()
    nobody.refresh_from_db()
    assert (kept.user_id, kept.person_ref) == ("alice", person_hash("alice"))
    assert (hashed.user_id, hashed.person_ref) == ("", person_hash("alice"))
    assert (nobody.user_id, nobody.person_ref) == ("", "")
    with pytest.raises(DatabaseError, match="person_ref"), transaction.atomic():
        AuditEntry.objects.create(action="raw.accessed", actor="x", user_id="bob")


@pytest.mark.django_db
def test_forgetting_a_person_blanks_their_user_id_and_the_chain_still_verifies() -> None:
    record(2, user_id="alice")
    record(1, user_id="bob")
    assert audit_forget_person(user_id="alice") == 2
    assert not AuditEntry.objects.filter(user_id="alice").exists()
    assert AuditEntry.objects.filter(person_ref=person_hash("alice")).count() == 2
    assert AuditEntry.objects.filter(user_id="bob").count() == 1
    assert audit_chain_verify().verified == 3


def backdate(entries: list[AuditEntry], days: int) -> None:
    when = timezone.now() - timedelta(days=days)
    superuser_sql(
        "UPDATE health.audit_log SET occurred_at = %s WHERE id = ANY(%s)",
        [when, [e.pk for e in entries]],
    )
    # Rehash what the backdating changed, as if the entries had been written then.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE health.audit_log DISABLE TRIGGER audit_log_append_only")
        cursor.execute("SELECT id FROM health.audit_log ORDER BY seq")
        ids = [row[0] for row in cursor.fetchall()]
        prev = GENESIS
        for pk in ids:
            cursor.execute(
                "UPDATE health.audit_log AS a SET prev_hash = %s WHERE id = %s", [prev, pk]
            )
            cursor.execute(
                "UPDATE health.audit_log AS a SET entry_hash = health.audit_entry_hash(a)"
                " WHERE id = %s RETURNING entry_hash",
                [pk],
            )
            prev = cursor.fetchone()[0]
        cursor.execute("ALTER TABLE health.audit_log ENABLE TRIGGER audit_log_append_only")


@pytest.mark.django_db
def test_purge_removes_old_entries_and_the_chain_verifies_from_the_checkpoint() -> None:
    old = record(5)
    fresh = record(2)
    backdate(old, days=500)
    assert audit_chain_verify().verified == 7
    assert audit_purge(older_than_days=400, batch=2) == 5  # three batches
    assert set(AuditEntry.objects.values_list("pk", flat=True)) == {e.pk for e in fresh}
    checkpoint = AuditCheckpoint.objects.order_by("-next_seq").first()
    assert checkpoint is not None
    assert checkpoint.next_seq == 6
    assert audit_chain_verify().verified == 2
    record(1)
    assert audit_chain_verify().verified == 3


@pytest.mark.django_db
def test_purging_every_entry_leaves_a_checkpoint_the_next_entry_chains_from() -> None:
    backdate(record(3), days=500)
    assert audit_purge(older_than_days=400) == 3
    [entry] = record(1)
    entry.refresh_from_db()
    assert entry.seq == 4
    assert audit_chain_verify().verified == 1


@pytest.mark.django_db
def test_an_application_role_can_insert_and_select_but_not_rewrite_or_unguard() -> None:
    role = f"audit_app_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )
        if not cursor.fetchone()[0]:
            pytest.skip("the test database user cannot create roles")
        # All inside the test's transaction: rolled back, role included.
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")
        cursor.execute(f"GRANT USAGE ON SCHEMA health TO {role}")
        cursor.execute(f"GRANT SELECT, INSERT ON health.audit_log TO {role}")
        cursor.execute(f"GRANT SELECT ON health.audit_checkpoint TO {role}")
        cursor.execute(f"GRANT USAGE ON SEQUENCE health.audit_log_id_seq TO {role}")
        cursor.execute(f"SET ROLE {role}")
        try:
            audit_record(action="connection.created", actor="app", user_id="erin")
            assert AuditEntry.objects.filter(user_id="erin").count() == 1
            for sql in (
                "UPDATE health.audit_log SET actor = 'x'",
                "DELETE FROM health.audit_log",
                "TRUNCATE health.audit_log",
                "ALTER TABLE health.audit_log DISABLE TRIGGER audit_log_append_only",
                "DROP TRIGGER audit_log_chain ON health.audit_log",
                "SELECT health.audit_purge(now(), 10)",
            ):
                with pytest.raises(DatabaseError, match=r"permission denied|must be owner"):
                    run_sql(sql)
        finally:
            cursor.execute("RESET ROLE")
    assert audit_chain_verify().verified == 1
