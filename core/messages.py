"""The bus contract: every message NATS carries, one typed model each, for producer and consumer.

| subject                                   | model                      | producer               |
|-------------------------------------------|----------------------------|------------------------|
| `health.raw.oura.webhook`                 | `RawWebhookEnvelope`       | ingestion (webhooks)   |
| `health.raw.oura.{collection}`            | `PageEnvelope`             | jobs (backfill pages)  |
| `health.normalized.user.{userId}.metrics` | `NormalizedMetricsMessage` | normalized             |
| `health.sync.oura.job.{jobId}.status`     | `JobStatusMessage`         | jobs                   |
| `health.dlq.{consumer}`                   | `DeadLetterHeaders`        | core (consumer runner) |

Producers build the model and send `to_bytes()`; consumers parse with `from_bytes()`. The
subject builders below are the only place a subject is spelled. `BUS_SCHEMAS` names the JSON
Schema file of each model (written to docs/phase-3/schemas/ by `manage.py export_api_docs`).

Each message keeps the bytes it was first written with: raw envelopes are stored in Postgres
and archived to S3 by sha256 before they are published, so `to_bytes()` of a model re-creates
exactly what was stored (tests hold every producer's real output to that). That is why
datetimes are written with `isoformat()` (`+00:00`) rather than pydantic's `Z`, and why the
three older messages name their own json.dumps options.

This module is part of `core`, the ground layer: it imports no app of ours.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

from annotated_types import MaxLen
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from core.identifiers import validate_user_id

__all__ = [
    "BUS_SCHEMAS",
    "EVENT_TYPES",
    "NOTIFICATION_MAX_LENGTHS",
    "PAGE_SUBJECT_PREFIX",
    "TRACE_HEADERS",
    "WEBHOOK_ENVELOPE_VERSION",
    "WEBHOOK_SUBJECT",
    "BusMessage",
    "DeadLetterHeaders",
    "JobStatusMessage",
    "JobTypeError",
    "NormalizedMetricsMessage",
    "PageEnvelope",
    "PageWindow",
    "RawWebhookEnvelope",
    "TypeErrorCode",
    "TypeStatus",
    "WebhookEnvelopeHead",
    "WebhookNotification",
    "WebhookSignature",
    "dead_letter_subject",
    "job_status_subject",
    "normalized_metrics_subject",
    "page_subject",
]

TRACE_HEADERS: tuple[str, ...] = ("traceparent", "tracestate", "baggage")
"""W3C Trace Context and Baggage headers, carried in the NATS headers of every message above.

The publisher (core/bus.py) injects the current context into them and the consumer runner
extracts it, so one webhook is one trace across web, relay and normalizer. They ride beside
the body, never in it: the body stays the stored, hashed bytes, and a message without them
(an older one, or a replayed dead letter) is still valid. Baggage carries only a keyed hash
of the person, never an id.
"""

NATS_MSG_ID = "Nats-Msg-Id"  # JetStream's de-duplication header, set on every publish here

WEBHOOK_SUBJECT = "health.raw.oura.webhook"
PAGE_SUBJECT_PREFIX = "health.raw.oura."
WEBHOOK_ENVELOPE_VERSION = 1

# A subject token: `.`, `*`, `>` and whitespace are NATS syntax and must never come from data.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _token(value: str, what: str) -> str:
    if _TOKEN.fullmatch(value) is None:
        raise ValueError(f"{what} is not a plain subject token")
    return value


def page_subject(collection: str) -> str:
    if collection == "webhook":  # the webhook subject shares the prefix
        raise ValueError("webhook is not a collection")
    return PAGE_SUBJECT_PREFIX + _token(collection, "collection")


def normalized_metrics_subject(user_id: str) -> str:
    # `.`, `*` and `>` are subject syntax: only ids of the one pattern become a token here.
    return f"health.normalized.user.{validate_user_id(user_id)}.metrics"


def job_status_subject(job_id: uuid.UUID | str) -> str:
    return f"health.sync.oura.job.{uuid.UUID(str(job_id))}.status"


def dead_letter_subject(consumer: str) -> str:
    return f"health.dlq.{_token(consumer, 'consumer')}"


# --- Shared pieces -------------------------------------------------------------------------

# Written with isoformat() (`+00:00`), the form every stored envelope has; pydantic's own
# serializer would write `Z` and change the bytes of a re-serialised envelope.
IsoDatetime = Annotated[
    AwareDatetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _headers_extra(subject: str, *headers: str) -> dict[str, Any]:
    return {"x-nats-subject": subject, "x-nats-headers": [*headers, *TRACE_HEADERS]}


class BusMessage(BaseModel):
    """Base of every body on the bus: frozen; unknown keys ignored, so a consumer still reads
    a message from a newer producer during a rolling deploy."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # json.dumps options of this message's bytes; None means pydantic's own compact JSON.
    wire_sort_keys: ClassVar[bool | None] = None
    wire_separators: ClassVar[tuple[str, str]] = (",", ":")
    wire_ensure_ascii: ClassVar[bool] = True

    def to_bytes(self) -> bytes:
        if self.wire_sort_keys is None:
            return self.model_dump_json(by_alias=True).encode()
        return json.dumps(
            self.model_dump(mode="json", by_alias=True),
            sort_keys=self.wire_sort_keys,
            separators=self.wire_separators,
            ensure_ascii=self.wire_ensure_ascii,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Raises pydantic.ValidationError."""
        return cls.model_validate_json(data)


# --- health.raw.oura.webhook ---------------------------------------------------------------

# Non-blank and no NUL (Postgres text cannot hold it); the lengths are the raw_events_index
# columns'. JSON Schema's `pattern` is unanchored, hence ^...$.
_NOTIFICATION_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"


class WebhookNotification(BaseModel):
    """Oura's webhook notification: the five fields of its body, the one definition.

    The request path checks a body against these limits (ingestion/webhook_services.py), the
    webhook API documents them (ingestion/webhook_apis.py) and the normalizer reads them.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: Literal["create", "update", "delete"]
    data_type: str = Field(
        max_length=40, pattern=_NOTIFICATION_TEXT, description="Oura data type, e.g. workout."
    )
    object_id: str = Field(
        max_length=128, pattern=_NOTIFICATION_TEXT, description="Oura's id of the document."
    )
    event_time: str = Field(
        max_length=64, pattern=_NOTIFICATION_TEXT, description="ISO-8601 with offset."
    )
    user_id: str = Field(max_length=128, pattern=_NOTIFICATION_TEXT, description="Oura user id.")


# In the Literal's order (create, update, delete), which the OpenAPI enum keeps.
EVENT_TYPES: tuple[str, ...] = get_args(WebhookNotification.model_fields["event_type"].annotation)


def _max_length(name: str) -> int:
    for item in WebhookNotification.model_fields[name].metadata:
        if isinstance(item, MaxLen):
            return int(item.max_length)
    return 10  # event_type: its column's length (it holds create, update or delete)


# Field -> longest value (its raw_events_index column's length), in the body's field order.
NOTIFICATION_MAX_LENGTHS: dict[str, int] = {
    name: _max_length(name) for name in WebhookNotification.model_fields
}


class WebhookSignature(BaseModel):
    """How the delivery's signature matched: kept so an archived delivery can be re-verified."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    algorithm: Literal["hmac-sha256"]
    timestamp: str = Field(description="x-oura-timestamp, unix seconds.")
    secret: Literal["current", "previous"]
    form: Literal["raw", "compact", "compact_ascii"] = Field(
        description="The body form that matched: as received, or re-serialised compact JSON."
    )


class WebhookEnvelopeHead(BusMessage):
    """Everything of the webhook envelope that the request knows before its one statement.

    `status` and `user_id` depend on the Oura account's owner, which only that statement
    looks up; they sort last, so Postgres appends them to these bytes
    (ingestion/webhook_services.py). Keys are sorted: the same event always gives the same
    bytes and sha256.
    """

    model_config = ConfigDict(
        json_schema_extra=_headers_extra(WEBHOOK_SUBJECT, NATS_MSG_ID + " (= event_id)")
    )
    wire_sort_keys = True
    wire_ensure_ascii = False

    envelope_version: Literal[1]
    event_id: uuid.UUID = Field(description="uuid5 of the dedupe key; also the Nats-Msg-Id.")
    provider: Literal["oura"]
    kind: Literal["webhook"]
    received_at: IsoDatetime
    dedupe_key: str = Field(min_length=64, max_length=64, description="sha256 hex.")
    notification: WebhookNotification
    body: str = Field(description="The request body as received (UTF-8).")
    headers: dict[str, str] = Field(description="The kept request headers, lower-case names.")
    signature: WebhookSignature

    @classmethod
    def checked_bytes(
        cls,
        *,
        event_id: uuid.UUID,
        received_at: datetime,
        dedupe_key: str,
        notification: Mapping[str, str],
        body: str,
        headers: Mapping[str, str],
        timestamp: str,
        secret: str,
        form: str,
    ) -> bytes:
        """`to_bytes()` of this model (this envelope version, from the Oura webhook, signed with
        hmac-sha256) for parts the request path has already checked, without checking them
        again: validating and dumping the model took a tenth of a webhook's CPU. A test
        holds these bytes equal to the model's for generated deliveries."""
        head = {
            "envelope_version": WEBHOOK_ENVELOPE_VERSION,
            "event_id": str(event_id),
            "provider": "oura",
            "kind": "webhook",
            "received_at": received_at.isoformat(),
            "dedupe_key": dedupe_key,
            "notification": {name: notification[name] for name in WebhookNotification.model_fields},
            "body": body,
            "headers": dict(headers),
            "signature": {"algorithm": "hmac-sha256", "timestamp": timestamp, "secret": secret,
                          "form": form},
        }  # fmt: skip
        return json.dumps(
            head,
            sort_keys=True,
            separators=cls.wire_separators,
            ensure_ascii=cls.wire_ensure_ascii,
        ).encode()


class RawWebhookEnvelope(WebhookEnvelopeHead):
    """Published on `health.raw.oura.webhook` for an accepted delivery (stored first)."""

    model_config = ConfigDict(
        json_schema_extra=_headers_extra(WEBHOOK_SUBJECT, NATS_MSG_ID + " (= event_id)"),
    )

    status: Literal["accepted", "orphan", "dropped"] = Field(
        description="By the Oura account's owner; only accepted envelopes are published."
    )
    user_id: str = Field(
        max_length=64, description="Our user id owning the Oura account; empty for an orphan."
    )


# --- health.raw.oura.{collection} ----------------------------------------------------------


class PageWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    start: date
    end: date


class PageEnvelope(BusMessage):
    """Published on `health.raw.oura.{collection}` per backfill page; the page is in S3.

    Ids and keys only: the documents are read from `object_key` and checked by `sha256`.
    """

    model_config = ConfigDict(
        json_schema_extra=_headers_extra(
            PAGE_SUBJECT_PREFIX + "{collection}", NATS_MSG_ID + " (= event_id)"
        )
    )
    wire_sort_keys = False  # field order, as the backfill always wrote it

    event_id: uuid.UUID = Field(description="uuid5 of the page's dedupe key; the Nats-Msg-Id.")
    provider: Literal["oura"]
    kind: Literal["page"]
    user_id: str = Field(min_length=1, max_length=64)
    provider_user_id: str = Field(description="The Oura user id.")
    collection: str = Field(min_length=1, description="Oura collection, e.g. daily_sleep.")
    object_key: str = Field(min_length=1, description="S3 key of the page's response bytes.")
    sha256: str = Field(min_length=64, max_length=64)
    document_count: int = Field(ge=0)
    job_id: uuid.UUID
    window: PageWindow
    received_at: IsoDatetime


# --- health.normalized.user.{userId}.metrics -----------------------------------------------


class NormalizedMetricsMessage(BusMessage):
    """Published on `health.normalized.user.{userId}.metrics` after the rows are committed.

    It says what changed, never the values: the bus must carry no health data (ARCHITECTURE
    section 3), so a subscriber reads the rows through the API. Unknown fields are refused so
    a value cannot slip in by accident.
    """

    # camelCase like REST v1, which subscribers read next; every field is always sent.
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        json_schema_serialization_defaults_required=True,
        json_schema_extra=_headers_extra("health.normalized.user.{userId}.metrics", NATS_MSG_ID),
    )

    user_id: str = Field(min_length=1, max_length=64)
    provider: Literal["oura"]
    data_type: str = Field(
        min_length=1, description="Oura collection, e.g. daily_readiness, workout, sleep."
    )
    change: Literal["upsert", "delete"]
    days: list[date] = Field(description="Days whose rows changed.")
    ids: list[str] = Field(
        description="Oura document ids whose rows changed; empty for a time series "
        "(heartrate), whose samples have no ids: `days` names what changed."
    )
    normalizer_version: int = Field(ge=1)
    occurred_at: AwareDatetime = Field(description="When the rows were committed.")


# --- health.sync.oura.job.{jobId}.status ---------------------------------------------------


JobStatus = Literal[
    "queued", "running", "succeeded", "succeeded_with_errors", "failed", "cancelled"
]
# One data type within a job: not begun, being paged, all pages in, given up on, or left
# unfetched because the job ended first (cancelled, or failed as a whole).
TypeStatus = Literal["pending", "running", "succeeded", "failed", "skipped"]
TypeErrorCode = Literal["not_found", "retries_exhausted", "request_error"]


class JobTypeError(BaseModel):
    """Why one data type of a job failed. Statuses and windows only: never a body or token."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    error: TypeErrorCode = Field(
        description="not_found: Oura answered 404 for the collection; retries_exhausted: "
        "5xx, timeouts or 429 outlasted the retries; request_error: a 4xx not retried."
    )
    detail: str = Field(max_length=500, description="Collection, window and cause.")
    at: IsoDatetime


class JobStatusMessage(BusMessage):
    """Published on `health.sync.oura.job.{jobId}.status` at every change of a backfill job;
    the stream keeps the latest per job. Ids, state and counts: never a health value."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        json_schema_serialization_defaults_required=True,
        json_schema_extra=_headers_extra("health.sync.oura.job.{jobId}.status"),
    )
    # json.dumps's defaults, the bytes the job status always had.
    wire_sort_keys = False
    wire_separators = (", ", ": ")

    job_id: uuid.UUID
    user_id: str = Field(min_length=1, max_length=64)
    status: JobStatus = Field(
        description="succeeded_with_errors: every type was attempted, the ones in "
        "errorsPerType failed, the others succeeded."
    )
    progress: int = Field(ge=0, le=100)
    counts_per_type: dict[str, int] = Field(description="Documents fetched per data type.")
    started_at: IsoDatetime | None
    updated_at: IsoDatetime
    last_error: str | None
    # Added with per-type failures; defaults so that statuses written before still parse.
    status_per_type: dict[str, TypeStatus] = Field(
        default_factory=dict, description="Each requested data type's state."
    )
    errors_per_type: dict[str, JobTypeError] = Field(
        default_factory=dict, description="Why each failed data type failed."
    )


# --- health.dlq.{consumer} -----------------------------------------------------------------


class DeadLetterHeaders(BaseModel):
    """What a dead letter on `health.dlq.{consumer}` says, in its NATS headers.

    The body is the original message's bytes, unchanged, so the notification can be read with
    the original subject's model; the `health.dead_letters` row is the durable copy and the
    replay source.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        json_schema_extra=_headers_extra("health.dlq.{consumer}"),
    )

    msg_id: str = Field(alias=NATS_MSG_ID, description="dlq-{consumer}-{stream}-{stream sequence}.")
    original_subject: str = Field(alias="Health-Original-Subject", min_length=1)
    dead_letter_id: str = Field(alias="Health-Dead-Letter-Id", description="The row's id.")
    error_type: str = Field(alias="Health-Error-Type", description="e.g. ContractViolation.")

    @classmethod
    def of(
        cls, *, consumer: str, stream: str, stream_seq: int, original_subject: str,
        dead_letter_id: int, error_type: str,
    ) -> DeadLetterHeaders:  # fmt: skip
        # One id per original message: a repeated dead-lettering is dropped by JetStream.
        return cls(
            msg_id=f"dlq-{consumer}-{stream}-{stream_seq}",
            original_subject=original_subject,
            dead_letter_id=str(dead_letter_id),
            error_type=error_type,
        )

    def as_headers(self) -> dict[str, str]:
        headers: dict[str, str] = self.model_dump(by_alias=True)
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> DeadLetterHeaders:
        """Raises pydantic.ValidationError."""
        return cls.model_validate(dict(headers))


# File stem in docs/phase-3/schemas/ -> model. Renaming a stem breaks links; add, don't rename
# (`normalized-metrics-message` predates the `bus-` prefix).
BUS_SCHEMAS: dict[str, type[BaseModel]] = {
    "bus-webhook-envelope": RawWebhookEnvelope,
    "bus-page-envelope": PageEnvelope,
    "normalized-metrics-message": NormalizedMetricsMessage,
    "bus-job-status": JobStatusMessage,
    "bus-dead-letter": DeadLetterHeaders,
}
