"""Issuing and revoking API keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from access.models import ApiKey, Scope

KEY_PREFIX = "hk_"


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # shown once; never stored


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(
    *,
    name: str,
    scopes: list[str],
    user_ids: list[str] | None = None,
    expires_at: datetime | None = None,
) -> IssuedKey:
    """Create a key. Without `user_ids` it may act on every user."""
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    token = secrets.token_urlsafe(32)
    prefix = token[:8]
    secret = f"{KEY_PREFIX}{token}"
    key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        key_hash=hash_key(secret),
        scopes=sorted(set(scopes)),
        all_users=not user_ids,
        allowed_user_ids=sorted(set(user_ids or [])),
        expires_at=expires_at,
    )
    return IssuedKey(api_key=key, secret=secret)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key
