"""Query parameters shared by the read APIs: a day range, a page size and an opaque cursor."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
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


def day_keyset_cursor(kind: str, day: date, row_id: int) -> str:
    return encode_cursor(kind, {"d": day.isoformat(), "i": row_id})


def day_keyset_from_cursor(kind: str, cursor: str) -> tuple[date, int]:
    position = decode_cursor(kind, cursor)
    day_text, row_id = position.get("d"), position.get("i")
    # Only the form we issue: a YYYY-MM-DD string and an integer id.
    if not isinstance(day_text, str) or not _ISO_DAY.match(day_text):
        raise InvalidCursor
    if not isinstance(row_id, int) or isinstance(row_id, bool):
        raise InvalidCursor
    try:
        return date.fromisoformat(day_text), row_id
    except ValueError:
        raise InvalidCursor from None


class DayKeysetRangeFilterSerializer(RangeFilterSerializer):
    """Validated data: start, end, limit and `position`, the (day, id) of the last row seen,
    for lists ordered by day (sleep time, rest mode periods)."""

    cursor_kind: ClassVar[str]

    def decode_position(self, cursor: str, start: date, end: date) -> tuple[date, int]:
        return day_keyset_from_cursor(self.cursor_kind, cursor)


# --- Time ranges (heart rate) -------------------------------------------------------------

MAX_SERIES_RANGE_DAYS = 31  # a month of samples, at most two monthly partitions


@extend_schema_field(OpenApiTypes.DATETIME)
class OffsetDateTimeField(serializers.Field[datetime, datetime, str, Any]):
    """ISO 8601 with a UTC offset (`Z` or `+02:00`), read as UTC. A naive time is refused:
    whose midnight it means would be a guess."""

    def to_internal_value(self, data: Any) -> datetime:
        if not isinstance(data, str) or len(data) > 40:
            raise serializers.ValidationError("Must be an ISO 8601 date-time with an offset.")
        try:
            moment = datetime.fromisoformat(data)
        except ValueError:
            hint = " (send + as %2B)" if " " in data else ""
            raise serializers.ValidationError(
                f"Must be an ISO 8601 date-time with an offset{hint}."
            ) from None
        if moment.tzinfo is None:
            raise serializers.ValidationError("Must include a UTC offset, e.g. Z or +02:00.")
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # a local time whose UTC instant leaves the calendar
            raise serializers.ValidationError("Out of range.") from None

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


def time_cursor(kind: str, moment: datetime) -> str:
    return encode_cursor(kind, {"t": moment.astimezone(UTC).isoformat()})


def time_from_cursor(kind: str, cursor: str) -> datetime:
    position = decode_cursor(kind, cursor)
    try:
        moment = datetime.fromisoformat(str(position["t"]))
    except (KeyError, ValueError):
        raise InvalidCursor from None
    if moment.tzinfo is None:
        raise InvalidCursor
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidCursor from None


class TimeRangeFilterSerializer(RangeFilterSerializer):
    """start_datetime (inclusive), end_datetime (exclusive), limit and an opaque cursor.

    Validated data: start, end, limit and `position`, the timestamp of the last row seen
    (the rows of a time series are unique per timestamp, so it alone is the keyset).
    """

    cursor_kind: ClassVar[str]
    # DRF drops an inherited field set to None: the day fields do not apply here.
    start = None  # type: ignore[assignment]  # DRF's documented way to remove a parent's field
    end = None  # type: ignore[assignment]  # as above
    start_datetime = OffsetDateTimeField(
        help_text="First instant, inclusive (ISO 8601 with offset; send + as %2B)."
    )
    end_datetime = OffsetDateTimeField(
        help_text=f"End instant, exclusive. The range spans at most {MAX_SERIES_RANGE_DAYS} days."
    )
    cursor = serializers.CharField(
        required=False,
        help_text="Opaque `nextCursor` of the previous page, sent with the same range.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start: datetime = attrs.pop("start_datetime")
        end: datetime = attrs.pop("end_datetime")
        if end <= start:
            raise serializers.ValidationError({"end_datetime": "Must be after start_datetime."})
        if (end - start).total_seconds() > MAX_SERIES_RANGE_DAYS * 86400:
            raise serializers.ValidationError(
                {"end_datetime": f"The range may span at most {MAX_SERIES_RANGE_DAYS} days."}
            )
        attrs |= {"start": start, "end": end}
        if "cursor" in attrs:
            try:
                position = time_from_cursor(self.cursor_kind, attrs.pop("cursor"))
            except InvalidCursor:
                position = None
            if position is None or not start <= position < end:
                raise serializers.ValidationError(
                    {"cursor": "Not a cursor this endpoint issued for this range."}
                )
            attrs["position"] = position
        return attrs
