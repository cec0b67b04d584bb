"""Reads of the ingestion domain."""

from __future__ import annotations

from collections.abc import Collection

from django.db.models import Q

from ingestion.models import OuraConnection


def connection_for_user(*, user_id: str) -> OuraConnection | None:
    return OuraConnection.objects.filter(user_id=user_id).first()


def connection_for_provider_user(*, provider_user_id: str) -> OuraConnection | None:
    """The live (not revoked) link of one Oura account, whichever of our users holds it."""
    return (
        OuraConnection.objects.filter(provider_user_id=provider_user_id)
        .exclude(status=OuraConnection.Status.REVOKED)
        .first()
    )


def connections_by_user(
    *, user_ids: Collection[str], provider_user_ids: Collection[str]
) -> tuple[dict[str, OuraConnection], dict[str, OuraConnection]]:
    """The connections of these users, in one query: (by our user id, by Oura user id)."""
    if not user_ids and not provider_user_ids:
        return {}, {}
    found = list(
        OuraConnection.objects.filter(
            Q(user_id__in=list(user_ids)) | Q(provider_user_id__in=list(provider_user_ids))
        )
    )
    return (
        {conn.user_id: conn for conn in found},
        {conn.provider_user_id: conn for conn in found},
    )
