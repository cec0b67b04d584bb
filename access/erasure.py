"""API keys' per-person grants, for privacy's erasure (registered in apps.py)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from access.models import ApiKey
from privacy.registry import Person, PersonStore


def _granting(person: Person) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(allowed_user_ids__contains=[person.user_id])


def _drop_grants(person: Person) -> int:
    """Drop the person from every key's grant; a key left naming nobody is revoked (it was
    made for that person, and "nobody" must never read as "everybody")."""
    changed = 0
    for key in _granting(person).select_for_update():
        key.allowed_user_ids = [u for u in key.allowed_user_ids if u != person.user_id]
        fields = ["allowed_user_ids"]
        if not key.allowed_user_ids and not key.all_users and key.revoked_at is None:
            key.revoked_at = timezone.now()
            fields.append("revoked_at")
        key.save(update_fields=fields)
        changed += 1
    return changed


def person_store() -> PersonStore:
    return PersonStore(
        "access.ApiKey grants", erase=_drop_grants, count=lambda p: _granting(p).count(),
        model="access.ApiKey", fields=("allowed_user_ids",),
    )  # fmt: skip
