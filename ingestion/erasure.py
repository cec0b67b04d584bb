"""What ingestion holds about a person, for privacy's erasure (registered in apps.py)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from core import raw_store
from ingestion.models import OAuthState, OuraConnection, RawEvent
from privacy.registry import Person, PersonStore

ERASE_BATCH = 500


def oura_ids_of(user_id: str) -> set[str]:
    """Every Oura account our user has had: the connection and the raw events name them."""
    ids = set(
        OuraConnection.objects.filter(user_id=user_id).values_list("provider_user_id", flat=True)
    )
    ids |= set(
        RawEvent.objects.filter(user_id=user_id)
        .exclude(provider_user_id="")
        .values_list("provider_user_id", flat=True)
        .distinct()
    )
    return ids


def _connections(person: Person) -> QuerySet[OuraConnection]:
    return OuraConnection.objects.filter(
        Q(user_id=person.user_id) | Q(provider_user_id__in=person.oura_ids)
    )


def _erase_connections(person: Person) -> int:
    """Revoke at Oura while we still hold the tokens, then forget the link."""
    from ingestion.connection_services import connection_disconnect

    for connection in _connections(person):
        connection_disconnect(connection=connection, actor="erasure")
    deleted, _ = _connections(person).delete()
    return deleted


def _raw_events(person: Person) -> QuerySet[RawEvent]:
    # By our id, and by Oura id: orphans (no connection, user_id '') name only the latter.
    return RawEvent.objects.filter(
        Q(user_id=person.user_id) | Q(provider_user_id__in=person.oura_ids)
    )


def _erase_raw_events(person: Person) -> int:
    """Objects, then their rows, a batch per transaction (the caller's).

    The rows are locked first: a relay that claimed them is archiving them right now, and
    its object key is only known once it commits; we wait for it and delete what it wrote.
    """
    deleted = 0
    while True:
        batch = list(
            _raw_events(person).select_for_update().values_list("pk", "object_key")[:ERASE_BATCH]
        )
        if not batch:
            return deleted
        raw_store.delete_keys([key for _, key in batch if key])
        count, _ = RawEvent.objects.filter(pk__in=[pk for pk, _ in batch]).delete()
        deleted += count


def _oauth_states(person: Person) -> QuerySet[OAuthState]:
    return OAuthState.objects.filter(user_id=person.user_id)


def person_stores() -> list[PersonStore]:
    def erase_states(person: Person) -> int:
        return _oauth_states(person).delete()[0]

    return [
        PersonStore(
            "ingestion.OuraConnection", erase=_erase_connections,
            count=lambda p: _connections(p).count(), order=10,
            model="ingestion.OuraConnection", fields=("user_id", "provider_user_id"),
        ),
        PersonStore(
            "ingestion.RawEvent", erase=_erase_raw_events,
            count=lambda p: _raw_events(p).count(), order=20,
            model="ingestion.RawEvent", fields=("user_id", "provider_user_id"),
            objects=lambda p: _raw_events(p).exclude(object_key="").count(),
        ),
        PersonStore(
            "ingestion.OAuthState", erase=erase_states,
            count=lambda p: _oauth_states(p).count(),
            model="ingestion.OAuthState", fields=("user_id",),
        ),
    ]  # fmt: skip
