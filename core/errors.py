"""The one error shape of the HTTP API: `{"error": "<code>", "detail": "<human text>"}`.

Every view raises `ApiError` (or a DRF exception); the handler below turns both into that
shape. Codes are stable and documented; details are for humans and never carry payload
values, tokens or health data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.identifiers import InvalidUserId

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
    if isinstance(exc, InvalidUserId):
        exc = ApiError(InvalidUserId.code, str(exc), 400)
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


# --- outside DRF: every other view, and what Django answers itself ------------------------


# Paths a human reaches with a browser and that keep Django's HTML pages: the admin (at
# settings.ADMIN_URL_PREFIX) and static files.
def answers_json(request: HttpRequest) -> bool:
    """Whether errors on this path answer in the error shape (everything but the admin's
    pages and static files, which browsers read)."""
    return not request.path_info.startswith((f"/{settings.ADMIN_URL_PREFIX}", "/static/"))


class UnhandledErrorMiddleware:
    """An exception any view lets through (the webhook, the OAuth callback, the probes,
    /metrics; DRF views have exception_handler above) answers 500 `internal` in the error
    shape. Neither the message nor the path is logged or answered: both may quote data.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, (Http404, PermissionDenied, BadRequest, SuspiciousOperation)):
            return None  # Django answers these through the handlers below
        if not answers_json(request):
            return None
        logger.error("unhandled_error", extra={"exception_type": type(exception).__name__})
        # What Django sends for an uncaught exception, so error reporting (Sentry) sees it.
        signals.got_request_exception.send(sender=type(self), request=request)
        return error_response("internal", "Internal server error.", 500)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: an id outside the pattern (the `user_id` path converter), a bad Host..."""
    if not answers_json(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, InvalidUserId):
        return error_response(InvalidUserId.code, str(exception), 400)
    return error_response("bad_request", "The request is malformed.", 400)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: no such path."""
    if not answers_json(request):
        return defaults.page_not_found(request, exception)
    return error_response("not_found", "Not found.", 404)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: whatever escaped everything else."""
    if not answers_json(request):
        return defaults.server_error(request)
    return error_response("internal", "Internal server error.", 500)
