"""Serializers shared by every API: the one error shape, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.identifiers import (
    USER_ID_DESCRIPTION,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
    InvalidUserId,
    is_valid_user_id,
)


class ErrorSerializer(serializers.Serializer[dict[str, Any]]):
    error = serializers.CharField(help_text="Stable machine-readable code.")
    detail = serializers.CharField(help_text="Human-readable explanation.")


def _full_user_id(value: str) -> None:
    # RegexValidator searches, and `$` matches before a trailing newline: check it whole.
    if not is_valid_user_id(value):
        raise serializers.ValidationError(str(InvalidUserId()), code=InvalidUserId.code)


class UserIdField(serializers.RegexField):
    """A user id in a request body: core.identifiers.USER_ID_PATTERN, as is (no trimming)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", USER_ID_DESCRIPTION)
        super().__init__(
            USER_ID_PATTERN,
            max_length=USER_ID_MAX_LENGTH,
            trim_whitespace=False,
            validators=[_full_user_id],
            **kwargs,
        )
