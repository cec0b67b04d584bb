"""Reads of the ingestion domain."""

from __future__ import annotations

from ingestion.models import OuraConnection


def connection_for_user(*, user_id: str) -> OuraConnection | None:
    return OuraConnection.objects.filter(user_id=user_id).first()


def connection_for_provider_user(*, provider_user_id: str) -> OuraConnection | None:
    return OuraConnection.objects.filter(provider_user_id=provider_user_id).first()
