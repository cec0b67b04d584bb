"""The audit log and the raw-event index in the backoffice.

Who: privacy officers read the audit log (`audit.view_auditentry`) and open raw documents
(`ingestion.view_rawevent` to list them, `core.view_raw_payload` for a signed URL). Neither is
ever added, changed or deleted here: the log is append-only in the database, and raw events
are removed by erasure and retention, which delete the object with its row.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from audit.models import AuditEntry
from backoffice import person_admin
from backoffice.services import raw_object_signed_url
from core.admin_rights import GuardedAdmin, staff_actor
from core.staff_admin import person_link
from ingestion.models import RawEvent

SIGNED_URLS_PER_REQUEST = 10

# The person page and its search, under the admin's login and 2FA.
person_admin.register()


@admin.register(AuditEntry)
class AuditEntryAdmin(GuardedAdmin[AuditEntry]):
    list_display = ("occurred_at", "action", "actor", "user_id", "event_id")
    list_filter = ("action",)
    search_fields = ("user_id", "event_id", "actor")
    date_hierarchy = "occurred_at"
    readonly_fields = (
        "occurred_at",
        "action",
        "actor",
        "user_id",
        "provider",
        "event_id",
        "details",
    )
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False


@admin.register(RawEvent)
class RawEventAdmin(GuardedAdmin[RawEvent]):
    list_display = (
        "event_id", "kind", "status", "data_type", "event_type", "person", "received_at",
        "archived_at", "published_at",
    )  # fmt: skip
    list_filter = ("kind", "status", "data_type")
    search_fields = ("event_id", "user_id", "provider_user_id", "object_id")
    date_hierarchy = "received_at"
    exclude = ("envelope",)
    readonly_fields = [f.name for f in RawEvent._meta.fields if f.name != "envelope"]
    show_full_result_count = False  # COUNT(*) over the raw index is slow once it is large

    actions = ("signed_url",)

    @admin.display(description="user id", ordering="user_id")
    def person(self, obj: RawEvent) -> str:
        return person_link(obj.user_id)  # to the person page (backoffice/person_admin.py)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RawEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RawEvent | None = None) -> bool:
        return False  # a deleted row orphans its object; erasure and retention remove both

    @admin.action(
        description="Get a short-lived signed URL to the raw object (audited)",
        permissions=["view_raw_payload"],
    )
    def signed_url(self, request: HttpRequest, queryset: QuerySet[RawEvent]) -> HttpResponse:
        """Privacy officers (`core.view_raw_payload`): up to 10 URLs, shown once in this
        response (never in the messages cookie); each issue is audited (raw.accessed)."""
        links: list[tuple[str, str]] = []
        for event in queryset[:SIGNED_URLS_PER_REQUEST]:
            try:
                url = raw_object_signed_url(event_id=event.event_id, staff=staff_actor(request))
            except ValueError as exc:
                links.append((f"{event.event_id}: {exc}", ""))
                continue
            links.append((str(event.event_id), url))
        return self.shown_once(
            request,
            title="Signed raw-object URLs",
            explanation=(
                "Each link opens one raw document for a few minutes and is shown once, here "
                "only. Every link issued is in the audit log."
            ),
            secrets=links,
            headings=("event", "signed URL"),
        )
