"""Backoffice views of connections and subscriptions. Tokens are never shown.

Who: support, privacy officers and operators see connections (`ingestion.view_ouraconnection`);
disconnecting (`core.disconnect_connection`) is for superusers, erasure (`core.erase_person`)
for privacy officers; operators see and renew subscriptions (`core.manage_subscriptions`).
Connections are never added, changed or deleted here: the OAuth flow creates them,
disconnect and erasure remove them (revoked at Oura, audited). Raw events: backoffice/admin.py.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from core.admin_rights import GuardedAdmin, no_store, staff_actor
from core.staff_admin import person_link
from ingestion.connection_services import connection_disconnect
from ingestion.models import OuraConnection, WebhookSubscription
from ingestion.subscription_services import subscriptions_renew
from privacy.registry import Person, oura_ids_of
from privacy.services import erasure_scan, user_erase


@admin.register(OuraConnection)
class OuraConnectionAdmin(GuardedAdmin[OuraConnection]):
    list_display = (
        "person", "provider_user_id", "status", "scope_list", "connected_at",
        "last_refresh_at", "revoked_at",
    )  # fmt: skip
    list_display_links = ("provider_user_id",)  # the user id links to the person page
    list_filter = ("status",)
    search_fields = ("user_id", "provider_user_id")
    # Token columns are excluded outright; the form never loads them.
    fields = (
        "user_id", "provider_user_id", "status", "scopes", "connected_at",
        "last_refresh_at", "access_token_expires_at", "revoked_at", "token_version",
    )  # fmt: skip
    readonly_fields = fields
    actions = ("disconnect", "erase")

    @admin.display(description="user id", ordering="user_id")
    def person(self, obj: OuraConnection) -> str:
        return person_link(obj.user_id)  # to the person page (backoffice/person_admin.py)

    @admin.display(description="scopes")
    def scope_list(self, obj: OuraConnection) -> str:
        return ", ".join(obj.scopes or [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # connections come only from the OAuth flow

    def has_change_permission(
        self, request: HttpRequest, obj: OuraConnection | None = None
    ) -> bool:
        return False  # state changes only through the OAuth flow and its services

    def has_delete_permission(
        self, request: HttpRequest, obj: OuraConnection | None = None
    ) -> bool:
        return False  # a plain delete skips the revoke at Oura and the audit entry

    @admin.action(
        description="Disconnect (revoke at Oura, delete tokens)",
        permissions=["disconnect_connection"],
    )
    def disconnect(self, request: HttpRequest, queryset: QuerySet[OuraConnection]) -> None:
        """Whoever holds `core.disconnect_connection` (superusers; no group): revokes at
        Oura and deletes the tokens; connection_disconnect audits each."""
        for connection in queryset:
            connection_disconnect(connection=connection, actor=staff_actor(request))
        self.message_user(request, f"{queryset.count()} connection(s) disconnected.", messages.INFO)

    @admin.action(
        description="GDPR: erase every row, raw object and bus message of these users",
        permissions=["erase_person"],
    )
    def erase(self, request: HttpRequest, queryset: QuerySet[OuraConnection]) -> HttpResponse:
        """Privacy officers (`core.erase_person`). First a page with what will be removed
        (counts per store, from the verification scan), then, once confirmed, the erasure and
        its receipt. Each erasure is audited (user.erased, with the receipt)."""
        user_ids = sorted(set(queryset.values_list("user_id", flat=True)))
        selected = [str(pk) for pk in queryset.values_list("pk", flat=True)]
        if request.POST.get("confirm") != "yes":
            people = [
                {
                    "user_id": user_id,
                    "scan": erasure_scan(Person(user_id, tuple(oura_ids_of(user_id)))),
                }
                for user_id in user_ids
            ]
            return self._erasure_page(
                request, "erase_confirm.html", "Erase these people?",
                {"people": people, "selected": selected},
            )  # fmt: skip
        receipts: list[dict[str, Any]] = []
        for user_id in user_ids:
            done = user_erase(user_id=user_id, actor=staff_actor(request))
            receipts.append({"user_id": user_id, "status": done.status, "receipt": done.receipt})
        return self._erasure_page(request, "erase_receipt.html", "Erased", {"receipts": receipts})

    def _erasure_page(
        self, request: HttpRequest, template: str, title: str, context: dict[str, Any]
    ) -> HttpResponse:
        page = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            **context,
        }
        response = TemplateResponse(request, f"admin/ingestion/ouraconnection/{template}", page)
        return no_store(response)


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(GuardedAdmin[WebhookSubscription]):
    list_display = (
        "event_type", "data_type", "expiration_time", "renewed_at", "callback_url",
        "subscription_id",
    )  # fmt: skip
    list_filter = ("event_type", "data_type")
    ordering = ("expiration_time",)
    readonly_fields = [f.name for f in WebhookSubscription._meta.fields]
    actions = ("renew",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created by `manage.py oura_subscriptions sync`

    def has_change_permission(
        self, request: HttpRequest, obj: WebhookSubscription | None = None
    ) -> bool:
        return False  # a mirror of Oura's side: changed by syncing, not by hand

    def has_delete_permission(
        self, request: HttpRequest, obj: WebhookSubscription | None = None
    ) -> bool:
        return False  # deleting the mirror would leave the subscription live at Oura

    @admin.action(
        description="Renew every subscription that expires within 7 days (at Oura)",
        permissions=["manage_subscriptions"],
    )
    def renew(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        """Operators (`core.manage_subscriptions`). Renews all of ours that expire soon, not
        only the selected rows (Oura's side is the truth); audited (subscriptions.renewed)."""
        report = subscriptions_renew(actor=staff_actor(request))
        level = messages.WARNING if report.failed else messages.INFO
        self.message_user(
            request,
            f"{len(report.renewed)} renewed, {len(report.unchanged)} unchanged, "
            f"{len(report.failed)} failed.",
            level,
        )
