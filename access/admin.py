"""API keys in the backoffice: created with the key shown once, then only revocable."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from access.models import ApiKey, Scope
from access.services import api_key_create, api_key_revoke
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
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = (
        "name", "prefix", "scope_list", "users", "created_at", "expires_at", "revoked_at",
        "last_used_at",
    )  # fmt: skip
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    actions = ("revoke",)

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
        messages.warning(request, f"New API key (shown once, store it now): {issued.secret}")

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="users")
    def users(self, obj: ApiKey) -> str:
        return "all" if obj.all_users else ", ".join(obj.allowed_user_ids)

    @admin.action(description="Revoke")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            api_key_revoke(api_key=key)
        self.message_user(request, f"{queryset.count()} key(s) revoked.", messages.INFO)
