"""One page per person in the admin, and its search (issue 15, "One page per person").

`<admin prefix>/people/?q=` finds a person by our user id or by an Oura user id (exact);
`<admin prefix>/people/<user_id>/` shows what we hold and do for them, one section per right
the staff user holds, and the actions of their role as buttons. The pages are registered on
the admin site (StaffAdminSite.register_urls) and wrapped in its `admin_view`, so its login,
two-factor check and CSRF protection guard them.

Every action is a POST that checks its right again (the button is only a convenience) and
answers an audited 403 (staff.refused) otherwise; allowed runs go through the same services
as the model admins and are audited by them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from backoffice import selectors
from core import audit_port
from core.admin_rights import STAFF_REFUSED, staff_actor
from core.identifiers import is_valid_user_id
from core.staff_admin import StaffAdminSite
from ingestion.connection_services import connection_disconnect
from ingestion.models import OuraConnection, RawEvent
from jobs.services import MAX_RANGE_DAYS, JobRequestInvalid, job_start

# What each section of the person page needs (any one of the rights listed).
SECTION_RIGHTS: dict[str, tuple[str, ...]] = {
    "connection": ("ingestion.view_ouraconnection",),
    "flow": ("core.view_coverage", "ingestion.view_rawevent"),
    "coverage": ("core.view_coverage",),
    "values": ("core.view_coverage",),
    "jobs": ("jobs.view_ingestionjob",),
    "raw_events": ("ingestion.view_rawevent",),
    "dead_letters": ("core.view_deadletter",),
    "audit": ("audit.view_auditentry",),
}
ACTION_RIGHTS: dict[str, str] = {
    "backfill": "core.start_backfill",
    "disconnect": "core.disconnect_connection",
    "erase": "core.erase_person",
    "raw_access": "core.view_raw_payload",
}
PAGE_RIGHTS = frozenset(right for rights in SECTION_RIGHTS.values() for right in rights)


PERSON_VIEWED = "person.viewed"  # audit.models.AuditEntry.Action.PERSON_VIEWED


def _holds(request: HttpRequest, right: str) -> bool:
    return request.user.is_active and request.user.has_perm(right)


def _may_see_people(request: HttpRequest) -> bool:
    return any(_holds(request, right) for right in PAGE_RIGHTS)


def _refuse(request: HttpRequest, name: str, *, user_id: str = "") -> HttpResponse:
    """403, audited as GuardedAdmin.refuse does, naming the person when there is one."""
    audit_port.record(
        action=STAFF_REFUSED,
        actor=staff_actor(request),
        user_id=user_id,
        details={"action": name, "model": "person", "outcome": "refused"},
    )
    return HttpResponseForbidden(f"403 Forbidden: your staff rights do not cover {name}.")


class BackfillRangeForm(forms.Form):
    start = forms.DateField()
    end = forms.DateField()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("start must not be after end")
        return data


class PersonPages:
    """The search page, the person page and its POST actions, on one admin site."""

    def __init__(self, site: StaffAdminSite) -> None:
        self.site = site

    def urls(self) -> list[URLPattern]:
        guard = self.site.admin_view

        def post(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
            guarded: Callable[..., HttpResponse] = guard(require_POST(view))
            return guarded

        return [
            path("people/", guard(self.search), name="person_search"),
            path("people/<user_id:user_id>/", guard(self.person), name="person"),
            path("people/<user_id:user_id>/backfill/", post(self.backfill), name="person_backfill"),
            path(
                "people/<user_id:user_id>/disconnect/",
                post(self.disconnect),
                name="person_disconnect",
            ),
            path("people/<user_id:user_id>/erase/", post(self.erase), name="person_erase"),
            path("people/<user_id:user_id>/raw/", post(self.raw_access), name="person_raw"),
        ]

    def _page(
        self, request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
    ) -> HttpResponse:
        request.current_app = self.site.name
        page = {**self.site.each_context(request), **context}
        return TemplateResponse(request, f"admin/backoffice/{template}", page, status=status)

    def search(self, request: HttpRequest) -> HttpResponse:
        if not _may_see_people(request):
            return _refuse(request, "person_search")
        query = request.GET.get("q", "").strip()
        matches = selectors.people_find(query=query) if query else []
        if not query:
            note = ""
        elif matches:
            note = f"{len(matches)} person(s) found."
        elif not is_valid_user_id(query) and len(query) > selectors.OURA_ID_MAX_LENGTH:
            note = "That is neither a valid user id nor an Oura user id."
        elif not is_valid_user_id(query):
            note = (
                "Not a valid user id (1 to 64 of A-Z, a-z, 0-9, _ and -), "
                "and no Oura user id matches."
            )
        else:
            note = "No person with that user id or Oura user id."
        return self._page(
            request,
            "person_search.html",
            {"title": "Find a person", "query": query, "matches": matches, "note": note},
            status=200,
        )

    def person(self, request: HttpRequest, user_id: str) -> HttpResponse:
        if not _may_see_people(request):
            return _refuse(request, "person_page", user_id=user_id)
        person = selectors.person_of(user_id)
        sees = {
            name: any(_holds(request, right) for right in rights)
            for name, rights in SECTION_RIGHTS.items()
        }
        may = {name: _holds(request, right) for name, right in ACTION_RIGHTS.items()}
        # The connection decides which buttons make sense, whoever may see its section.
        connection = selectors.person_connection(person)
        coverage = selectors.person_coverage(person) if sees["coverage"] else None
        today = timezone.localdate()
        context = {
            "title": f"Person {user_id}",
            "user_id": user_id,
            "sees": sees,
            "may": may,
            "connection": connection if sees["connection"] else None,
            "has_connection": connection is not None,
            "connection_active": bool(
                connection and connection["status"] != OuraConnection.Status.REVOKED
            ),
            "flow": selectors.person_flow(person) if sees["flow"] else [],
            "coverage": coverage,
            "coverage_days": selectors.COVERAGE_DAYS,
            "scored_types": selectors.SCORED_TYPES,
            "jobs": selectors.person_jobs(person) if sees["jobs"] else [],
            "raw_events": selectors.person_raw_events(person) if sees["raw_events"] else [],
            "dead_letters": selectors.person_dead_letters(person) if sees["dead_letters"] else [],
            "audit_entries": selectors.person_audit_trail(person) if sees["audit"] else [],
            "backfill_start": today - timedelta(days=30),
            "backfill_end": today,
            "max_range_days": MAX_RANGE_DAYS,
        }
        # Who looked at whose health data, and which sections: audited like raw access.
        audit_port.record(
            action=PERSON_VIEWED,
            actor=staff_actor(request),
            user_id=user_id,
            details={"sections": sorted(name for name, seen in sees.items() if seen)},
        )
        return self._page(request, "person.html", context)

    def _back(self, user_id: str) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse(f"{self.site.name}:person", args=[user_id]))

    def backfill(self, request: HttpRequest, user_id: str) -> HttpResponse:
        """Support and operators (`core.start_backfill`): job_start, as the jobs admin."""
        if not _holds(request, ACTION_RIGHTS["backfill"]):
            return _refuse(request, "start_backfill", user_id=user_id)
        form = BackfillRangeForm(request.POST)
        if not form.is_valid():
            errors = "; ".join(str(e) for errs in form.errors.values() for e in errs)
            messages.error(request, f"Backfill not started: {errors}")
            return self._back(user_id)
        try:
            started = job_start(
                user_id=user_id, start=form.cleaned_data["start"], end=form.cleaned_data["end"],
                data_types=None, requested_by=staff_actor(request),
            )  # fmt: skip
        except JobRequestInvalid as exc:
            messages.error(request, f"Backfill not started: {exc.code}: {exc}")
            return self._back(user_id)
        verb = "Started" if started.created else "An identical job is already active:"
        messages.success(request, f"{verb} job {started.job.job_id}.")
        return self._back(user_id)

    def disconnect(self, request: HttpRequest, user_id: str) -> HttpResponse:
        """Whoever holds `core.disconnect_connection`: revoke at Oura, delete the tokens."""
        if not _holds(request, ACTION_RIGHTS["disconnect"]):
            return _refuse(request, "disconnect", user_id=user_id)
        connection = OuraConnection.objects.filter(user_id=user_id).first()
        if connection is None:
            messages.error(request, "This person has no Oura connection.")
        else:
            connection_disconnect(connection=connection, actor=staff_actor(request))
            messages.info(request, "Connection disconnected.")
        return self._back(user_id)

    def erase(self, request: HttpRequest, user_id: str) -> HttpResponse:
        """Privacy officers (`core.erase_person`): the connection admin's erase action for this
        person, so the same confirmation page (counts per store), then the receipt. Its
        confirmation form posts back here, and the right is checked again."""
        if not _holds(request, ACTION_RIGHTS["erase"]):
            return _refuse(request, "erase", user_id=user_id)
        connections = OuraConnection.objects.filter(user_id=user_id)
        if not connections.exists():
            messages.error(request, "This person has no Oura connection to erase from here.")
            return self._back(user_id)
        connection_admin = self.site.get_model_admin(OuraConnection)
        response: HttpResponse = connection_admin.erase(request, connections)
        return response

    def raw_access(self, request: HttpRequest, user_id: str) -> HttpResponse:
        """Privacy officers (`core.view_raw_payload`): the raw-event admin's signed-URL page
        for events of this person (each URL audited, shown once)."""
        if not _holds(request, ACTION_RIGHTS["raw_access"]):
            return _refuse(request, "signed_url", user_id=user_id)
        event_ids = [e for e in request.POST.getlist("event_id") if _is_uuid(e)]
        person = selectors.person_of(user_id)
        events = selectors.raw_events_of(person).filter(event_id__in=event_ids)
        if not event_ids or not events.exists():
            messages.error(request, "No raw event of this person was selected.")
            return self._back(user_id)
        raw_admin = self.site.get_model_admin(RawEvent)
        response: HttpResponse = raw_admin.signed_url(request, events)
        return response


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def register(site: Any = admin.site) -> None:
    if not isinstance(site, StaffAdminSite):
        return  # another site (a test's plain AdminSite): no person pages
    site.register_urls(PersonPages(site).urls)
