"""What each app holds about a person, registered by the app that owns it.

Erasure, its verification scan and the guard test all read this one list, so a new model
that names a person is erased (and checked) once its app registers it here, whatever its
person field is called. Apps register in their AppConfig.ready():

    registry.register_model("jobs.IngestionJob", user_field="user_id")
    registry.register(PersonStore("access.ApiKey grants", erase=..., count=...))

Stores run in registration order of their `order` (lower first): what must go first (revoke
at Oura while the tokens still exist) registers with a low order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from django.apps import apps
from django.db import models


@dataclass(frozen=True)
class Person:
    """Everything that identifies one person in our stores: our id and their Oura ids."""

    user_id: str
    oura_ids: tuple[str, ...] = ()

    @property
    def identifiers(self) -> tuple[str, ...]:
        return (self.user_id, *self.oura_ids)


@dataclass(frozen=True)
class PersonStore:
    name: str
    # Removes what the store holds of the person; returns how many items went.
    erase: Callable[[Person], int]
    # How many items of the person the store still holds (the verification scan).
    count: Callable[[Person], int]
    order: int = 100
    # Model label and person fields, for model stores (the guard test reads them).
    model: str = ""
    fields: tuple[str, ...] = ()
    # How many S3 objects its erase removes with its rows (for the receipt), if any.
    objects: Callable[[Person], int] | None = None


_STORES: dict[str, PersonStore] = {}
# Our user id -> the Oura account ids it has had, from the app that knows (ingestion).
_IDENTITY_RESOLVERS: list[Callable[[str], set[str]]] = []


def register_identity_resolver(resolver: Callable[[str], set[str]]) -> None:
    if resolver not in _IDENTITY_RESOLVERS:
        _IDENTITY_RESOLVERS.append(resolver)


def oura_ids_of(user_id: str) -> set[str]:
    found: set[str] = set()
    for resolver in _IDENTITY_RESOLVERS:
        found |= resolver(user_id)
    return {i for i in found if i}


def register(store: PersonStore) -> None:
    _STORES[store.name] = store  # re-registration (autoreload) replaces


def register_model(
    label: str, *, user_field: str = "", oura_field: str = "", order: int = 100
) -> None:
    """A model whose rows belong to the person named in `user_field` (our id) or in
    `oura_field` (their Oura account id: orphans that never had one of our ids)."""

    def matching(person: Person) -> models.QuerySet[models.Model]:
        model: type[models.Model] = apps.get_model(label)
        condition = models.Q(pk__in=[])
        if user_field:
            condition |= models.Q(**{user_field: person.user_id})
        if oura_field and person.oura_ids:
            condition |= models.Q(**{f"{oura_field}__in": person.oura_ids})
        return model._default_manager.filter(condition)

    def erase(person: Person) -> int:
        deleted, _ = matching(person).delete()
        return deleted

    fields = tuple(f for f in (user_field, oura_field) if f)
    register(
        PersonStore(
            label, erase=erase, count=lambda p: matching(p).count(), order=order,
            model=label, fields=fields,
        )
    )  # fmt: skip


def stores() -> list[PersonStore]:
    return sorted(_STORES.values(), key=lambda store: store.order)


# --- finding a person in bytes (bus messages, dead letters, archived envelopes) -----------

# Our user ids and Oura ids appear as whole values: a JSON string ("alice"), a path segment
# (user=alice/), a subject token (health.normalized.user.alice.daily), an escaped JSON string
# inside a JSON string (\"alice\"). Matching only there keeps a short id from matching
# inside unrelated words.
_BEFORE = r"(?:(?<=[\"=./\s])|^)"
_AFTER = r"(?=[\"/.\\\s&]|$)"


def mention_pattern(person: Person) -> re.Pattern[bytes]:
    ids = "|".join(re.escape(i) for i in sorted(set(person.identifiers), key=len, reverse=True))
    return re.compile(f"{_BEFORE}(?:{ids}){_AFTER}".encode())


def dead_letter_store() -> PersonStore:
    def matching_ids(person: Person) -> list[int]:
        from core.models import DeadLetter

        pattern = mention_pattern(person)
        return [
            pk
            for pk, subject, data in DeadLetter.objects.values_list("pk", "subject", "data")
            if pattern.search(bytes(data)) or pattern.search(subject.encode())
        ]

    def erase(person: Person) -> int:
        from core.models import DeadLetter

        deleted, _ = DeadLetter.objects.filter(pk__in=matching_ids(person)).delete()
        return deleted

    return PersonStore(
        "core.DeadLetter", erase=erase, count=lambda p: len(matching_ids(p)), order=200,
        model="core.DeadLetter", fields=("data",),
    )  # fmt: skip


def audit_store() -> PersonStore:
    """Audit entries stay (the log is append-only and hash-chained); erasure blanks the
    plain id in those that kept it, leaving the keyed hash. Last: the other stores' erasure
    writes entries of its own (a revoked connection)."""

    def count(person: Person) -> int:
        from audit.models import AuditEntry

        return AuditEntry.objects.filter(user_id=person.user_id).count()

    def erase(person: Person) -> int:
        from audit.services import audit_forget_person

        return audit_forget_person(user_id=person.user_id)

    return PersonStore(
        "audit.AuditEntry", erase=erase, count=count, order=900,
        model="audit.AuditEntry", fields=("user_id",),
    )  # fmt: skip
