"""Writes of the audit log. Every app records what happened to someone's data here."""

from __future__ import annotations

import uuid
from typing import Any

from audit.models import AuditEntry


def audit_record(
    *,
    action: str,
    actor: str,
    user_id: str = "",
    event_id: uuid.UUID | str | None = None,
    provider: str = "oura",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry. `details` holds ids, counts and reasons, never payload or tokens."""
    return AuditEntry.objects.create(
        action=action,
        actor=actor,
        user_id=user_id,
        provider=provider,
        event_id=uuid.UUID(str(event_id)) if event_id else None,
        details=details or {},
    )
