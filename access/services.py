"""Issuing and revoking API keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from access.models import ApiKey, Scope
from audit.models import AuditEntry
from audit.services import audit_record
from core.identifiers import InvalidUserId, is_valid_user_id

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
    all_users: bool = False,
    expires_at: datetime | None = None,
) -> IssuedKey:
    """Create a key for the listed users, or (an explicit choice) for every user.

    Without `expires_at` the key expires after API_KEY_DEFAULT_EXPIRY_DAYS. Raises
    ValueError for no scope, an unknown scope, no users and not all_users, both, or a user
    id outside core.identifiers.USER_ID_PATTERN.
    """
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if all_users and user_ids:
        raise ValueError("a key is either for every user or for the listed users, not both")
    if not all_users and not user_ids:
        raise ValueError("a key needs the users it may act on, or all_users chosen explicitly")
    if not all(is_valid_user_id(user_id) for user_id in user_ids or []):
        raise ValueError(str(InvalidUserId()))
    if expires_at is None:
        expires_at = timezone.now() + timedelta(days=settings.API_KEY_DEFAULT_EXPIRY_DAYS)
    token = secrets.token_urlsafe(32)
    prefix = token[:8]
    secret = f"{KEY_PREFIX}{token}"
    key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        key_hash=hash_key(secret),
        scopes=sorted(set(scopes)),
        all_users=all_users,
        allowed_user_ids=sorted(set(user_ids or [])),
        expires_at=expires_at,
    )
    return IssuedKey(api_key=key, secret=secret)


def api_key_revoke(*, api_key: ApiKey, actor: str = "system") -> ApiKey:
    """Revoke a key (idempotent); audited with the key's public prefix, never its secret."""
    with transaction.atomic():
        already = api_key.revoked_at is not None
        if not already:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
        audit_record(
            action=AuditEntry.Action.API_KEY_REVOKED,
            actor=actor,
            details={"prefix": api_key.prefix, "already_revoked": already},
        )
    return api_key
