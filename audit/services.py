"""Writes of the audit log. Every app records what happened to someone's data here.

How the chain stays one chain (audit migration 0002, health.audit_log_chain): the database, not
this module, links each new row. A BEFORE INSERT trigger takes a transaction-scoped advisory
lock (CHAIN_LOCK_KEY), reads the newest entry and hashes the new one onto it. Doing it in the
database means every writer is chained, the webhook path's single SQL statement included, and
no writer can hand in a hash of its choosing.

The lock is held until the writer's transaction ends: the next writer must see this row
committed to link to it, and a rolled-back entry must take its place in the chain with it.
So the cost is one serialized stretch per audited transaction, from its audit INSERT to its
COMMIT. That is why the lock is taken by the INSERT itself (not at the start of the caller's
transaction), why callers should audit as the last write before their commit, and why the
webhook path is one autocommit statement whose audit row comes last: there the lock covers the
tail of one statement and its commit (a WAL flush), nothing more. A separate sequence would
not shorten it: the next writer needs this row's hash, not only its number. If the lock ever
limits webhook throughput, the way out is to seal the chain after commit (a single sealer
hashing committed rows in commit order), at the price of a short window of unsealed rows.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEntry
from core.pseudonyms import person_hash

CHAIN_LOCK_KEY = 7_262_747_301  # the same constant as in audit/migrations/0002_hash_chain.py
PURGE_BATCH = 5_000


def audit_record(
    *,
    action: str,
    actor: str,
    user_id: str = "",
    event_id: uuid.UUID | str | None = None,
    provider: str = "oura",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry. `details` holds ids, counts and reasons, never payload or tokens.

    The person (if any) is always named by person_ref; the plain user_id is kept only for
    actions in AuditEntry.KEEPS_USER_ID. Call it as the last write of your transaction: the
    chain lock is held from here to your commit.
    """
    return AuditEntry.objects.create(
        action=action,
        actor=actor,
        user_id=user_id if action in AuditEntry.KEEPS_USER_ID else "",
        person_ref=person_hash(user_id) if user_id else "",
        provider=provider,
        event_id=uuid.UUID(str(event_id)) if event_id else None,
        details=details or {},
    )


def audit_purge(*, older_than_days: int, batch: int = PURGE_BATCH) -> int:
    """Delete the oldest entries older than `older_than_days`, keeping the chain verifiable.

    Each batch is one transaction of health.audit_purge (the only deleter the database
    allows): it removes a prefix of the chain and writes an audit_checkpoint with the seq and
    prev_hash the first kept entry must show, so verification starts there. Entries written
    out of time order stay until everything before them is old enough. Batches keep the chain
    lock (which every audited write waits on) short. Returns the number of entries removed.
    """
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    purged = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT health.audit_purge(%s, %s)", [cutoff, batch])
            row = cursor.fetchone()
        removed = int(row[0]) if row else 0
        purged += removed
        if removed < batch:
            return purged


def audit_forget_person(*, user_id: str) -> int:
    """Blank `user_id` in every entry that names this person (for erasure).

    The entries stay, with their person_ref; the hash covers person_ref, not user_id, so the
    chain verifies as before. Returns the number of entries changed.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT health.audit_forget_person(%s)", [user_id])
        row = cursor.fetchone()
    return int(row[0]) if row else 0
