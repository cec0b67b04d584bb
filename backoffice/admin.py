"""The audit log: read-only in the backoffice, as in the database."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
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
