"""How core's own services write the audit log without importing it.

The audit log (audit/) sits on core, so core may not import it, yet core's dead-letter replay
must be audited. The audit app hands its writer over when Django starts (audit/apps.py), and
core calls it through `audit_port.record`. A process without the audit app fails loudly on the
first write instead of losing the entry.
"""

from __future__ import annotations

from typing import Any, Protocol


class AuditWriter(Protocol):
    def __call__(
        self, *, action: str, actor: str, user_id: str = "", details: dict[str, Any] | None = None
    ) -> object: ...


_writer: AuditWriter | None = None


def register(writer: AuditWriter) -> None:
    global _writer
    _writer = writer


def record(
    *, action: str, actor: str, user_id: str = "", details: dict[str, Any] | None = None
) -> None:
    """Append one audit entry in the caller's transaction (see audit.services.audit_record)."""
    if _writer is None:
        raise RuntimeError("the audit app is not installed: nothing can write the audit log")
    _writer(action=action, actor=actor, user_id=user_id, details=details)
