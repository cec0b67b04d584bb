"""The backfill jobs API: start, read, cancel and retry a job. One view per operation."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from access.permissions import HasScope, ensure_user_access
from access.throttling import ApiKeyRateThrottle
from core.errors import ApiError
from core.serializers import ErrorSerializer, UserIdField
from ingestion.data_types import ALIASES, BACKFILL_TYPES, DEFAULT_TYPES, canonical
from jobs.models import IngestionJob
from jobs.selectors import job_get, job_type_statuses
from jobs.services import JobRequestInvalid, job_cancel, job_retry, job_start

_ERRORS = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
    429: ErrorSerializer,
}


def _job_for_key(request: Request, job_id: str) -> IngestionJob:
    job = job_get(job_id=job_id)
    if job is None:
        raise ApiError("not_found", "Not found.", 404)
    ensure_user_access(request, job.user_id)  # a job of someone else's user is "not found"
    return job


Status = IngestionJob.Status


class DataTypeField(serializers.ChoiceField):
    """A backfill data type: its registry name, or an alias (the webhook spelling) on input.

    The choices, and so the OpenAPI enum, are the registry names only: listing `vo2_max` next
    to `vO2_max` gives an enum whose members differ only in case, which client generators
    refuse ("Duplicate key VO2_MAX"). An alias is turned into its registry name before the
    choice check, so the validated value, and everything the API answers, is canonical.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=sorted(BACKFILL_TYPES), **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(canonical(data) if isinstance(data, str) else data)


def _actor(request: Request) -> str:
    return f"api_key:{request.user.pk}"


class JobStartApi(APIView):
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    required_scope = Scope.SYNC

    class InputSerializer(serializers.Serializer[dict[str, Any]]):
        class RangeSerializer(serializers.Serializer[dict[str, Any]]):
            start = serializers.DateField(help_text="First day, inclusive (UTC).")
            end = serializers.DateField(help_text="Last day, inclusive (UTC).")

        userId = UserIdField()
        range = RangeSerializer()
        dataTypes = serializers.ListField(
            child=DataTypeField(),
            required=False,
            allow_empty=False,
            help_text="Oura collections to page. Default: every document collection the "
            f"connection's scopes grant ({', '.join(DEFAULT_TYPES)}). The time series "
            "heartrate and ring_battery_level only when named. Also accepted, and answered "
            "by their registry name: "
            + ", ".join(f"{alias} (= {name})" for alias, name in sorted(ALIASES.items()))
            + ".",
        )

    @extend_schema_serializer(component_name="JobStarted")
    class OutputSerializer(serializers.Serializer[dict[str, Any]]):
        jobId = serializers.UUIDField()
        status = serializers.ChoiceField(choices=IngestionJob.Status.choices)

    @extend_schema(
        operation_id="oura_sync_start",
        summary="Start a backfill of a user's Oura data",
        description="Queues a job that pages each data type over the range, stores every "
        "page raw and hands it to the normalizer. If an identical job (same user, range and "
        "data types) is queued or running, that job is returned instead of a second one. "
        "409 `not_connected` / `needs_reauth` when the user has no usable Oura connection; "
        "400 `scope_not_granted` when a named type needs a scope the connection lacks.",
        request=InputSerializer,
        responses={202: OutputSerializer, 409: ErrorSerializer, **_ERRORS},
        examples=[
            OpenApiExample(
                "Two years of every type",
                value={"userId": "user-1", "range": {"start": "2024-01-01", "end": "2025-12-31"}},
                request_only=True,
            )
        ],
        tags=["sync"],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        ensure_user_access(request, data["userId"])
        try:
            started = job_start(
                user_id=data["userId"],
                start=data["range"]["start"],
                end=data["range"]["end"],
                data_types=data.get("dataTypes"),
                requested_by=_actor(request),
            )
        except JobRequestInvalid as exc:
            raise ApiError(exc.code, str(exc), exc.http_status) from None
        body = {"jobId": started.job.job_id, "status": started.job.status}
        return Response(self.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class JobTypeErrorSerializer(serializers.Serializer[dict[str, Any]]):
    error = serializers.ChoiceField(
        choices=["not_found", "retries_exhausted", "request_error"],
        help_text="not_found: Oura answered 404 for the collection; retries_exhausted: 5xx, "
        "timeouts or 429 outlasted the retries; request_error: a 4xx that is not retried.",
    )
    detail = serializers.CharField(help_text="Collection, window and cause.")
    at = serializers.DateTimeField()


class JobStatusOutputSerializer(serializers.Serializer[IngestionJob]):
    jobId = serializers.UUIDField(source="job_id")
    userId = serializers.CharField(source="user_id")
    status = serializers.ChoiceField(choices=IngestionJob.Status.choices)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    range = serializers.SerializerMethodField()
    dataTypes = serializers.ListField(
        child=serializers.CharField(), source="data_types",
        help_text="Registry names (an alias given on input is answered by its registry name); "
        "the keys of countsPerType, statusPerType and errorsPerType are the same names.",
    )  # fmt: skip
    countsPerType = serializers.DictField(
        child=serializers.IntegerField(), source="counts",
        help_text="Documents fetched so far, per data type.",
    )  # fmt: skip
    cancelRequested = serializers.BooleanField(source="cancel_requested")
    createdAt = serializers.DateTimeField(source="created_at")
    startedAt = serializers.DateTimeField(source="started_at", allow_null=True)
    updatedAt = serializers.DateTimeField(source="updated_at")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    lastError = serializers.CharField(source="last_error", allow_null=True)
    statusPerType = serializers.SerializerMethodField(
        method_name="get_status_per_type",
        help_text="Each data type's state: pending, running, succeeded, failed, or skipped "
        "(the job ended before reaching it).",
    )
    errorsPerType = serializers.DictField(
        child=JobTypeErrorSerializer(), source="errors",
        help_text="Why each failed data type failed; POST .../retry fetches these again.",
    )  # fmt: skip
    retryOf = serializers.UUIDField(
        source="retry_of", allow_null=True, help_text="The job whose failed types this retries."
    )

    @extend_schema_field(
        serializers.DictField(
            child=serializers.ChoiceField(
                choices=["pending", "running", "succeeded", "failed", "skipped"]
            )
        )
    )
    def get_status_per_type(self, job: IngestionJob) -> dict[str, str]:
        return dict(job_type_statuses(job=job))

    def get_range(self, job: IngestionJob) -> dict[str, str]:
        return {"start": job.range_start.isoformat(), "end": job.range_end.isoformat()}

    def to_representation(self, instance: IngestionJob) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["lastError"] = data["lastError"] or None
        return data


class JobDetailApi(APIView):
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    required_scope = Scope.SYNC

    OutputSerializer = JobStatusOutputSerializer

    @extend_schema(
        operation_id="oura_sync_status",
        summary="Read a backfill job's status and progress",
        description="status is queued, running, succeeded, succeeded_with_errors (every "
        "type was attempted; those in errorsPerType failed, the others succeeded), failed or "
        "cancelled; progress 0-100 (failed types count as done); statusPerType gives each "
        "type's state and errorsPerType why each failed type failed; lastError sums them up. "
        "A job of a user this key may not act on answers 404.",
        responses={200: JobStatusOutputSerializer, **_ERRORS},
        tags=["sync"],
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = _job_for_key(request, job_id)
        return Response(self.OutputSerializer(job).data)


class JobCancelApi(APIView):
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    required_scope = Scope.SYNC

    @extend_schema_serializer(component_name="JobCancelled")
    class OutputSerializer(serializers.Serializer[dict[str, Any]]):
        jobId = serializers.UUIDField()
        status = serializers.ChoiceField(choices=IngestionJob.Status.choices)
        cancelRequested = serializers.BooleanField()

    @extend_schema(
        operation_id="oura_sync_cancel",
        summary="Cancel a backfill job",
        description="A queued job is cancelled at once. A running job stops at its next page "
        "boundary (status becomes cancelled; pages already stored stay). Cancelling a "
        "cancelled job is a no-op; a succeeded, succeeded_with_errors or failed job answers "
        "409 `job_finished`.",
        request=None,
        responses={202: OutputSerializer, 409: ErrorSerializer, **_ERRORS},
        tags=["sync"],
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = _job_for_key(request, job_id)
        job = job_cancel(job=job, actor=_actor(request))
        if job.status in IngestionJob.TERMINAL_STATUSES and job.status != Status.CANCELLED:
            raise ApiError("job_finished", f"The job already {job.status}.", 409)
        body = {"jobId": job.job_id, "status": job.status, "cancelRequested": job.cancel_requested}
        return Response(self.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class JobRetryApi(APIView):
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    required_scope = Scope.SYNC

    @extend_schema_serializer(component_name="JobRetried")
    class OutputSerializer(serializers.Serializer[dict[str, Any]]):
        jobId = serializers.UUIDField(help_text="The retry job (read it at /sync/{jobId}).")
        status = serializers.ChoiceField(choices=IngestionJob.Status.choices)
        retryOf = serializers.UUIDField(allow_null=True)
        dataTypes = serializers.ListField(
            child=serializers.CharField(), help_text="The failed types, by registry name."
        )

    @extend_schema(
        operation_id="oura_sync_retry",
        summary="Retry only the data types a backfill job failed on",
        description="Starts a new job for the same user and range, limited to the types in "
        "the job's errorsPerType; the new job names this one in retryOf. Idempotent: while "
        "that retry is queued or running, asking again returns it. 409 `job_not_retryable` "
        "when no single type failed (the job is queued, running, succeeded or cancelled, or "
        "failed as a whole, e.g. the user must connect again); 409 `not_connected` / "
        "`needs_reauth` when the user has no usable Oura connection now.",
        request=None,
        responses={202: OutputSerializer, 409: ErrorSerializer, **_ERRORS},
        tags=["sync"],
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = _job_for_key(request, job_id)
        try:
            retried = job_retry(job=job, requested_by=_actor(request))
        except JobRequestInvalid as exc:
            raise ApiError(exc.code, str(exc), exc.http_status) from None
        new = retried.job
        body = {"jobId": new.job_id, "status": new.status, "retryOf": new.retry_of,
                "dataTypes": new.data_types}  # fmt: skip
        return Response(self.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED)
