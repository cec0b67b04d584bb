"""Building signed Oura deliveries by hand, and reading what reached JetStream."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from nats.js.errors import NotFoundError

from audit.models import AuditEntry
from core import bus
from ingestion.models import OuraConnection, RawEvent
from ingestion.webhook_commit import RecordedEvent
from ingestion.webhook_services import webhook_record, webhook_verify

URL = "/v1/webhooks/oura"


def notification(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_type": "update",
        "data_type": "sleep",
        "object_id": f"obj-{uuid.uuid4()}",
        "event_time": "2026-01-01T08:00:00+00:00",
        "user_id": "oura-user-1",
    }
    body.update(overrides)
    return body


def sign(secret: str, timestamp: str, message: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + message, hashlib.sha256).hexdigest()


def signed(
    body: dict[str, Any] | bytes,
    *,
    secret: str | None = None,
    timestamp: int | None = None,
    signed_message: bytes | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Compact JSON (or the given bytes) with Oura's two headers, signed over the raw body."""
    raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = sign(
        settings.OURA_CLIENT_SECRET if secret is None else secret,
        ts,
        raw if signed_message is None else signed_message,
    ).upper()
    return raw, {"x-oura-signature": signature, "x-oura-timestamp": ts}


def connect(provider_user_id: str = "oura-user-1", *, user_id: str = "user-1",
            status: str = OuraConnection.Status.ACTIVE) -> OuraConnection:  # fmt: skip
    return OuraConnection.objects.create(
        user_id=user_id, provider_user_id=provider_user_id, status=status
    )


def record_unpublished(count: int, *, user: str = "oura-user-1") -> list[RecordedEvent]:
    """A backlog as a NATS outage leaves it: committed rows, nothing published or archived."""
    events = []
    for _ in range(count):
        raw, headers = signed(notification(user_id=user))
        delivery = webhook_verify(body=raw, headers=headers)
        events.append(webhook_record(delivery=delivery, received_at=timezone.now()))
    return events


def assert_stored_audited_published(count: int) -> None:
    """`count` raw events, each with one audit entry and one message on HEALTH_RAW."""
    assert RawEvent.objects.count() == count
    assert AuditEntry.objects.count() == count
    assert len(raw_stream_messages()) == count


@dataclass(frozen=True)
class StreamMessage:
    subject: str
    msg_id: str
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data)


def raw_stream_messages() -> list[StreamMessage]:
    """Every message now in HEALTH_RAW (tests purge it first with `clean_streams`)."""

    async def read() -> list[StreamMessage]:
        nc = await bus.connect(name="tests")
        try:
            js = nc.jetstream()
            state = (await js.stream_info("HEALTH_RAW")).state
            found = []
            if state.messages:
                for seq in range(state.first_seq, state.last_seq + 1):
                    try:
                        msg = await js.get_msg("HEALTH_RAW", seq)
                    except NotFoundError:
                        continue
                    found.append(
                        StreamMessage(
                            subject=msg.subject or "",
                            msg_id=(msg.headers or {}).get("Nats-Msg-Id", ""),
                            data=msg.data or b"",
                        )
                    )
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def envelope_of(event_id: str) -> dict[str, Any]:
    row = RawEvent.objects.get(event_id=event_id)
    assert row.envelope is not None
    return dict(json.loads(bytes(row.envelope)))
