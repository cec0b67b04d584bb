"""The one error shape of the HTTP API: `{"error": "<code>", "detail": "<human text>"}`.

Every view raises `ApiError` (or a DRF exception); the handler below turns both into that
shape. Codes are stable and documented; details are for humans and never carry payload
values, tokens or health data.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error with a stable machine code, an HTTP status and a human detail."""

    def __init__(self, code: str, detail: str, http_status: int = 400) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = http_status
        self.error_code = code


_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.AuthenticationFailed: "unauthenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "malformed_body",
    exceptions.ValidationError: "invalid_request",
}


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def error_response(code: str, detail: str, http_status: int, **extra: Any) -> JsonResponse:
    """For plain Django views (webhooks, health checks) that sit outside DRF."""
    return JsonResponse(error_body(code, detail, **extra), status=http_status)


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{field}: {_flatten(value)}" for field, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        # Unexpected: log the type only (the message may quote data) and answer 500.
        logger.error("unhandled_api_error", extra={"exception_type": type(exc).__name__})
        return Response(
            error_body("internal", "Internal server error."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, ApiError):
        code = exc.error_code
        detail = str(exc.detail)
    else:
        code = next((c for t, c in _DRF_CODES.items() if isinstance(exc, t)), "error")
        detail = _flatten(exc.detail) if isinstance(exc, exceptions.APIException) else str(exc)
    body = error_body(code, detail)
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        body["fields"] = exc.detail
    response.data = body
    return response
