"""Dead letters in the backoffice: look, then replay once the cause is fixed.

Who: operators (view the list, `core.replay_dead_letter`). Dead letters are removed only by
erasure and retention, never from this page.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core import bus
from core.admin_rights import GuardedAdmin, staff_actor
from core.models import DeadLetter
from core.services import dead_letters_replay


@admin.register(DeadLetter)
class DeadLetterAdmin(GuardedAdmin[DeadLetter]):
    list_display = (
        "id", "consumer", "subject", "stream_seq", "error_type", "attempts", "created_at",
        "replayed_at", "resolved",
    )  # fmt: skip
    list_filter = ("consumer", "resolved", "error_type")
    search_fields = ("msg_id", "subject")
    # `data` is an envelope (ids only), but it is still left out of the page: the reason and
    # the ids are what a person needs to decide on a replay.
    fields = (
        "consumer", "stream", "subject", "stream_seq", "msg_id", "error_type", "reason",
        "attempts", "created_at", "replayed_at", "resolved",
    )  # fmt: skip
    readonly_fields = fields
    actions = ("replay",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # only consumers write dead letters

    def has_change_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False  # replay changes them, through dead_letters_replay

    def has_delete_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False  # removed by erasure and retention only

    @admin.action(
        description="Replay (publish again to the original subject)",
        permissions=["replay_dead_letter"],
    )
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        """Operators (`core.replay_dead_letter`); each replay is audited by the service."""
        try:
            count = dead_letters_replay(queryset=queryset, actor=staff_actor(request))
        except bus.BusUnavailable:
            self.message_user(request, "NATS is unavailable; nothing replayed.", messages.ERROR)
            return
        self.message_user(request, f"{count} dead letter(s) replayed.", messages.INFO)
