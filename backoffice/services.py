"""Writes of the backoffice domain: raw-object access, retention (erasure: privacy/) and the
staff groups."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_record
from core import raw_store

logger = logging.getLogger(__name__)

# The three staff roles and exactly the rights each holds ("app_label.codename"). The named
# rights are core.StaffRight's; the others are the stock view rights of each model. Rights
# no group holds (disconnect, API keys, any add/change/delete) stay with superusers or are
# granted one by one.
STAFF_GROUPS: dict[str, frozenset[str]] = {
    # Answers people's questions: connections, jobs and coverage; may start a backfill.
    # No raw data, no audit log.
    "support": frozenset(
        {
            "ingestion.view_ouraconnection",
            "jobs.view_ingestionjob",
            "core.view_coverage",
            "core.start_backfill",
        }
    ),
    # Raw documents, erasure and the audit log that records both.
    "privacy officer": frozenset(
        {
            "ingestion.view_ouraconnection",
            "ingestion.view_rawevent",
            "core.view_raw_payload",
            "core.erase_person",
            "audit.view_auditentry",
        }
    ),
    # Keeps the pipeline running: dead letters and replay, subscriptions, jobs incl. cancel.
    "operator": frozenset(
        {
            "core.view_deadletter",
            "core.replay_dead_letter",
            "ingestion.view_webhooksubscription",
            "core.manage_subscriptions",
            "jobs.view_ingestionjob",
            "core.start_backfill",
            "core.cancel_job",
            "jobs.view_watchdogfinding",  # what the missed-webhook watchdog found and did
        }
    ),
}


def staff_groups_setup() -> dict[str, dict[str, list[str]]]:
    """Create the staff groups with exactly the rights of STAFF_GROUPS: rights missing are
    added, rights a group should not hold are removed. Idempotent; returns what changed."""
    wanted = set().union(*STAFF_GROUPS.values())
    found = {
        f"{p.content_type.app_label}.{p.codename}": p
        for p in Permission.objects.select_related("content_type")
    }
    missing = sorted(wanted - found.keys())
    if missing:
        raise LookupError(f"permissions not in the database (run migrate first): {missing}")
    changes: dict[str, dict[str, list[str]]] = {}
    with transaction.atomic():
        for name, rights in STAFF_GROUPS.items():
            group, _ = Group.objects.get_or_create(name=name)
            held = {
                f"{p.content_type.app_label}.{p.codename}"
                for p in group.permissions.select_related("content_type")
            }
            added, removed = sorted(rights - held), sorted(held - rights)
            group.permissions.add(*(found[r] for r in added))
            group.permissions.remove(*(found[r] for r in removed))
            changes[name] = {"added": added, "removed": removed}
    return changes


def raw_object_signed_url(*, event_id: uuid.UUID, staff: str) -> str:
    """A short-lived URL to one raw object, for backoffice staff only; every issue audited."""
    from ingestion.models import RawEvent

    event = RawEvent.objects.get(event_id=event_id)
    if not event.object_key:
        raise ValueError("this event is not archived yet")
    url = raw_store.signed_url(event.object_key)
    audit_record(
        action=AuditEntry.Action.RAW_ACCESSED,
        actor=staff,
        user_id=event.user_id,
        event_id=event.event_id,
        details={"ttl_s": settings.RAW_SIGNED_URL_TTL_S},
    )
    return url


def raw_retention_purge(*, older_than_days: int | None = None, actor: str = "retention") -> int:
    """Delete raw objects and their index rows older than RAW_RETENTION_DAYS (180).

    Archived or not: a row the relay never archived is as old as any other (its envelope is
    the raw payload, kept in Postgres). Objects go first, then their rows, a batch at a time,
    and rows normalized from a purged object say so (normalized.raw_objects_forget). The
    bucket's lifecycle rule expires objects on its own; this keeps the index and the rows in
    step with it.
    """
    from ingestion.models import RawEvent
    from normalized.services import raw_objects_forget

    days = older_than_days or settings.RAW_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    purged = forgotten = 0
    while True:
        with transaction.atomic():
            batch = list(
                RawEvent.objects.filter(received_at__lt=cutoff)
                .select_for_update(skip_locked=True)
                .order_by("received_at")
                .values_list("pk", "object_key")[:500]
            )
            if not batch:
                break
            keys = [key for _, key in batch if key]
            raw_store.delete_keys(keys)
            forgotten += raw_objects_forget(object_keys=keys)
            RawEvent.objects.filter(pk__in=[pk for pk, _ in batch]).delete()
            purged += len(batch)
    audit_record(
        action=AuditEntry.Action.RETENTION_PURGED,
        actor=actor,
        details={"rows": purged, "older_than_days": days, "normalized_rows_unlinked": forgotten},
    )
    return purged


def expired_purge(*, actor: str = "retention") -> dict[str, int]:
    """The rest of the written retention policy (docs/phase-3/privacy.md): dead letters,
    used or expired sign-in states, and audit entries past AUDIT_RETENTION_DAYS."""
    from audit.services import audit_purge
    from core.services import dead_letters_purge
    from ingestion.connection_services import oauth_states_purge

    counts = {
        "dead_letters": dead_letters_purge(older_than_days=settings.DEAD_LETTER_RETENTION_DAYS),
        "oauth_states": oauth_states_purge(),
        "audit_entries": audit_purge(older_than_days=settings.AUDIT_RETENTION_DAYS),
    }
    audit_record(action=AuditEntry.Action.RETENTION_PURGED, actor=actor, details=counts)
    return counts
