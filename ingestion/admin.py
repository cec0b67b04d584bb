"""Backoffice views of connections, subscriptions and raw events. Tokens are never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from backoffice.services import raw_object_signed_url
from ingestion.connection_services import connection_disconnect
from ingestion.models import OuraConnection, RawEvent, WebhookSubscription
from privacy.services import user_erase


@admin.register(OuraConnection)
class OuraConnectionAdmin(admin.ModelAdmin[OuraConnection]):
    list_display = (
        "user_id", "provider_user_id", "status", "scope_list", "connected_at",
        "last_refresh_at", "revoked_at",
    )  # fmt: skip
    list_filter = ("status",)
    search_fields = ("user_id", "provider_user_id")
    # Token columns are excluded outright; the form never loads them.
    fields = (
        "user_id", "provider_user_id", "status", "scopes", "connected_at",
        "last_refresh_at", "access_token_expires_at", "revoked_at", "token_version",
    )  # fmt: skip
    readonly_fields = fields
    actions = ("disconnect", "erase")

    @admin.display(description="scopes")
    def scope_list(self, obj: OuraConnection) -> str:
        return ", ".join(obj.scopes or [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # connections come only from the OAuth flow

    @admin.action(description="Disconnect (revoke at Oura, delete tokens)")
    def disconnect(self, request: HttpRequest, queryset: QuerySet[OuraConnection]) -> None:
        for connection in queryset:
            connection_disconnect(connection=connection, actor=f"staff:{request.user}")
        self.message_user(request, f"{queryset.count()} connection(s) disconnected.", messages.INFO)

    @admin.action(
        description="GDPR: erase every row, raw object and bus message of these users",
        permissions=["delete"],
    )
    def erase(self, request: HttpRequest, queryset: QuerySet[OuraConnection]) -> None:
        user_ids = list(queryset.values_list("user_id", flat=True))
        for user_id in user_ids:
            user_erase(user_id=user_id, actor=f"staff:{request.user}")
        self.message_user(request, f"Erased {len(user_ids)} user(s).", messages.WARNING)


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin[WebhookSubscription]):
    list_display = (
        "event_type", "data_type", "expiration_time", "renewed_at", "callback_url",
        "subscription_id",
    )  # fmt: skip
    list_filter = ("event_type", "data_type")
    ordering = ("expiration_time",)
    readonly_fields = [f.name for f in WebhookSubscription._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created by `manage.py oura_subscriptions sync`


@admin.register(RawEvent)
class RawEventAdmin(admin.ModelAdmin[RawEvent]):
    list_display = (
        "event_id", "kind", "status", "data_type", "event_type", "user_id", "received_at",
        "archived_at", "published_at",
    )  # fmt: skip
    list_filter = ("kind", "status", "data_type")
    search_fields = ("event_id", "user_id", "provider_user_id", "object_id")
    date_hierarchy = "received_at"
    exclude = ("envelope",)
    readonly_fields = [f.name for f in RawEvent._meta.fields if f.name != "envelope"]
    show_full_result_count = False  # COUNT(*) over the raw index is slow once it is large

    actions = ("signed_url",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RawEvent | None = None) -> bool:
        return False

    @admin.action(description="Get a short-lived signed URL to the raw object (audited)")
    def signed_url(self, request: HttpRequest, queryset: QuerySet[RawEvent]) -> None:
        for event in queryset[:10]:
            try:
                url = raw_object_signed_url(event_id=event.event_id, staff=f"staff:{request.user}")
            except ValueError as exc:
                self.message_user(request, f"{event.event_id}: {exc}", messages.ERROR)
                continue
            self.message_user(request, f"{event.event_id}: {url}", messages.INFO)
