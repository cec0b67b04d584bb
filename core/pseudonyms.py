"""Keyed hashes that name a person without naming them.

Logs, traces, audit entries that outlive the person, and erasure tombstones need to say "the
same person as before" without carrying our user id or the Oura account id. An HMAC with a
key of our own (PERSON_HASH_KEY) does that: stable across processes and restarts, useless to
whoever reads the log without the key, and not reversible by trying every id.

The key must stay the same for the life of the data: erasure tombstones are matched by these
hashes, so a new key would let an erased Oura account's deliveries in again.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

from django.conf import settings

Namespace = Literal["user", "oura"]


def person_hash(value: str, *, namespace: Namespace = "user") -> str:
    """32 hex characters (128 bits) for `value`; the namespace keeps a user id and an Oura id
    that happen to be equal from hashing alike."""
    key = settings.PERSON_HASH_KEY.encode()
    digest = hmac.new(key, f"{namespace}:{value}".encode(), hashlib.sha256).hexdigest()
    return digest[:32]
