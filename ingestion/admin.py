"""Backoffice views of connections, subscriptions and raw events. Tokens are never shown."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from ingestion.connection_services import connection_disconnect
from ingestion.models import OuraConnection, RawEvent, WebhookSubscription


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
    actions = ("disconnect",)

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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RawEvent | None = None) -> bool:
        return False
