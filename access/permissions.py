"""Scope and per-user checks shared by every v1 endpoint."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from access.models import ApiKey


class HasScope(permissions.BasePermission):
    """The view declares `required_scope`; the key must carry it (403 otherwise)."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.user
        if not isinstance(key, ApiKey):
            return False
        required = getattr(view, "required_scope", None)
        return required is None or required in key.scopes


def ensure_user_access(request: Request, user_id: str) -> None:
    """404 for a user the key may not act on, so a user's existence does not leak."""
    key = request.user
    if not isinstance(key, ApiKey) or not key.may_access_user(user_id):
        raise exceptions.NotFound("Not found.")
