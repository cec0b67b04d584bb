"""The canonical form of an audit entry and its hash, rebuilt independently of the database.

health.audit_entry_hash (audit migration 0002) hashes jsonb's text of ten fields; this module
rebuilds the same text from the stored values so that verification does not trust the
database's own function. jsonb prints object keys ordered by length, then bytes, separated
by ", " and ": ", and strings escaped as json.dumps(ensure_ascii=False) escapes them.
`details` is taken as the database prints it (`details::text`), so numbers and nested keys
need no reimplementation. Timestamps are UTC with microseconds and a Z.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS = "0" * 64
_FIELDS = (
    "id", "seq", "occurred_at", "action", "actor", "person_ref", "provider", "event_id",
    "details", "prev_hash",
)  # fmt: skip
_KEY_ORDER = sorted(_FIELDS, key=lambda key: (len(key.encode()), key.encode()))


@dataclass(frozen=True)
class ChainedEntry:
    id: int
    seq: int
    occurred_at: datetime
    action: str
    actor: str
    person_ref: str
    provider: str
    event_id: uuid.UUID | None
    details_json: str  # details::text, as Postgres prints the jsonb
    prev_hash: str
    entry_hash: str
    user_id: str


def canonical(entry: ChainedEntry) -> str:
    def text(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    values = {
        "id": str(entry.id),
        "seq": str(entry.seq),
        "occurred_at": text(entry.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        "action": text(entry.action),
        "actor": text(entry.actor),
        "person_ref": text(entry.person_ref),
        "provider": text(entry.provider),
        "event_id": text(str(entry.event_id)) if entry.event_id is not None else "null",
        "details": entry.details_json,
        "prev_hash": text(entry.prev_hash),
    }
    return "{" + ", ".join(f"{text(key)}: {values[key]}" for key in _KEY_ORDER) + "}"


def entry_hash(entry: ChainedEntry) -> str:
    return hashlib.sha256(canonical(entry).encode()).hexdigest()
