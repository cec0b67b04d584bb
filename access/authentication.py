"""`Authorization: Bearer <key>` authentication for the REST API."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from access.models import ApiKey
from access.selectors import api_key_by_hash
from access.services import KEY_PREFIX, hash_key

# Writing last_used_at on every request would turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKey, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.startswith(KEY_PREFIX):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        key = api_key_by_hash(hash_key(secret.strip()))
        now = timezone.now()
        # One message for unknown, revoked and expired keys: nothing to learn by probing.
        if key is None or not key.is_active(now):
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return key, key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
