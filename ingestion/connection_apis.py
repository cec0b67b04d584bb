"""Connect and disconnect a user's Oura account."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
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
    connection_complete,
    connection_disconnect,
    connection_start,
)
from ingestion.selectors import connection_for_user


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
        description="Returns the Oura authorize URL to send the person to. The state in it "
        "is bound to this user, single use, and expires (OURA_OAUTH_STATE_TTL_S).",
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


@require_GET
def oura_oauth_callback(request: HttpRequest) -> HttpResponse:
    """Where Oura sends the person back. Answers with a plain page for a human."""
    try:
        connection = connection_complete(
            state=request.GET.get("state", ""),
            code=request.GET.get("code"),
            error=request.GET.get("error"),
        )
    except ConnectError as exc:
        return render(
            request,
            "ingestion/oauth_result.html",
            {"ok": False, "code": exc.code, "message": str(exc)},
            status=400,
        )
    return render(
        request,
        "ingestion/oauth_result.html",
        {"ok": True, "user_id": connection.user_id},
    )
