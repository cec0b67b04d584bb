"""Response helpers shared by every route family."""

from __future__ import annotations

import json
import uuid
from typing import Any

from werkzeug.wrappers import Response


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # Compact JSON and these three headers match the recorded 2024 responses (CONTRACT 7.8).
    resp = Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )
    resp.headers["cache-control"] = "no-cache"
    resp.headers["x-trace-id"] = uuid.uuid4().hex
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def detail(status: int, message: Any, headers: dict[str, str] | None = None) -> Response:
    return json_response({"detail": message}, status, headers)


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


def oauth_error(status: int, error: str, description: str) -> Response:
    """RFC 6749 fields alongside the RFC 7807 ones, as the error-handling page promises."""
    return json_response(
        {
            "error": error,
            "error_description": description,
            "status": status,
            "title": _TITLES.get(status, "Error"),
            "detail": description,
        },
        status,
    )


def validation_error(items: list[dict[str, Any]]) -> Response:
    return json_response({"detail": items}, 422)


def pydantic_item(
    err_type: str, loc: list[str | int], msg: str, value: Any, ctx: dict[str, Any] | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {"type": err_type, "loc": loc, "msg": msg, "input": value}
    if ctx is not None:
        item["ctx"] = ctx
    item["url"] = f"https://errors.pydantic.dev/2.7/v/{err_type}"
    return item
