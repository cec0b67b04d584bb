"""The user ids we accept, defined once: `^[A-Za-z0-9_-]{1,64}$`.

A user id is the caller's own identifier for a person. It ends up in URLs, Postgres columns
of 64 characters, S3 keys (`user=<id>/`) and NATS subjects (`health.normalized.user.<id>.…`),
where `.`, `*` and `>` are syntax: erasing `a` must never purge `a.b`'s messages. So every
entry point (API paths and bodies, management commands, admin forms) checks ids against
this pattern, and the subject and key builders check again.

The `user_id` path converter (registered in core/apps.py) applies it in the URLconfs:
a bad id never reaches a view, it gets 400 `invalid_user_id` in the error shape
(`InvalidUserId` is a BadRequest, answered by core.errors.bad_request, handler400).
"""

from __future__ import annotations

import re

from django.core.exceptions import BadRequest

USER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
USER_ID_MAX_LENGTH = 64
USER_ID_DESCRIPTION = (
    f"Your identifier for the person: 1 to 64 of A-Z, a-z, 0-9, `_` and `-` (`{USER_ID_PATTERN}`)."
)
_USER_ID = re.compile(USER_ID_PATTERN)


class InvalidUserId(BadRequest):
    """A user id outside USER_ID_PATTERN. The message never quotes the id."""

    code = "invalid_user_id"

    def __init__(self) -> None:
        super().__init__(f"The user id must match {USER_ID_PATTERN}.")


def is_valid_user_id(value: object) -> bool:
    # fullmatch, not match: `$` alone would let a trailing newline through.
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None


def validate_user_id(value: object) -> str:
    """The id itself if it matches USER_ID_PATTERN; raises InvalidUserId otherwise."""
    if not is_valid_user_id(value):
        raise InvalidUserId()
    assert isinstance(value, str)
    return value


class UserIdConverter:
    """`<user_id:user_id>` in a URL pattern.

    The regex takes any path segment, so that a bad id is answered 400 (InvalidUserId from
    to_python, which Django hands to handler400) instead of falling through to a bare 404.
    """

    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return validate_user_id(value)

    def to_url(self, value: str) -> str:
        return validate_user_id(value)
