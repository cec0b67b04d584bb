"""API keys in the backoffice: created with the key shown once, then only revocable.

Who: superusers, or a staff user granted `access.view_apikey`/`access.add_apikey` (issue) and
`core.revoke_api_key` (revoke) one by one; no staff group holds them. Keys are never changed
or deleted here: a key is revoked (audited), and a new one issued.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from access.models import ApiKey, Scope
from access.services import api_key_create, api_key_revoke
from core.admin_rights import GuardedAdmin, staff_actor
from core.identifiers import InvalidUserId, is_valid_user_id


class ApiKeyCreationForm(forms.ModelForm[ApiKey]):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)
    allowed_users = forms.CharField(
        required=False,
        help_text="Comma-separated user ids, each matching ^[A-Za-z0-9_-]{1,64}$.",
    )
    all_users = forms.BooleanField(
        required=False, label="All users", help_text="The key may act on every user."
    )

    class Meta:
        model = ApiKey
        fields = ("name", "expires_at")
        help_texts = {"expires_at": "Empty: API_KEY_DEFAULT_EXPIRY_DAYS (90) from now."}

    def clean_allowed_users(self) -> list[str]:
        users = [u.strip() for u in self.cleaned_data["allowed_users"].split(",") if u.strip()]
        if not all(is_valid_user_id(user) for user in users):
            raise forms.ValidationError(str(InvalidUserId()))
        return users

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        users, every = cleaned.get("allowed_users"), cleaned.get("all_users")
        if "allowed_users" in cleaned and bool(users) == bool(every):
            raise forms.ValidationError("List the users the key may act on, or tick All users.")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(GuardedAdmin[ApiKey]):
    list_display = (
        "name", "prefix", "scope_list", "users", "created_at", "expires_at", "revoked_at",
        "last_used_at",
    )  # fmt: skip
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    actions = ("revoke",)

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # keys are immutable once issued; revoke and issue a new one

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # a deleted key leaves no trace of who held it; revoke instead

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreationForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return ()
        return [f.name for f in ApiKey._meta.fields if f.name != "key_hash"]

    def get_exclude(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        return ("key_hash",)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return  # keys are immutable once issued; revoke and issue a new one
        issued = api_key_create(
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            user_ids=form.cleaned_data["allowed_users"],
            all_users=form.cleaned_data["all_users"],
            expires_at=form.cleaned_data["expires_at"],
        )
        obj.pk = issued.api_key.pk
        # Kept on the request for response_add only: never in a message (the messages cookie
        # is signed, not encrypted) nor in the session.
        request._issued_api_key = (issued.api_key.prefix, issued.secret)  # type: ignore[attr-defined]  # handed to the response view, once

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        prefix, secret = getattr(request, "_issued_api_key", (obj.prefix, ""))
        return self.shown_once(
            request,
            title="New API key",
            explanation="The key is shown once, here only: store it now. We keep only its hash.",
            secrets=[(f"{obj.name} ({prefix})", secret)],
            headings=("key", "secret"),
        )

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="users")
    def users(self, obj: ApiKey) -> str:
        return "all" if obj.all_users else ", ".join(obj.allowed_user_ids)

    @admin.action(description="Revoke", permissions=["revoke_api_key"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        """Whoever holds `core.revoke_api_key` (superusers; no group); audited per key."""
        for key in queryset:
            api_key_revoke(api_key=key, actor=staff_actor(request))
        self.message_user(request, f"{queryset.count()} key(s) revoked.", messages.INFO)
