"""The audit log becomes tamper-evident, and names people by a keyed hash (issue #14).

Every entry gets `seq` (its place in the chain), `prev_hash` and `entry_hash` = SHA-256 of a
canonical JSON form (audit/chain.py explains it; health.audit_entry_hash computes it), and
`person_ref` = core.pseudonyms.person_hash(user_id). Existing rows keep every value they had;
they get their person_ref and are chained in id order. From then on a BEFORE INSERT trigger
chains each new row, whoever writes it (the ORM, or the webhook path's single SQL statement).

Also: TRUNCATE is refused (as UPDATE and DELETE already were), except on throw-away test
databases (core/postgres/base.py); and two SECURITY DEFINER functions are the only ways to
remove anything: purging the oldest entries (leaving a checkpoint the chain resumes from) and
blanking an erased person's user_id (which the hash does not cover). See
docs/phase-3/privacy.md, "The audit log".
"""

import django.utils.timezone
from django.db import migrations, models

# pg_advisory_xact_lock key serializing appends (and purges): any constant, the same one as in
# audit/services.py's CHAIN_LOCK_KEY.
CHAIN_LOCK_KEY = 7_262_747_301
GENESIS = "0" * 64


def _fill_person_refs(apps, schema_editor):
    from core.pseudonyms import person_hash

    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT user_id FROM health.audit_log WHERE user_id <> ''")
        for (user_id,) in cursor.fetchall():
            cursor.execute(
                "UPDATE health.audit_log SET person_ref = %s WHERE user_id = %s",
                [person_hash(user_id), user_id],
            )


HASH_SQL = f"""
-- The canonical form, as audit/chain.py rebuilds it: jsonb's text output (keys ordered by
-- length, then bytes; ", " and ": " between them) of these ten fields. user_id is not in it:
-- an erasure may blank user_id, the person_ref stays and the chain still verifies.
CREATE OR REPLACE FUNCTION health.audit_entry_hash(e health.audit_log) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT encode(sha256(convert_to(jsonb_build_object(
        'id', e.id,
        'seq', e.seq,
        'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'action', e.action,
        'actor', e.actor,
        'person_ref', e.person_ref,
        'provider', e.provider,
        'event_id', e.event_id::text,
        'details', e.details,
        'prev_hash', e.prev_hash
    )::text, 'UTF8')), 'hex')
$$;

-- Existing rows, chained in id order (the append-only trigger is off for this).
DO $$
DECLARE
    r health.audit_log;
    prev text := '{GENESIS}';
    n bigint := 0;
BEGIN
    FOR r IN SELECT * FROM health.audit_log ORDER BY id LOOP
        n := n + 1;
        r.seq := n;
        r.prev_hash := prev;
        prev := health.audit_entry_hash(r);
        UPDATE health.audit_log SET seq = n, prev_hash = r.prev_hash, entry_hash = prev
         WHERE id = r.id;
    END LOOP;
END $$;
"""  # noqa: S608 - interpolates only this module's constants

CHAIN_SQL = f"""
-- Each new row: take the chain lock, read the chain's head, link to it. The lock is held to
-- the end of the writer's transaction, so the next writer reads this row once it is
-- committed (READ COMMITTED takes a fresh snapshot per statement; a REPEATABLE READ writer
-- would read a stale head and fork the chain, so it is refused). Why a lock in the writer's
-- transaction and what it costs: audit/services.py.
CREATE OR REPLACE FUNCTION health.audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head_seq bigint;
    head_hash text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'health.audit_log is appended under READ COMMITTED only';
    END IF;
    IF NEW.user_id <> '' AND NEW.person_ref = '' THEN
        RAISE EXCEPTION 'an audit entry naming a person needs its person_ref';
    END IF;
    PERFORM pg_advisory_xact_lock({CHAIN_LOCK_KEY});
    SELECT seq, entry_hash INTO head_seq, head_hash
      FROM health.audit_log ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        SELECT next_seq - 1, prev_hash INTO head_seq, head_hash
          FROM health.audit_checkpoint ORDER BY next_seq DESC LIMIT 1;
        IF NOT FOUND THEN
            head_seq := 0;
            head_hash := '{GENESIS}';
        END IF;
    END IF;
    NEW.seq := head_seq + 1;
    NEW.prev_hash := head_hash;
    NEW.entry_hash := health.audit_entry_hash(NEW);
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON health.audit_log
    FOR EACH ROW EXECUTE FUNCTION health.audit_log_chain();
ALTER TABLE health.audit_log ALTER COLUMN seq SET NOT NULL;
"""  # noqa: S608 - interpolates only this module's constants

GUARD_SQL = """
-- Refuses UPDATE, DELETE and TRUNCATE, with two narrow allowances. health.audit_purge = 'on'
-- (set by the functions below, for one statement) lets a DELETE through, and an UPDATE that
-- only blanks user_id. health.audit_allow_truncate = 'on' is set on throw-away test databases
-- only (core/postgres/base.py), where Django's flush empties every table between tests.
CREATE OR REPLACE FUNCTION health.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        IF current_setting('health.audit_allow_truncate', true) = 'on' THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'health.% is append-only: TRUNCATE refused', TG_TABLE_NAME;
    END IF;
    IF TG_TABLE_NAME = 'audit_log' AND current_setting('health.audit_purge', true) = 'on' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        IF NEW.user_id = '' AND to_jsonb(NEW) - 'user_id' = to_jsonb(OLD) - 'user_id' THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'health.% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON health.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION health.audit_log_append_only();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON health.audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION health.audit_log_append_only();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON health.audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION health.audit_log_append_only();
"""

MAINTENANCE_SQL = f"""
-- The only deleter: removes the oldest entries (at most max_rows, all older than cutoff, a
-- prefix of the chain) and records where the chain resumes, in one transaction.
-- SECURITY DEFINER: runs as the table's owner, so an application role that may only INSERT
-- and SELECT can be granted EXECUTE on this without being able to delete anything else.
CREATE OR REPLACE FUNCTION health.audit_purge(cutoff timestamptz, max_rows integer)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first_seq bigint;
    keep_from bigint;
    last_hash text;
    purged bigint;
BEGIN
    PERFORM pg_advisory_xact_lock({CHAIN_LOCK_KEY});
    SELECT min(seq) INTO first_seq FROM health.audit_log;
    IF first_seq IS NULL THEN
        RETURN 0;
    END IF;
    SELECT min(seq) INTO keep_from FROM health.audit_log WHERE occurred_at >= cutoff;
    IF keep_from IS NULL THEN
        SELECT max(seq) + 1 INTO keep_from FROM health.audit_log;
    END IF;
    keep_from := least(keep_from, first_seq + max_rows);
    IF keep_from <= first_seq THEN
        RETURN 0;
    END IF;
    SELECT entry_hash INTO last_hash FROM health.audit_log WHERE seq = keep_from - 1;
    PERFORM set_config('health.audit_purge', 'on', true);
    DELETE FROM health.audit_log WHERE seq < keep_from;
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('health.audit_purge', 'off', true);
    INSERT INTO health.audit_checkpoint (created_at, next_seq, prev_hash, purged)
    VALUES (now(), keep_from, last_hash, purged);
    RETURN purged;
END;
$$;

-- Erasure: blank one person's plain id; person_ref (and so the chain) stays as it was.
CREATE OR REPLACE FUNCTION health.audit_forget_person(p_user_id text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    forgotten bigint;
BEGIN
    IF p_user_id = '' THEN
        RETURN 0;
    END IF;
    PERFORM set_config('health.audit_purge', 'on', true);
    UPDATE health.audit_log SET user_id = '' WHERE user_id = p_user_id;
    GET DIAGNOSTICS forgotten = ROW_COUNT;
    PERFORM set_config('health.audit_purge', 'off', true);
    RETURN forgotten;
END;
$$;
REVOKE EXECUTE ON FUNCTION health.audit_purge(timestamptz, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION health.audit_forget_person(text) FROM PUBLIC;
"""  # noqa: S608 - interpolates only this module's constants

REVERSE_SQL = """
DROP FUNCTION IF EXISTS health.audit_forget_person(text);
DROP FUNCTION IF EXISTS health.audit_purge(timestamptz, integer);
DROP TRIGGER IF EXISTS audit_log_no_truncate ON health.audit_log;
DROP TRIGGER IF EXISTS audit_log_chain ON health.audit_log;
DROP FUNCTION IF EXISTS health.audit_log_chain();
DROP FUNCTION IF EXISTS health.audit_entry_hash(health.audit_log);
CREATE OR REPLACE FUNCTION health.audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'health.audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("next_seq", models.BigIntegerField(unique=True)),
                ("prev_hash", models.CharField(max_length=64)),
                ("purged", models.BigIntegerField()),
            ],
            options={
                "db_table": 'health"."audit_checkpoint',
                "ordering": ["-next_seq"],
            },
        ),
        migrations.AddField(
            model_name="auditentry",
            name="entry_hash",
            field=models.CharField(default="", editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="person_ref",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="prev_hash",
            field=models.CharField(default="", editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="seq",
            field=models.BigIntegerField(editable=False, null=True, unique=True),
        ),
        migrations.AddIndex(
            model_name="auditentry",
            index=models.Index(fields=["person_ref"], name="audit_person_idx"),
        ),
        migrations.RunSQL(
            "ALTER TABLE health.audit_log DISABLE TRIGGER audit_log_append_only",
            reverse_sql="ALTER TABLE health.audit_log ENABLE TRIGGER audit_log_append_only",
        ),
        migrations.RunPython(_fill_person_refs, migrations.RunPython.noop),
        migrations.RunSQL(HASH_SQL, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(
            "ALTER TABLE health.audit_log ENABLE TRIGGER audit_log_append_only",
            reverse_sql="ALTER TABLE health.audit_log DISABLE TRIGGER audit_log_append_only",
        ),
        migrations.RunSQL(CHAIN_SQL + GUARD_SQL + MAINTENANCE_SQL, reverse_sql=REVERSE_SQL),
    ]
