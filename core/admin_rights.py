"""The base of every backoffice ModelAdmin: named rights per action, and every refusal audited.

Django offers an action to whoever may open the list page unless the action names its
`permissions`; each action here names one right of core.StaffRight (or a stock one), checked
by a `has_<right>_permission` method below. What Django refuses (a page without the view
right, an add or delete the model does not allow, a posted action that was not offered to
this user) answers 403 and writes a `staff.refused` audit entry; allowed runs are audited by
the services they call.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.template.response import TemplateResponse
from django.urls import reverse

from core import audit_port

_M = TypeVar("_M", bound=models.Model)

STAFF_REFUSED = "staff.refused"  # audit.models.AuditEntry.Action.STAFF_REFUSED


def staff_actor(request: HttpRequest) -> str:
    return f"staff:{request.user}"


def no_store(response: HttpResponse) -> HttpResponse:
    """For a page that shows a secret once: no cache, no copy in history or proxies."""
    response["Cache-Control"] = "no-store, private"
    response["Pragma"] = "no-cache"
    return response


class GuardedAdmin(admin.ModelAdmin[_M]):
    """A ModelAdmin whose actions check named rights and whose refusals are audited."""

    def _has_right(self, request: HttpRequest, codename: str) -> bool:
        return request.user.is_active and request.user.has_perm(f"core.{codename}")

    # One method per right, named as Django's action `permissions=[...]` expects.
    def has_view_raw_payload_permission(self, request: HttpRequest) -> bool:
        return self._has_right(request, "view_raw_payload")

    def has_erase_person_permission(self, request: HttpRequest) -> bool:
        return self._has_right(request, "erase_person")

    def has_disconnect_connection_permission(self, request: HttpRequest) -> bool:
        return self._has_right(request, "disconnect_connection")

    def has_revoke_api_key_permission(self, request: HttpRequest) -> bool:
        return self._has_right(request, "revoke_api_key")

    def has_replay_dead_letter_permission(self, request: HttpRequest) -> bool:
        return self._has_right(request, "replay_dead_letter")

    def has_manage_subscriptions_permission(self, request: HttpRequest) -> bool:
        return self._has_right(request, "manage_subscriptions")

    def has_cancel_job_permission(self, request: HttpRequest) -> bool:
        return self._has_right(request, "cancel_job")

    def has_start_backfill_permission(self, request: HttpRequest) -> bool:
        return self._has_right(request, "start_backfill")

    def shown_once(
        self,
        request: HttpRequest,
        *,
        title: str,
        explanation: str,
        secrets: list[tuple[str, str]],
        headings: tuple[str, str] = ("", ""),
    ) -> HttpResponse:
        """A page with secrets (a signed URL, a new API key) for this response only: not in
        Django's messages cookie (signed, not encrypted) and not cached."""
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "title": title,
            "explanation": explanation,
            "secrets": secrets,
            "label_heading": headings[0],
            "secret_heading": headings[1],
            "changelist_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        }
        response = TemplateResponse(request, "admin/core/shown_once.html", context)
        return no_store(response)

    def refuse(self, request: HttpRequest, name: str) -> HttpResponse:
        """403, audited: `name` is the action or page that was asked for."""
        audit_port.record(
            action=STAFF_REFUSED,
            actor=staff_actor(request),
            details={"action": name, "model": self.opts.label, "outcome": "refused"},
        )
        return HttpResponseForbidden(f"403 Forbidden: your staff rights do not cover {name}.")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        action = request.POST.get("action", "") if request.method == "POST" else ""
        if action:
            declared = {name for name, _ in self.admin_site.actions} | {
                a if isinstance(a, str) else a.__name__ for a in self.actions or ()
            }
            if action in declared and action not in self.get_actions(request):
                return self.refuse(request, action)  # a forged POST of an action not offered
        try:
            return super().changelist_view(request, extra_context)
        except PermissionDenied:
            return self.refuse(request, "changelist")

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            return self.refuse(request, "add")
        try:
            return super().add_view(request, form_url, extra_context)
        except PermissionDenied:
            return self.refuse(request, "add")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().change_view(request, object_id, form_url, extra_context)
        except PermissionDenied:
            return self.refuse(request, "change" if request.method == "POST" else "view")

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_delete_permission(request):
            return self.refuse(request, "delete")
        try:
            return super().delete_view(request, object_id, extra_context)
        except PermissionDenied:
            return self.refuse(request, "delete")

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().history_view(request, object_id, extra_context)
        except PermissionDenied:
            return self.refuse(request, "history")
