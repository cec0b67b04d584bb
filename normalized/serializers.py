"""Query parameters shared by the read APIs: a day range, a page size and an opaque cursor."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from rest_framework import serializers

MAX_RANGE_DAYS = 366  # a leap year, inclusive of both ends

_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class IsoDayField(serializers.DateField):
    """YYYY-MM-DD only. `date.fromisoformat` alone would also take 20240101 and 2024-W01-1."""

    def to_internal_value(self, value: Any) -> date:
        if not isinstance(value, str) or not _ISO_DAY.match(value):
            raise serializers.ValidationError("Must be a date in YYYY-MM-DD format.")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise serializers.ValidationError("Not a valid calendar date.") from None


class InvalidCursor(ValueError):
    pass


def encode_cursor(kind: str, position: dict[str, Any]) -> str:
    raw = json.dumps({"k": kind, **position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> dict[str, Any]:
    """The position in a cursor this endpoint issued; InvalidCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor from None
    if not isinstance(position, dict) or position.pop("k", None) != kind:
        raise InvalidCursor
    return position


def day_cursor(day: date) -> str:
    return encode_cursor("daily", {"d": day.isoformat()})


def day_from_cursor(cursor: str) -> date:
    position = decode_cursor("daily", cursor)
    try:
        return date.fromisoformat(str(position["d"]))
    except (KeyError, ValueError):
        raise InvalidCursor from None


def keyset_cursor(kind: str, moment: datetime, row_id: int) -> str:
    return encode_cursor(kind, {"t": moment.isoformat(), "i": row_id})


def keyset_from_cursor(kind: str, cursor: str) -> tuple[datetime, int]:
    position = decode_cursor(kind, cursor)
    try:
        moment = datetime.fromisoformat(str(position["t"]))
        row_id = position["i"]
    except (KeyError, ValueError):
        raise InvalidCursor from None
    if moment.tzinfo is None or not isinstance(row_id, int) or isinstance(row_id, bool):
        raise InvalidCursor
    try:
        # An offset can carry a valid local time past year 9999 or before year 1 in UTC,
        # which no datetime (and so no query parameter) can hold. We never issue one.
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise InvalidCursor from None
    return moment, row_id


def limit_field(*, default: int, maximum: int) -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        default=default,
        min_value=1,
        max_value=maximum,
        help_text=f"Page size, 1-{maximum} (default {default}).",
    )


class RangeFilterSerializer(serializers.Serializer[dict[str, Any]]):
    """start/end (inclusive) and an opaque cursor; each API adds its own `limit` field."""

    start = IsoDayField(help_text="First day, inclusive (YYYY-MM-DD, Oura's day of the data).")
    end = IsoDayField(
        help_text=f"Last day, inclusive (YYYY-MM-DD). The range spans at most {MAX_RANGE_DAYS} "
        "days, counting both ends."
    )
    cursor = serializers.CharField(
        required=False,
        help_text="Opaque `nextCursor` of the previous page, sent with the same start and end.",
    )

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        # DRF reads a blank optional field of a query string (`cursor=`, `limit=`) as if it
        # were absent. The schema says a cursor is non-empty and a limit a number, so a
        # blank one is refused like any other value that is neither.
        blank = {
            name: ["May not be blank."]
            for name, field in self.fields.items()
            if not field.required and hasattr(data, "get") and data.get(name) == ""
        }
        if blank:
            raise serializers.ValidationError(blank)
        validated: dict[str, Any] = super().to_internal_value(data)
        return validated

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start: date = attrs["start"]
        end: date = attrs["end"]
        if end < start:
            raise serializers.ValidationError({"end": "Must be on or after start."})
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise serializers.ValidationError(
                {"end": f"The range may span at most {MAX_RANGE_DAYS} days."}
            )
        if "cursor" in attrs:
            try:
                attrs["position"] = self.decode_position(attrs.pop("cursor"), start, end)
            except InvalidCursor:
                raise serializers.ValidationError(
                    {"cursor": "Not a cursor this endpoint issued for this range."}
                ) from None
        return attrs

    def decode_position(self, cursor: str, start: date, end: date) -> object:
        """Each endpoint's subclass knows its own cursor format."""
        raise NotImplementedError(f"{type(self).__name__} must decode its cursors")


class DayRangeFilterSerializer(RangeFilterSerializer):
    """Validated data: start, end, limit and `position`, the first day of the page."""

    def decode_position(self, cursor: str, start: date, end: date) -> date:
        day = day_from_cursor(cursor)
        if not start <= day <= end:
            raise InvalidCursor
        return day


class KeysetRangeFilterSerializer(RangeFilterSerializer):
    """Validated data: start, end, limit and `position`, the (time, id) of the last row seen."""

    cursor_kind: ClassVar[str]

    def decode_position(self, cursor: str, start: date, end: date) -> tuple[datetime, int]:
        return keyset_from_cursor(self.cursor_kind, cursor)
