"""Connect and disconnect a user's Oura account."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from access.permissions import HasScope, ensure_user_access
from access.throttling import ApiKeyRateThrottle
from core.errors import ApiError
from core.serializers import ErrorSerializer
from ingestion.connection_services import (
    ConnectError,
    connection_authorize,
    connection_complete,
    connection_disconnect,
    connection_start,
)
from ingestion.selectors import connection_for_user

# The cookie that binds a sign-in to the browser that opened the ticket. Sent only to the
# start step and the callback; Lax, because Oura's redirect back is a cross-site navigation.
BROWSER_COOKIE = "oura_oauth_browser"
BROWSER_COOKIE_PATH = "/v1/oauth/oura/"


class OuraConnectionApi(APIView):
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    required_scope = Scope.CONNECT

    @extend_schema_serializer(component_name="OuraConnectionStart")
    class OutputSerializer(serializers.Serializer[dict[str, str]]):
        authorizeUrl = serializers.URLField()

    @extend_schema(
        operation_id="oura_connection_start",
        summary="Start connecting a user's Oura account",
        description="Returns the URL to send the person's browser to. It is our own start "
        "step (`GET /v1/oauth/oura/start?ticket=...`), not Oura: the ticket works once and "
        "expires after OURA_OAUTH_STATE_TTL_S seconds. Opening it sets an HttpOnly cookie "
        "(SameSite=Lax, path /v1/oauth/oura/) and redirects to Oura's authorize page with a "
        "state bound to this user and to that browser; the callback links the account only "
        "when the same browser comes back with that cookie, and then shows the last six "
        "characters of the linked Oura account id. Send the URL only to the person whose "
        "account is to be connected.",
        request=None,
        responses={
            200: OutputSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
            429: ErrorSerializer,
        },
        tags=["connections"],
    )
    def post(self, request: Request, user_id: str) -> Response:
        ensure_user_access(request, user_id)
        url = connection_start(user_id=user_id)
        return Response(self.OutputSerializer({"authorizeUrl": url}).data)

    @extend_schema(
        operation_id="oura_connection_delete",
        summary="Disconnect a user's Oura account",
        description="Revokes the tokens at Oura, deletes them here and marks the connection "
        "revoked. Later webhook deliveries for the Oura user are accepted and dropped.",
        responses={
            204: OpenApiResponse(description="Disconnected (or already disconnected)."),
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
            429: ErrorSerializer,
        },
        tags=["connections"],
    )
    def delete(self, request: Request, user_id: str) -> Response:
        ensure_user_access(request, user_id)
        connection = connection_for_user(user_id=user_id)
        if connection is None:
            raise ApiError("not_found", "This user has no Oura connection.", 404)
        connection_disconnect(connection=connection, actor=f"api_key:{request.user.pk}")
        return Response(status=status.HTTP_204_NO_CONTENT)


def _result_page(request: HttpRequest, context: dict[str, object], status: int) -> HttpResponse:
    return render(request, "ingestion/oauth_result.html", context, status=status)


@never_cache
@require_GET
def oura_oauth_start(request: HttpRequest) -> HttpResponse:
    """The person's browser opens the ticket here; it leaves with a cookie, bound to the flow."""
    try:
        binding = connection_authorize(ticket=request.GET.get("ticket", ""))
    except ConnectError as exc:
        return _result_page(request, {"ok": False, "code": exc.code, "message": str(exc)}, 400)
    response = HttpResponseRedirect(binding.authorize_url)
    response.set_cookie(
        BROWSER_COOKIE,
        binding.nonce,
        max_age=settings.OURA_OAUTH_STATE_TTL_S,
        path=BROWSER_COOKIE_PATH,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )
    return response


@never_cache
@require_GET
def oura_oauth_callback(request: HttpRequest) -> HttpResponse:
    """Where Oura sends the person back. Answers with a plain page for a human."""
    try:
        linked = connection_complete(
            state=request.GET.get("state", ""),
            code=request.GET.get("code"),
            error=request.GET.get("error"),
            browser_nonce=request.COOKIES.get(BROWSER_COOKIE),
        )
    except ConnectError as exc:
        response = _result_page(request, {"ok": False, "code": exc.code, "message": str(exc)}, 400)
    else:
        response = _result_page(
            request,
            {
                "ok": True,
                "account_suffix": linked.account_suffix,
                "masked_email": linked.masked_email,
            },
            200,
        )
    response.delete_cookie(BROWSER_COOKIE, path=BROWSER_COOKIE_PATH, samesite="Lax")
    return response
