"""Reads for the writers that must not store an erased person again."""

from __future__ import annotations

from core.pseudonyms import person_hash
from privacy.models import ErasureTombstone


def oura_account_erased(provider_user_id: str) -> bool:
    """Webhooks and backfill pages of this Oura account are not to be stored."""
    ref = person_hash(provider_user_id, namespace="oura")
    return ErasureTombstone.objects.filter(ref=ref).exists()


def user_erased(user_id: str) -> bool:
    """Normalized rows of this user are not to be written (checked under the person lock)."""
    return ErasureTombstone.objects.filter(ref=person_hash(user_id)).exists()
