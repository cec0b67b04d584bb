"""Teaches drf-spectacular how API keys authenticate, so every v1 operation documents it."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]  # drf-spectacular is untyped
    target_class = "access.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `manage.py create_api_key` or the admin, sent as "
            "`Authorization: Bearer <key>`. Keys carry scopes (health:read, health:sync, "
            "health:connect) and may be limited to some users; other users answer 404.",
        }
