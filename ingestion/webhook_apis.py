"""`GET|POST /v1/webhooks/oura`: Oura's verification challenge and its deliveries.

The class is a DRF APIView only so that drf-spectacular documents it in /v1/schema/.
`dispatch` is overridden to skip DRF's request wrapping, content negotiation, parsers,
authentication and throttling: the delivery path needs the raw body bytes (the signature
covers them), reads at most WEBHOOK_MAX_BODY_BYTES of them, and is the hottest path in the
system. Authenticity comes from the HMAC signature, not from an API key.

Served by the ASGI front door (health_project/asgi.py), a delivery never reaches this view:
ingestion/webhook_asgi.py answers it on the event loop with the answer functions below,
which this view shares. The view answers the challenge (GET), and deliveries when the
WSGI application is served on its own.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from core.errors import error_body, error_response
from core.messages import EVENT_TYPES, NOTIFICATION_MAX_LENGTHS
from core.serializers import ErrorSerializer
from ingestion.webhook_commit import RecordedEvent
from ingestion.webhook_services import (
    DuplicateEvent,
    ErasedAccount,
    WebhookRejected,
    webhook_accept,
    webhook_headers_from_meta,
    webhook_rate_limited,
    webhook_reject_counted,
)

logger = logging.getLogger(__name__)


class OuraWebhookApi(APIView):
    authentication_classes = []
    permission_classes = []

    class NotificationSerializer(serializers.Serializer[dict[str, str]]):
        # Documentation only (the view parses the body itself); the limits are the bus
        # contract's WebhookNotification, the one definition of the shape.
        event_type = serializers.ChoiceField(choices=list(EVENT_TYPES))
        data_type = serializers.CharField(max_length=NOTIFICATION_MAX_LENGTHS["data_type"])
        object_id = serializers.CharField(max_length=NOTIFICATION_MAX_LENGTHS["object_id"])
        event_time = serializers.CharField(help_text="ISO-8601 with offset.")
        user_id = serializers.CharField(
            max_length=NOTIFICATION_MAX_LENGTHS["user_id"], help_text="The Oura user id."
        )

    class ErasedSerializer(serializers.Serializer[dict[str, str]]):
        status = serializers.CharField(help_text="Always `erased`.")

    class AcceptedSerializer(serializers.Serializer[dict[str, str]]):
        eventId = serializers.UUIDField(
            help_text="Deterministic: a redelivery of the same notification has the same id."
        )

    class ChallengeSerializer(serializers.Serializer[dict[str, str]]):
        challenge = serializers.CharField()

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # Plain Django from here on; see the module docstring for why DRF is bypassed.
        if request.method == "GET":
            return self.get(request)
        if request.method == "POST":
            return self.post(request)
        response = error_response("method_not_allowed", "Use GET or POST.", 405)
        response["Allow"] = "GET, POST"
        return response

    @extend_schema(
        operation_id="oura_webhook_challenge",
        summary="Answer Oura's subscription verification challenge",
        parameters=[
            OpenApiParameter("verification_token", str, required=True),
            OpenApiParameter("challenge", str, required=True),
        ],
        responses={200: ChallengeSerializer, 400: ErrorSerializer, 401: ErrorSerializer},
        auth=[],
        tags=["webhooks"],
    )
    def get(self, request: HttpRequest) -> HttpResponseBase:
        token = request.GET.get("verification_token", "")
        expected = settings.OURA_WEBHOOK_VERIFICATION_TOKEN
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return error_response(
                "invalid_verification_token", "The verification token is wrong.", 401
            )
        challenge = request.GET.get("challenge", "")
        if not challenge:
            return error_response("invalid_request", "challenge is required.", 400)
        return JsonResponse({"challenge": challenge})

    @extend_schema(
        operation_id="oura_webhook_deliver",
        summary="Receive one Oura webhook notification",
        description=(
            "Signed by Oura: `x-oura-signature` is the upper-case hex HMAC-SHA256 of "
            "`x-oura-timestamp` followed by the body, keyed with the client secret. The event "
            "is stored in Postgres before the answer; a redelivery of the same notification "
            "gets 409. 503 means nothing was stored and Oura should retry."
        ),
        parameters=[
            OpenApiParameter("x-oura-signature", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("x-oura-timestamp", str, OpenApiParameter.HEADER, required=True),
        ],
        request=NotificationSerializer,
        responses={
            200: OpenApiResponse(
                ErasedSerializer,
                description="The Oura account's person was erased: nothing was stored "
                "(answered 2xx so that Oura does not retry).",
            ),
            202: AcceptedSerializer,
            400: OpenApiResponse(
                ErrorSerializer,
                description="invalid_signature, malformed_body or invalid_notification",
            ),
            409: OpenApiResponse(ErrorSerializer, description="duplicate_event"),
            413: OpenApiResponse(ErrorSerializer, description="payload_too_large"),
            429: OpenApiResponse(ErrorSerializer, description="rate_limited"),
            503: OpenApiResponse(ErrorSerializer, description="unavailable: Oura retries"),
        },
        auth=[],
        tags=["webhooks"],
    )
    def post(self, request: HttpRequest) -> HttpResponseBase:
        refused = webhook_refusal(
            source=request.META.get("REMOTE_ADDR", ""),
            declared=request.META.get("CONTENT_LENGTH") or "0",
        )
        if refused is not None:
            return _response(refused)
        # Read at most one byte more than allowed, so a body longer than its Content-Length
        # is never buffered.
        body = request.read(settings.WEBHOOK_MAX_BODY_BYTES + 1)
        if len(body) > settings.WEBHOOK_MAX_BODY_BYTES:
            return _response(too_large())
        try:
            event = webhook_accept(body=body, headers=webhook_headers_from_meta(request.META))
        except Exception as exc:
            answer = answer_for_error(exc)
            if answer is None:
                raise
            return _response(answer)
        return _response(accepted(event))


# --- the answers, for this view and the ASGI path (ingestion/webhook_asgi.py) -------------


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: dict[str, str]
    headers: tuple[tuple[str, str], ...] = ()


def _error(code: str, detail: str, status: int, **extra: str) -> WebhookAnswer:
    return WebhookAnswer(status, error_body(code, detail, **extra))


def webhook_refusal(*, source: str, declared: str) -> WebhookAnswer | None:
    """What is refused before the body is read: a flooding source (429), a Content-Length
    that is not a number (400) or declares more than WEBHOOK_MAX_BODY_BYTES (413)."""
    if webhook_rate_limited(source=source):
        webhook_reject_counted(reason="rate_limited")
        retry_after = str(60 - int(time.time()) % 60)
        answer = _error("rate_limited", "Too many deliveries; retry later.", 429)
        return WebhookAnswer(answer.status, answer.body, (("Retry-After", retry_after),))
    if not declared.isdigit():
        webhook_reject_counted(reason="malformed_body")
        return _error("malformed_body", "Content-Length is not a number.", 400)
    if int(declared) > settings.WEBHOOK_MAX_BODY_BYTES:
        return too_large()
    return None


def too_large() -> WebhookAnswer:
    webhook_reject_counted(reason="payload_too_large")
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    return _error("payload_too_large", f"The body is larger than {limit} bytes.", 413)


def answer_for_error(exc: Exception) -> WebhookAnswer | None:
    """The answer to what webhook_accept raised; None for anything unexpected (a 500)."""
    if isinstance(exc, WebhookRejected):
        return _error(exc.code, exc.detail, exc.http_status)
    if isinstance(exc, ErasedAccount):
        return WebhookAnswer(200, {"status": "erased"})
    if isinstance(exc, DuplicateEvent):
        detail = "This notification was already accepted."
        return _error("duplicate_event", detail, 409, eventId=str(exc.event_id))
    if isinstance(exc, OperationalError | InterfaceError):
        logger.error("webhook_database_unavailable", extra={"error_type": type(exc).__name__})
        return _error("unavailable", "The event store is unavailable; retry later.", 503)
    return None


def accepted(event: RecordedEvent) -> WebhookAnswer:
    return WebhookAnswer(202, {"eventId": str(event.event_id)})


def _response(answer: WebhookAnswer) -> JsonResponse:
    response = JsonResponse(answer.body, status=answer.status)
    for name, value in answer.headers:
        response[name] = value
    return response
