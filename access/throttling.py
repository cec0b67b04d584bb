"""Per-key request throttling, kept in Postgres-free process memory via Django's cache."""

from __future__ import annotations

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from access.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_rate(self) -> str:
        return f"{settings.API_RATE_LIMIT_PER_MINUTE}/min"

    def get_cache_key(self, request: Request, view: object) -> str | None:
        if isinstance(request.user, ApiKey):
            return f"throttle:key:{request.user.pk}"
        return None
