"""REST v1 reads of normalized Oura data: daily summaries, workouts and sessions, sleep
periods, sleep time, tags, rest mode periods.

Views are thin: check the key may see the user (404 otherwise, before anything else so a bad
request cannot tell whether the user exists), validate the query, call a selector, and send
the DTO page. Responses are written by pydantic (see normalized/dtos.py for why); the daily
page, up to 366 nested entries, by Postgres (`selectors.daily_page_json`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from access.models import Scope
from access.permissions import HasScope, ensure_user_access
from access.throttling import ApiKeyRateThrottle
from core.identifiers import USER_ID_MAX_LENGTH, USER_ID_PATTERN
from core.serializers import ErrorSerializer
from normalized import dtos, selectors, serializers
from normalized.selectors import activity_list, daily_page_json, heartrate_list, sleep_period_list
from normalized.serializers import (
    MAX_SERIES_RANGE_DAYS,
    DayRangeFilterSerializer,
    KeysetRangeFilterSerializer,
    TimeRangeFilterSerializer,
    day_cursor,
    keyset_cursor,
    limit_field,
    time_cursor,
)

# --- OpenAPI ------------------------------------------------------------------------------


class _OpenApi30JsonSchema(GenerateJsonSchema):
    """Pydantic writes JSON Schema 2020-12; the document is OpenAPI 3.0, which has no
    `type: null` but a `nullable` flag (and no siblings next to a `$ref`)."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if "$ref" in inner:
            return {"allOf": [inner], "nullable": True}
        return {**inner, "nullable": True}

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # titles repeat the property names and clutter Swagger UI


# drf-spectacular ships no type hints, hence the no-untyped-call ignores below.
class DtoSchemaExtension(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]  # drf-spectacular is untyped
    """Lets `extend_schema(responses=...)` take the DTOs of normalized/dtos.py.

    Like drf-spectacular's own pydantic extension, but scoped to our DTO base class and
    emitting OpenAPI 3.0 nullables.
    """

    target_class = "normalized.dtos.ApiModel"
    match_subclasses = True
    priority = 1  # ahead of drf_spectacular.contrib.pydantic

    def get_name(self, auto_schema: Any, direction: Any) -> str:
        name: str = self.target.__name__
        return name

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = self.target.model_json_schema(
            ref_template="#/components/schemas/{model}",
            mode="serialization",
            schema_generator=_OpenApi30JsonSchema,
        )
        for name, sub_schema in schema.pop("$defs", {}).items():
            auto_schema.registry.register_on_missing(
                ResolvedComponent(  # type: ignore[no-untyped-call]  # drf-spectacular is untyped
                    name=name, type=ResolvedComponent.SCHEMA, object=name, schema=sub_schema
                )
            )
        schema.pop("title", None)
        result: dict[str, Any] = schema
        return result


USER_ID = OpenApiParameter(
    "user_id",
    {"type": "string", "pattern": USER_ID_PATTERN, "maxLength": USER_ID_MAX_LENGTH},
    OpenApiParameter.PATH,
    description="The person's id in this system (`" + USER_ID_PATTERN + "`; anything else "
    "is 400 `invalid_user_id`). A key that may not read this user gets 404, whether or not "
    "the user exists.",
)


def _errors() -> dict[int, OpenApiResponse]:
    described = {
        400: "invalid_request: a query parameter is missing or wrong; `detail` names it.",
        401: "unauthenticated: no key, or an unknown, revoked or expired one.",
        403: "forbidden: the key lacks the health:read scope.",
        404: "not_found: the key may not read this user (or the user is unknown).",
        429: "rate_limited: too many requests for this key; retry after Retry-After seconds.",
    }
    return {
        code: OpenApiResponse(ErrorSerializer, description=text) for code, text in described.items()
    }


def _json(page: dtos.ApiModel) -> HttpResponse:
    # pydantic writes the bytes itself: several times faster than DRF's JSONRenderer here.
    return HttpResponse(page.model_dump_json(), content_type="application/json")


class _HealthReadApi(APIView):
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    required_scope = Scope.READ


# --- Views --------------------------------------------------------------------------------


class OuraDailyListApi(_HealthReadApi):
    class FilterSerializer(DayRangeFilterSerializer):
        # A 366-day range fits one page when asked for: a year is one request.
        limit = limit_field(default=100, maximum=366)

    @extend_schema(
        operation_id="oura_daily_list",
        summary="A person's daily Oura summaries",
        description="One entry per day in [start, end] that has any daily summary "
        "(readiness, sleep, activity, stress, SpO2, resilience, cardiovascular age, VO2 max), "
        "in ascending day order. A part Oura has not produced for a day is null. "
        "`sleep.mainPeriod` summarises the night's long_sleep period.",
        parameters=[USER_ID, FilterSerializer],
        responses={200: dtos.OuraDailyPage, **_errors()},
        tags=["health data"],
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        ensure_user_access(request, user_id)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        query = filters.validated_data
        page = daily_page_json(
            user_id=user_id,
            start=query.get("position", query["start"]),
            end=query["end"],
            limit=query["limit"],
        )
        next_cursor = None if page.next_day is None else day_cursor(page.next_day)
        # The entries are JSON written by Postgres; only the envelope is written here.
        body = f'{{"data":[{page.entries}],"nextCursor":{json.dumps(next_cursor)}}}'
        return HttpResponse(body.encode(), content_type="application/json")


def _keyset_page(
    request: Request,
    user_id: str,
    filter_class: type[KeysetRangeFilterSerializer],
    selector: Callable[..., QuerySet[Any]],
    *,
    page: type[Any],
    item: type[Any],
    sort_key: Callable[[Any], Any],
) -> HttpResponse:
    """One page of a (sort key, id)-ordered list: fetch limit + 1 rows to know if more exist."""
    ensure_user_access(request, user_id)
    filters = filter_class(data=request.query_params)
    filters.is_valid(raise_exception=True)
    query = filters.validated_data
    limit: int = query["limit"]
    rows = list(
        selector(
            user_id=user_id, start=query["start"], end=query["end"], after=query.get("position")
        )[: limit + 1]
    )
    last = rows[limit - 1] if len(rows) > limit else None
    return _json(
        page(
            data=[item.model_validate(row) for row in rows[:limit]],
            next_cursor=None
            if last is None
            else keyset_cursor(filter_class.cursor_kind, sort_key(last), last.pk),
        )
    )


class OuraActivityListApi(_HealthReadApi):
    class FilterSerializer(KeysetRangeFilterSerializer):
        cursor_kind = "activities"
        limit = limit_field(default=100, maximum=1000)

    @extend_schema(
        operation_id="oura_activity_list",
        summary="A person's workouts and sessions",
        description="Workouts and sessions (meditation, breathing, naps, ...) whose Oura day "
        "is in [start, end], ordered by start time, then id.",
        parameters=[USER_ID, FilterSerializer],
        responses={200: dtos.OuraActivityPage, **_errors()},
        tags=["health data"],
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        return _keyset_page(
            request, user_id, self.FilterSerializer, activity_list,
            page=dtos.OuraActivityPage, item=dtos.OuraActivity, sort_key=attrgetter("start"),
        )  # fmt: skip


class OuraSleepPeriodListApi(_HealthReadApi):
    class FilterSerializer(KeysetRangeFilterSerializer):
        cursor_kind = "sleep"
        limit = limit_field(default=100, maximum=1000)

    @extend_schema(
        operation_id="oura_sleep_period_list",
        summary="A person's sleep periods",
        description="Sleep periods (long sleep, naps, rest) whose Oura day is in [start, end], "
        "ordered by bedtime start, then id.",
        parameters=[USER_ID, FilterSerializer],
        responses={200: dtos.OuraSleepPeriodPage, **_errors()},
        tags=["health data"],
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        return _keyset_page(
            request, user_id, self.FilterSerializer, sleep_period_list,
            page=dtos.OuraSleepPeriodPage, item=dtos.OuraSleepPeriod,
            sort_key=attrgetter("bedtime_start"),
        )  # fmt: skip


# --- Sleep time, tags and rest mode -------------------------------------------------------


def _day_keyset_page(
    request: Request,
    user_id: str,
    filter_class: type[serializers.DayKeysetRangeFilterSerializer],
    selector: Callable[..., QuerySet[Any]],
    *,
    page: type[Any],
    item: type[Any],
) -> HttpResponse:
    """`_keyset_page` for lists ordered by (day, id)."""
    ensure_user_access(request, user_id)
    filters = filter_class(data=request.query_params)
    filters.is_valid(raise_exception=True)
    query = filters.validated_data
    limit: int = query["limit"]
    rows = list(
        selector(
            user_id=user_id, start=query["start"], end=query["end"], after=query.get("position")
        )[: limit + 1]
    )
    last = rows[limit - 1] if len(rows) > limit else None
    return _json(
        page(
            data=[item.model_validate(row) for row in rows[:limit]],
            next_cursor=None
            if last is None
            else serializers.day_keyset_cursor(filter_class.cursor_kind, last.day, last.pk),
        )
    )


class OuraSleepTimeListApi(_HealthReadApi):
    class FilterSerializer(serializers.DayKeysetRangeFilterSerializer):
        cursor_kind = "sleep_time"
        limit = limit_field(default=100, maximum=1000)

    @extend_schema(
        operation_id="oura_sleep_time_list",
        summary="A person's bedtime recommendations",
        description="Oura's sleep time (its recommended bedtime window) for the days in "
        "[start, end], ordered by day, then id.",
        parameters=[USER_ID, FilterSerializer],
        responses={200: dtos.OuraSleepTimePage, **_errors()},
        tags=["health data"],
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        return _day_keyset_page(
            request, user_id, self.FilterSerializer, selectors.sleep_time_list,
            page=dtos.OuraSleepTimePage, item=dtos.OuraSleepTime,
        )  # fmt: skip


class OuraTagListApi(_HealthReadApi):
    # One list for enhanced tags and Oura's deprecated plain tags, each saying which (`kind`),
    # as /activities does for workouts and sessions. A client asks "what did this person tag
    # when", and a person whose older app wrote plain tags has them only on the deprecated
    # route; two endpoints would make every client read both and merge them by time itself.
    class FilterSerializer(KeysetRangeFilterSerializer):
        cursor_kind = "tags"
        limit = limit_field(default=100, maximum=1000)

    @extend_schema(
        operation_id="oura_tag_list",
        summary="A person's tags",
        description="Tags the person added in the Oura app (enhanced tags, and the deprecated "
        "plain tags with `kind` tag) whose start day is in [start, end], ordered by start "
        "time, then id.",
        parameters=[USER_ID, FilterSerializer],
        responses={200: dtos.OuraTagPage, **_errors()},
        tags=["health data"],
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        return _keyset_page(
            request, user_id, self.FilterSerializer, selectors.tag_list,
            page=dtos.OuraTagPage, item=dtos.OuraTag, sort_key=attrgetter("start"),
        )  # fmt: skip


class OuraRestModePeriodListApi(_HealthReadApi):
    class FilterSerializer(serializers.DayKeysetRangeFilterSerializer):
        cursor_kind = "rest_mode_periods"
        limit = limit_field(default=100, maximum=1000)

    @extend_schema(
        operation_id="oura_rest_mode_period_list",
        summary="A person's rest mode periods",
        description="Rest mode periods that overlap [start, end]: started on or before `end` "
        "and ended on or after `start`, or still on. Ordered by start day, then id.",
        parameters=[USER_ID, FilterSerializer],
        responses={200: dtos.OuraRestModePeriodPage, **_errors()},
        tags=["health data"],
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        return _day_keyset_page(
            request, user_id, self.FilterSerializer, selectors.rest_mode_period_list,
            page=dtos.OuraRestModePeriodPage, item=dtos.OuraRestModePeriod,
        )  # fmt: skip


# --- Heart rate ---------------------------------------------------------------------------


class OuraHeartRateListApi(_HealthReadApi):
    class FilterSerializer(TimeRangeFilterSerializer):
        cursor_kind = "heartrate"
        # ~1 KB of JSON per 20 samples: a 5000-sample page is ~250 KB, a day of workouts.
        limit = limit_field(default=1000, maximum=5000)

    @extend_schema(
        operation_id="oura_heart_rate_list",
        summary="A person's heart rate samples",
        description="Oura's heart rate time series: samples with start_datetime <= timestamp "
        "< end_datetime, in ascending time order, one per instant. About one sample every "
        "5 minutes at rest and every few seconds during a workout. The range spans at most "
        f"{MAX_SERIES_RANGE_DAYS} days; page through it with `cursor`.",
        parameters=[USER_ID, FilterSerializer],
        responses={200: dtos.OuraHeartRatePage, **_errors()},
        tags=["health data"],
    )
    def get(self, request: Request, user_id: str) -> HttpResponse:
        ensure_user_access(request, user_id)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        query = filters.validated_data
        limit: int = query["limit"]
        rows = list(
            heartrate_list(
                user_id=user_id, start=query["start"], end=query["end"],
                after=query.get("position"),
            ).values_list("timestamp", "bpm", "source")[: limit + 1]
        )  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        return _json(
            dtos.OuraHeartRatePage(
                data=[
                    dtos.OuraHeartRateSample(timestamp=moment, bpm=bpm, source=source)
                    for moment, bpm, source in rows
                ],
                next_cursor=time_cursor(self.FilterSerializer.cursor_kind, rows[-1][0])
                if more
                else None,
            )
        )
