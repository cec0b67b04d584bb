"""Reads of the audit log: walking the hash chain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection

from audit.chain import GENESIS, ChainedEntry, entry_hash
from audit.models import AuditCheckpoint
from core.pseudonyms import person_hash

_BATCH = 2_000
_SELECT = """
SELECT id, seq, occurred_at, action, actor, person_ref, provider, event_id, details::text,
       prev_hash, entry_hash, user_id
  FROM health.audit_log WHERE seq > %s ORDER BY seq LIMIT %s
"""


@dataclass(frozen=True)
class ChainReport:
    verified: int
    broken_seq: int | None = None  # the entry whose link to its predecessor does not hold
    broken_id: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def _entries() -> Iterator[ChainedEntry]:
    after = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_SELECT, [after, _BATCH])
            rows = cursor.fetchall()
        for row in rows:
            yield ChainedEntry(*row)
        if len(rows) < _BATCH:
            return
        after = rows[-1][1]


def audit_chain_verify() -> ChainReport:
    """Walk the chain from its start (or from the newest purge checkpoint) and report the first
    entry whose link does not hold: a missing entry before it, a prev_hash that is not its
    predecessor's hash, a hash that does not match its contents, or a user_id that is not the
    person its person_ref names."""
    checkpoint = AuditCheckpoint.objects.order_by("-next_seq").first()
    expected_seq, expected_prev = (
        (checkpoint.next_seq, checkpoint.prev_hash) if checkpoint else (1, GENESIS)
    )
    verified = 0
    for entry in _entries():
        reason = ""
        if entry.seq < expected_seq:
            reason = f"seq {entry.seq} precedes the chain's start or repeats"
        elif entry.seq != expected_seq:
            reason = f"entries {expected_seq}..{entry.seq - 1} are missing before this one"
        elif entry.prev_hash != expected_prev:
            reason = "prev_hash is not the previous entry's hash"
        elif entry_hash(entry) != entry.entry_hash:
            reason = "contents do not match the entry's hash"
        elif entry.user_id and person_hash(entry.user_id) != entry.person_ref:
            reason = "user_id is not the person named by person_ref"
        if reason:
            return ChainReport(verified, broken_seq=entry.seq, broken_id=entry.id, reason=reason)
        verified += 1
        expected_seq, expected_prev = entry.seq + 1, entry.entry_hash
    return ChainReport(verified)
