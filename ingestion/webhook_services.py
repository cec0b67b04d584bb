"""Oura webhook deliveries: verify, de-duplicate, store durably, publish.

The request path is `webhook_accept`: verify the signature and the body, then one Postgres
statement writes the raw event (with the whole envelope inline) and one audit entry, unless
the account's person was erased, and after the commit the envelope is published to
JetStream. Concurrent requests of one process share that statement and one hand-off to the
bus (group commit, ingestion/webhook_commit.py). Postgres is the first durable copy: a 202 is
only ever given after the commit, and the relay (ingestion/relay.py) archives to S3,
publishes again what the request path could not (or may not have) and records both. See
docs/phase-3/webhooks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from core import bus, tracing
from core.messages import (
    EVENT_TYPES,
    NOTIFICATION_MAX_LENGTHS,
    WebhookEnvelopeHead,
)
from core.messages import WEBHOOK_SUBJECT as WEBHOOK_SUBJECT  # re-exported for callers
from core.metrics import webhook_accepted_total, webhook_duplicate_total, webhook_invalid_total
from core.observability import annotate_access_log
from core.pseudonyms import person_hash
from ingestion.webhook_commit import (
    PUBLISH_TIMEOUT_S,
    RESULT_TIMEOUT_S,
    Outcome,
    RecordedEvent,
    RecordRequest,
    async_group_committer,
    group_committer,
    publish_breaker_open,
    publish_failed,
    webhook_record_batch,
)
from ingestion.webhook_commit import reset_publish_breaker as reset_publish_breaker

logger = logging.getLogger(__name__)

PROVIDER = "oura"
# The subject, the envelope and the notification are the bus contract's (core/messages.py);
# these names stay for the code and tests that import them from here.
NOTIFICATION_FIELDS = NOTIFICATION_MAX_LENGTHS
# Headers worth keeping with the raw body. Everything else (cookies, forwarding headers,
# anything a proxy adds) is dropped. The signature is an HMAC output, not a secret, and
# keeping it lets anyone holding the client secret re-verify an archived delivery.
KEPT_HEADERS = ("content-type", "user-agent", "x-oura-timestamp", "x-oura-signature")
# The same headers as WSGI names them, so the view can read them straight from
# request.META instead of building request.headers from every header sent.
_WSGI_NAMES = {
    name: "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_")
    for name in KEPT_HEADERS
}
# Event ids are uuid5(namespace, dedupe key): a retried delivery gets the same event id, so
# JetStream's Nats-Msg-Id de-duplication holds across our own retries and the relay's.
EVENT_ID_NAMESPACE = uuid.UUID("5b0e4c1e-7a53-4c0f-9d1f-0c8e3b7a4f21")
# The re-serialised signature forms need the body parsed before it is authenticated. Oura's
# notifications are ~200 bytes, so only bodies up to this size get that second chance: an
# unauthenticated sender cannot make us parse (or re-serialise) anything large.
ALTERNATIVE_FORMS_MAX_BYTES = 2048


class WebhookRejected(Exception):
    """The delivery is refused; `code`, `http_status` and `detail` make the error response."""

    def __init__(self, code: str, detail: str, http_status: int, reason: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.http_status = http_status
        self.reason = reason  # label of webhook_invalid_total


class ErasedAccount(Exception):
    """The delivery is for an Oura account whose person was erased: nothing is stored."""


class DuplicateEvent(Exception):
    def __init__(self, event_id: uuid.UUID) -> None:
        super().__init__(str(event_id))
        self.event_id = event_id


SecretName = Literal["current", "previous"]
BodyForm = Literal["raw", "compact", "compact_ascii"]


@dataclass(frozen=True)
class SignatureMatch:
    secret: SecretName
    form: BodyForm
    timestamp: str


@dataclass(frozen=True)
class VerifiedDelivery:
    notification: dict[str, str]
    body: bytes
    headers: dict[str, str]
    signature: SignatureMatch
    event_time: datetime | None


# --- verification -----------------------------------------------------------------------


def _invalid_signature(detail: str, reason: str) -> WebhookRejected:
    return WebhookRejected("invalid_signature", detail, 400, reason)


@functools.lru_cache(maxsize=8)
def _keyed_hmac(secret: str) -> hmac.HMAC:
    # Keying HMAC hashes the padded key twice; copying a keyed object skips that per request.
    # Keyed by the secret's value, so a rotated or overridden secret gets its own entry.
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _hmac_hex(secret: str, timestamp: str, message: bytes) -> str:
    mac = _keyed_hmac(secret).copy()
    mac.update(timestamp.encode())
    mac.update(message)
    return mac.hexdigest()


def _compact_forms(parsed: Any) -> list[tuple[BodyForm, bytes]]:
    # Oura's documented verifier hashes JSON.stringify(req.body): compact, insertion order,
    # non-ASCII kept as is. The ASCII-escaped variant costs one more HMAC and covers a sender
    # that serialises the way Python does by default (CONTRACT 5.5, ambiguity a).
    try:
        ascii_form = json.dumps(parsed, separators=(",", ":")).encode()
    except (RecursionError, ValueError):
        return []
    forms: list[tuple[BodyForm, bytes]] = []
    try:
        compact = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
        compact = b""
    if compact:
        forms.append(("compact", compact))
    if ascii_form != compact:
        forms.append(("compact_ascii", ascii_form))
    return forms


def _loads(body: bytes) -> Any:
    """Parse strictly: UTF-8 only, no lone surrogates anywhere, bounded nesting.

    Raises ValueError for anything else, so callers handle one exception type.
    """
    try:
        text = body.decode("utf-8")
        parsed = json.loads(text)
        # json accepts "\ud800" escapes; such a string has no UTF-8 form and cannot be
        # stored or published. Encoding the whole value once finds them wherever they are.
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeError:
        raise ValueError("not UTF-8") from None
    return parsed


def webhook_verify_signature(
    *, body: bytes, signature: str, timestamp: str, now: float | None = None
) -> SignatureMatch:
    """Check `x-oura-signature` against every accepted secret and body form.

    The raw form needs no parsing; the re-serialised forms are tried only for small bodies,
    and a body that cannot be parsed or re-serialised simply does not match. Raises
    WebhookRejected("invalid_signature").
    """
    if not signature or not timestamp:
        raise _invalid_signature("x-oura-signature and x-oura-timestamp are required.", "missing")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise _invalid_signature("x-oura-timestamp is not unix seconds.", "bad_timestamp") from None
    # In whole seconds, as ints: a float cannot hold a 500-digit timestamp (OverflowError).
    skew = int(time.time() if now is None else now) - sent_at
    tolerance = settings.WEBHOOK_TIMESTAMP_TOLERANCE_S
    if skew > tolerance:
        raise _invalid_signature("x-oura-timestamp is too old.", "stale_timestamp")
    if skew < -tolerance:
        raise _invalid_signature("x-oura-timestamp is in the future.", "future_timestamp")

    secrets: list[tuple[SecretName, str]] = [("current", settings.OURA_CLIENT_SECRET)]
    if settings.OURA_CLIENT_SECRET_PREVIOUS:
        secrets.append(("previous", settings.OURA_CLIENT_SECRET_PREVIOUS))
    given = signature.strip().upper()

    def match(form: BodyForm, message: bytes) -> SignatureMatch | None:
        for name, secret in secrets:
            expected = _hmac_hex(secret, timestamp, message).upper()
            if hmac.compare_digest(expected.encode(), given.encode("ascii", "replace")):
                return SignatureMatch(secret=name, form=form, timestamp=timestamp)
        return None

    found = match("raw", body)
    if found is not None:
        return found
    if len(body) > ALTERNATIVE_FORMS_MAX_BYTES:
        raise _invalid_signature("The signature does not match.", "mismatch")
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        # Not JSON, so no re-serialised form exists; the raw form already failed.
        raise _invalid_signature("The signature does not match.", "mismatch") from None
    for form, message in _compact_forms(parsed):
        found = match(form, message)
        if found is not None:
            return found
    raise _invalid_signature("The signature does not match.", "mismatch")


def _parse_event_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
        # A naive time has no stated zone; Oura documents offsets, so UTC is the only guess.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 with a positive offset
        return None


def webhook_parse_notification(*, body: bytes) -> dict[str, str]:
    """The five Oura fields, checked. Raises WebhookRejected (malformed/invalid).

    Called only once the signature holds. Parsed here even when the signature check parsed
    the body for an alternative form: that parse was lenient (any encoding, lone
    surrogates), and what is stored must be strict UTF-8 JSON.
    """
    try:
        parsed = _loads(body)
    except ValueError:
        raise WebhookRejected(
            "malformed_body",
            "The body is not UTF-8 JSON (or nests too deeply, or has lone surrogates).",
            400,
            "malformed_body",
        ) from None
    if not isinstance(parsed, dict):
        raise WebhookRejected(
            "malformed_body", "The body is not a JSON object.", 400, "malformed_body"
        )
    problems = []
    for name, max_length in NOTIFICATION_FIELDS.items():
        value = parsed.get(name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} must be a non-empty string")
        elif len(value) > max_length:
            problems.append(f"{name} is longer than {max_length} characters")
        elif "\x00" in value:  # Postgres text cannot hold NUL
            problems.append(f"{name} must not contain NUL")
    if not problems and parsed["event_type"] not in EVENT_TYPES:
        problems.append("event_type must be create, update or delete")
    if problems:
        raise WebhookRejected(
            "invalid_notification", "; ".join(problems) + ".", 400, "invalid_notification"
        )
    return {name: parsed[name] for name in NOTIFICATION_FIELDS}


def webhook_headers_from_meta(meta: Mapping[str, Any]) -> dict[str, str]:
    """The headers webhook_verify reads or keeps, from a WSGI environ (request.META)."""
    return {name: meta[key] for name, key in _WSGI_NAMES.items() if key in meta}


def webhook_verify(
    *, body: bytes, headers: Mapping[str, str], now: float | None = None
) -> VerifiedDelivery:
    """Signature first, then the body: an unsigned sender learns nothing about our parser."""
    lowered = {key.lower(): value for key, value in headers.items()}
    match = webhook_verify_signature(
        body=body,
        signature=lowered.get("x-oura-signature", ""),
        timestamp=lowered.get("x-oura-timestamp", ""),
        now=now,
    )
    notification = webhook_parse_notification(body=body)
    return VerifiedDelivery(
        notification=notification,
        body=body,
        headers={name: lowered[name] for name in KEPT_HEADERS if name in lowered},
        signature=match,
        event_time=_parse_event_time(notification["event_time"]),
    )


# --- identity ---------------------------------------------------------------------------


def webhook_dedupe_key(*, notification: Mapping[str, str]) -> str:
    """sha256 of the provider and Oura's five fields, event_time normalised to UTC.

    Fields are joined with a newline, which no field can contain without failing JSON string
    rules for Oura's ids, so two different notifications cannot collide by concatenation.
    """
    event_time = _parse_event_time(notification["event_time"])
    parts = [
        PROVIDER,
        notification["event_type"],
        notification["data_type"],
        notification["object_id"],
        event_time.isoformat() if event_time else notification["event_time"],
        notification["user_id"],
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def webhook_event_id(*, dedupe_key: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, dedupe_key)


def envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    """Deterministic JSON: the same event always archives to the same bytes (and sha256)."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# The labelled child, looked up once (labels() per call costs a lock and a dict lookup).
_accepted_total = webhook_accepted_total.labels(provider=PROVIDER)


# --- the write: one statement (ingestion/webhook_commit.py) --------------------------------


def webhook_record_request(*, delivery: VerifiedDelivery, received_at: datetime) -> RecordRequest:
    """What the statement needs of one verified delivery."""
    notification = delivery.notification
    dedupe_key = webhook_dedupe_key(notification=notification)
    event_id = webhook_event_id(dedupe_key=dedupe_key)
    # The envelope's model is RawWebhookEnvelope; this is all of it but the two keys the
    # statement appends (status, user_id), written as that model writes it.
    envelope_rest = WebhookEnvelopeHead.checked_bytes(
        event_id=event_id,
        received_at=received_at,
        dedupe_key=dedupe_key,
        notification=notification,
        body=delivery.body.decode("utf-8"),
        headers=delivery.headers,
        timestamp=delivery.signature.timestamp,
        secret=delivery.signature.secret,
        form=delivery.signature.form,
    )
    return RecordRequest(
        event_id=event_id,
        dedupe_key=dedupe_key,
        provider_user_id=notification["user_id"],
        data_type=notification["data_type"],
        event_type=notification["event_type"],
        object_id=notification["object_id"],
        event_time=delivery.event_time,
        received_at=received_at,
        # Everything up to the closing brace, then the key that sorts next.
        envelope_head=envelope_rest[:-1] + b',"status":',
        # The audit entry names the Oura account by its keyed hash, not our user id (which
        # only the statement learns): docs/phase-3/privacy.md, "The audit log". The same
        # hash keys the account's erasure tombstone.
        person_ref=person_hash(notification["user_id"], namespace="oura"),
        # The relay archives and republishes this row in the request's trace.
        trace_parent=tracing.current_traceparent(),
    )


def webhook_record(*, delivery: VerifiedDelivery, received_at: datetime) -> RecordedEvent:
    """One statement on this thread's connection, so one transaction: the raw event with its
    envelope, and one audit entry (event id and counts, never payload).

    Raises DuplicateEvent when the dedupe key is already known and ErasedAccount when the
    account's person was erased; nothing is written then.
    """
    request = webhook_record_request(delivery=delivery, received_at=received_at)
    (outcome,) = webhook_record_batch([request], provider=PROVIDER, subject=WEBHOOK_SUBJECT)
    return _stored(outcome, request)


def _stored(outcome: Outcome, request: RecordRequest) -> RecordedEvent:
    """The stored event, or the exception that says why there is none."""
    if outcome == "duplicate":
        raise DuplicateEvent(request.event_id)
    if outcome == "erased":
        raise ErasedAccount
    return outcome


# --- publishing -------------------------------------------------------------------------


def webhook_publish(*, event: RecordedEvent) -> bool:
    """Publish the envelope and wait for JetStream's ack. False leaves it to the relay.

    Nothing is written back: the relay publishes every row once more with the same
    Nats-Msg-Id, which JetStream acknowledges and drops, and only then records published_at
    (see ingestion/relay.py). Marking it here cost a second statement and a second version
    of the row on every webhook, for a record the relay has to make anyway.
    """
    if not event.publish_subject or publish_breaker_open():
        return False
    try:
        bus.get_bus().publish(
            event.publish_subject,
            event.envelope,
            msg_id=str(event.event_id),
            timeout=PUBLISH_TIMEOUT_S,
        )
    except bus.BusUnavailable:
        publish_failed()
        logger.warning("webhook_publish_deferred", extra={"event_id": str(event.event_id)})
        return False
    return True


def _publish_after_commit(event: RecordedEvent, person: str) -> None:
    try:
        # The message's baggage names the person by keyed hash only (the audit's person_ref).
        with tracing.person_in_baggage(person):
            webhook_publish(event=event)
    except Exception as exc:  # the event is committed; the relay publishes it later
        logger.warning(
            "webhook_publish_failed",
            extra={"event_id": str(event.event_id), "error_type": type(exc).__name__},
        )


def _record_and_publish(request: RecordRequest) -> RecordedEvent:
    """The request path's write: handed to this process's group committer, which writes it
    with whatever other deliveries are waiting and publishes it after the commit.

    Inside a caller's transaction (never the view's; a test's or a script's) the delivery is
    written on the caller's connection instead, and published only once that commits: a
    statement of another connection could neither see the caller's rows nor be undone with
    them.
    """
    if connection.in_atomic_block or not settings.WEBHOOK_GROUP_COMMIT:
        (outcome,) = webhook_record_batch([request], provider=PROVIDER, subject=WEBHOOK_SUBJECT)
        if isinstance(outcome, RecordedEvent):
            event = outcome
            # on_commit, not "right after": nothing may reach the bus before the row is
            # really committed.
            transaction.on_commit(lambda: _publish_after_commit(event, request.person_ref))
    else:
        # The message's baggage names the person by keyed hash only (the audit's person_ref);
        # the committer publishes in the context captured here.
        with tracing.person_in_baggage(request.person_ref):
            future = group_committer(provider=PROVIDER, subject=WEBHOOK_SUBJECT).submit(request)
        try:
            outcome, _published = future.result(RESULT_TIMEOUT_S)
        except FutureTimeout:
            raise OperationalError("the webhook committer did not answer") from None
    return _stored(outcome, request)


def webhook_accept(
    *, body: bytes, headers: Mapping[str, str], received_at: datetime | None = None
) -> RecordedEvent:
    """Verify, record and (after the commit) publish one delivery.

    Raises WebhookRejected, ErasedAccount or DuplicateEvent; database errors propagate (the
    caller answers 503 so that Oura retries).
    """
    request = _verified_request(body, headers, received_at)
    try:
        event = _record_and_publish(request)
    except (ErasedAccount, DuplicateEvent) as exc:
        _not_kept(exc)
        raise
    return _accepted(event)


async def webhook_accept_async(*, body: bytes, headers: Mapping[str, str]) -> RecordedEvent:
    """webhook_accept on an event loop (the ASGI path): the same checks and answers, the
    delivery handed to the loop's AsyncGroupCommitter. The same exceptions."""
    request = _verified_request(body, headers, None)
    # The message's baggage names the person by keyed hash only (the audit's person_ref);
    # the committer publishes in the context captured here.
    with tracing.person_in_baggage(request.person_ref):
        future = async_group_committer(provider=PROVIDER, subject=WEBHOOK_SUBJECT).submit(request)
    try:
        async with asyncio.timeout(RESULT_TIMEOUT_S):  # wait_for would add a future of its own
            outcome, _published = await future
    except TimeoutError:
        raise OperationalError("the webhook committer did not answer") from None
    try:
        event = _stored(outcome, request)
    except (ErasedAccount, DuplicateEvent) as exc:
        _not_kept(exc)
        raise
    return _accepted(event)


def _verified_request(
    body: bytes, headers: Mapping[str, str], received_at: datetime | None
) -> RecordRequest:
    try:
        delivery = webhook_verify(body=body, headers=headers)
    except WebhookRejected as exc:
        webhook_invalid_total.labels(provider=PROVIDER, reason=exc.reason).inc()
        logger.info("webhook_rejected", extra={"reason": exc.reason})
        raise
    return webhook_record_request(delivery=delivery, received_at=received_at or timezone.now())


def _not_kept(exc: ErasedAccount | DuplicateEvent) -> None:
    if isinstance(exc, ErasedAccount):
        # The person was erased: nothing was stored, and nothing said names them. Answered
        # 200 so that Oura does not retry (the delivery is handled: by not keeping it).
        webhook_invalid_total.labels(provider=PROVIDER, reason="erased_account").inc()
        logger.info("webhook_for_erased_account")
    else:
        webhook_duplicate_total.labels(provider=PROVIDER).inc()
        logger.info("webhook_duplicate", extra={"event_id": str(exc.event_id)})


def _accepted(event: RecordedEvent) -> RecordedEvent:
    _accepted_total.inc()
    accepted = {"event_id": str(event.event_id), "data_type": event.data_type,
                "event_status": event.status}  # fmt: skip
    # One log line per delivery: the request's access line carries these (at ~1,000
    # deliveries a second a second record each was a tenth of the request's CPU).
    if not annotate_access_log(**accepted):
        logger.info("webhook_accepted", extra=accepted)
    return event


def webhook_reject_counted(*, reason: str) -> None:
    """Count a rejection decided before the service runs (size, rate limit)."""
    webhook_invalid_total.labels(provider=PROVIDER, reason=reason).inc()


def webhook_rate_limited(*, source: str) -> bool:
    """True once `source` has made more than WEBHOOK_RATE_LIMIT_PER_MINUTE deliveries this
    minute.

    A fixed one-minute window in Django's cache. With the default local-memory cache the
    count is per process, so N workers allow up to N times the limit: the limit exists to
    blunt a flood from one address, not to meter Oura, and a shared cache (Redis,
    memcached) in CACHES makes it exact without a code change.
    """
    key = f"webhook-rate:{source}:{int(time.time() // 60)}"
    # incr first: after a source's first delivery of the minute the key exists, and one
    # cache call per delivery is half the limiter's cost of add-then-incr.
    try:
        count = cache.incr(key)
    except ValueError:  # the first this minute
        count = 1
        if not cache.add(key, 1, timeout=61):  # a concurrent first won: count on it
            with contextlib.suppress(ValueError):  # unless it expired just now
                count = cache.incr(key)
    return bool(count > settings.WEBHOOK_RATE_LIMIT_PER_MINUTE)
