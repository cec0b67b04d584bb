"""Backoffice for backfill jobs: the list with progress, "start backfill", cancel and retry.

The add page is a small form that calls job_start (the same service as the API), so a job
started here is queued, deduplicated and audited exactly like one started over HTTP.

Who: support and operators see jobs (`jobs.view_ingestionjob`) and start backfills
(`core.start_backfill`), which also retries the failed types of finished jobs (a retry is
a backfill of those types, started by job_retry as the API does); operators also cancel
(`core.cancel_job`). Jobs are never changed or deleted here.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin_rights import GuardedAdmin, staff_actor
from core.staff_admin import person_link
from ingestion.data_types import BACKFILL_TYPES, DEFAULT_TYPES
from jobs.models import IngestionJob, WatchdogFinding
from jobs.services import JobRequestInvalid, job_cancel, job_retry, job_start


class StartBackfillForm(forms.Form):
    user_id = forms.CharField(max_length=64, help_text="Our user id (the connection's user).")
    start = forms.DateField(help_text="First day, inclusive (YYYY-MM-DD).")
    end = forms.DateField(help_text="Last day, inclusive (YYYY-MM-DD).")
    data_types = forms.MultipleChoiceField(
        choices=[(name, name) for name in BACKFILL_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every document type the connection grants "
        f"({len(DEFAULT_TYPES)} types; time series only when ticked).",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("start must not be after end")
        return data


@admin.register(IngestionJob)
class IngestionJobAdmin(GuardedAdmin[IngestionJob]):
    list_display = (
        "job_id", "person", "status", "progress_bar", "range_start", "range_end",
        "type_count", "documents", "attempts", "started_at", "updated_at", "short_error",
    )  # fmt: skip
    list_filter = ("status", "cancel_requested")
    search_fields = ("user_id", "job_id")
    ordering = ("-created_at",)
    readonly_fields = tuple(
        f.name for f in IngestionJob._meta.get_fields() if getattr(f, "concrete", False)
    )
    actions = ("cancel", "retry_failed_types")

    @admin.display(description="user id", ordering="user_id")
    def person(self, obj: IngestionJob) -> str:
        return person_link(obj.user_id)  # to the person page (backoffice/person_admin.py)

    @admin.display(description="progress")
    def progress_bar(self, obj: IngestionJob) -> str:
        return format_html(
            '<progress value="{}" max="100" title="{}%"></progress> {}%',
            obj.progress, obj.progress, obj.progress,
        )  # fmt: skip

    @admin.display(description="types")
    def type_count(self, obj: IngestionJob) -> int:
        return len(obj.data_types or [])

    @admin.display(description="documents")
    def documents(self, obj: IngestionJob) -> int:
        return sum(int(v) for v in (obj.counts or {}).values())

    @admin.display(description="last error")
    def short_error(self, obj: IngestionJob) -> str:
        failed = ", ".join(sorted(obj.errors or {}))
        return f"failed: {failed}" if failed else (obj.last_error or "")[:80]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_start_backfill_permission(request)  # "add" is "start backfill"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # jobs change only through their services

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The "start backfill" page: a form in place of the model form, calling job_start.

        Support and operators (`core.start_backfill`); others get an audited 403. The job's
        start is audited by job_start (job.started)."""
        if not self.has_add_permission(request):
            return self.refuse(request, "start_backfill")
        today = timezone.now().date()
        form = StartBackfillForm(
            request.POST or None,
            initial={"start": today.replace(year=today.year - 1), "end": today},
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                started = job_start(
                    user_id=data["user_id"], start=data["start"], end=data["end"],
                    data_types=list(data["data_types"]) or None,
                    requested_by=staff_actor(request),
                )  # fmt: skip
            except JobRequestInvalid as exc:
                form.add_error(None, f"{exc.code}: {exc}")
            else:
                verb = "Started" if started.created else "An identical job is already active:"
                self.message_user(request, f"{verb} job {started.job.job_id}.", messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse("admin:jobs_ingestionjob_change", args=[started.job.job_id])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Start backfill",
            "form": form,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/jobs/ingestionjob/start_backfill.html", context)

    @admin.action(description="Cancel selected jobs", permissions=["cancel_job"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[IngestionJob]) -> None:
        """Operators (`core.cancel_job`); job_cancel audits each (job.cancelled)."""
        asked = 0
        for job in queryset.filter(status__in=IngestionJob.ACTIVE_STATUSES):
            job_cancel(job=job, actor=staff_actor(request))
            asked += 1
        self.message_user(request, f"Cancel requested for {asked} active job(s).", messages.INFO)

    @admin.action(description="Retry the failed data types", permissions=["start_backfill"])
    def retry_failed_types(self, request: HttpRequest, queryset: QuerySet[IngestionJob]) -> None:
        """Support and operators (`core.start_backfill`): job_retry starts (or returns the
        active) job for each selected job's failed types, audited as job.started."""
        started, active, refused = 0, 0, []
        for job in queryset:
            try:
                retried = job_retry(job=job, requested_by=staff_actor(request))
            except JobRequestInvalid as exc:
                refused.append(f"{job.job_id}: {exc}")
                continue
            started, active = started + retried.created, active + (not retried.created)
        self.message_user(
            request,
            f"Retry started for {started} job(s); {active} already had an active retry.",
            messages.INFO,
        )
        for reason in refused:
            self.message_user(request, f"Not retried: {reason}", messages.WARNING)


@admin.register(WatchdogFinding)
class WatchdogFindingAdmin(GuardedAdmin[WatchdogFinding]):
    """What the missed-webhook watchdog found and did (jobs/watchdog.py), read-only.

    Operators (`jobs.view_watchdogfinding`); others get an audited 403. Findings are written
    by the watchdog only and go with the person on erasure.
    """

    list_display = (
        "found_at", "reason", "person", "data_type", "event_type", "stale_since", "action",
        "job", "detail",
    )  # fmt: skip
    list_filter = ("reason", "action", "data_type")
    search_fields = ("user_id", "job_id", "run_id")
    ordering = ("-found_at", "-id")
    date_hierarchy = "found_at"
    readonly_fields = tuple(
        f.name for f in WatchdogFinding._meta.get_fields() if getattr(f, "concrete", False)
    )

    @admin.display(description="user id", ordering="user_id")
    def person(self, obj: WatchdogFinding) -> str:
        return person_link(obj.user_id) if obj.user_id else "(application)"

    @admin.display(description="job")
    def job(self, obj: WatchdogFinding) -> str:
        if obj.job_id is None:
            return ""
        url = reverse("admin:jobs_ingestionjob_change", args=[obj.job_id])
        return format_html('<a href="{}">{}</a>', url, obj.job_id)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
