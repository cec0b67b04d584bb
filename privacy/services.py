"""GDPR erasure: everything of one person, provably gone, even while data is arriving.

1. `erasure_request` writes the request and, first of all, a tombstone per Oura account:
   from its commit on, the webhook path, backfill pages and the normalizer refuse to store
   the person again (they check it inside their own transactions).
2. `erasure_run` takes the person's lock (the one every normalized and backfill write of the
   person takes), then erases each registered store (privacy/registry.py), the S3 prefixes
   (also objects no index row lists), and every stream message that names the person.
3. A verification scan of Postgres, S3 and every stream must find nothing; a writer that
   slipped in between is caught by the scan and erased on the next pass.
4. The receipt (counts per store, the scan, who asked, when) goes into the audit log, and
   the request keeps only the person's keyed hash.

Every step is idempotent, so a crashed or failed run is resumed by running it again.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_record
from core import raw_store
from core.db import person_lock
from core.identifiers import validate_user_id
from core.pseudonyms import person_hash
from privacy import registry
from privacy.models import ErasureRequest, ErasureTombstone
from privacy.registry import Person
from privacy.streams import stream_messages_count, stream_messages_delete

logger = logging.getLogger(__name__)

MAX_PASSES = 3
RAW_PREFIX = "provider=oura/"


class ErasureIncomplete(RuntimeError):
    """The verification scan still found the person after every pass."""


def erasure_request(*, user_id: str, actor: str) -> ErasureRequest:
    """Record the request and its tombstones (committed before any deletion starts). Asking
    again while one is pending returns that one, with any Oura account found since."""
    validate_user_id(user_id)
    ref = person_hash(user_id)
    oura_ids = registry.oura_ids_of(user_id)
    with transaction.atomic():
        request = (
            ErasureRequest.objects.select_for_update()
            .filter(person_ref=ref, status__in=ErasureRequest.PENDING_STATUSES)
            .first()
        )
        if request is None:
            request = ErasureRequest.objects.create(
                person_ref=ref, user_id=user_id, oura_ids=sorted(oura_ids), requested_by=actor
            )
        elif not oura_ids <= set(request.oura_ids):
            request.oura_ids = sorted(oura_ids | set(request.oura_ids))
            request.save(update_fields=["oura_ids"])
        ErasureTombstone.objects.get_or_create(
            ref=ref, defaults={"namespace": ErasureTombstone.Namespace.USER}
        )
        for oura_id in request.oura_ids:
            ErasureTombstone.objects.get_or_create(
                ref=person_hash(oura_id, namespace="oura"),
                defaults={"namespace": ErasureTombstone.Namespace.OURA},
            )
    logger.info("erasure_requested", extra={"person": ref, "request_id": str(request.request_id)})
    return request


def _raw_folders() -> list[str]:
    return raw_store.list_folders(RAW_PREFIX)  # provider=oura/date=YYYY-MM-DD/


def _objects_of(person: Person, pattern: re.Pattern[bytes]) -> list[str]:
    """Objects under the person's prefix on every date, and unattributed (`user=unknown`)
    objects whose content names one of their Oura accounts."""
    keys: list[str] = []
    for folder in _raw_folders():
        keys += raw_store.list_keys(f"{folder}user={person.user_id}/")
        if person.oura_ids:
            for key in raw_store.list_keys(f"{folder}user=unknown/"):
                if pattern.search(raw_store.get(key)):
                    keys.append(key)
    return keys


def _postgres_counts(person: Person) -> dict[str, int]:
    return {store.name: store.count(person) for store in registry.stores()}


def erasure_scan(person: Person) -> dict[str, Any]:
    """Where the person can still be found: rows per store, objects, messages per stream."""
    pattern = registry.mention_pattern(person)
    postgres = _postgres_counts(person)
    objects = len(_objects_of(person, pattern))
    streams = stream_messages_count(pattern)
    total = sum(postgres.values()) + objects + sum(streams.values())
    return {"postgres": postgres, "s3_objects": objects, "streams": streams, "found": total}


def _erase_pass(person: Person, counts: dict[str, Any]) -> None:
    pattern = registry.mention_pattern(person)
    rows: dict[str, int] = counts.setdefault("rows", {})
    for store in registry.stores():
        with transaction.atomic():
            if store.objects is not None:
                counts["s3_objects"] = counts.get("s3_objects", 0) + store.objects(person)
            rows[store.name] = rows.get(store.name, 0) + store.erase(person)
    keys = _objects_of(person, pattern)
    counts["s3_objects"] = counts.get("s3_objects", 0) + raw_store.delete_keys(keys)
    messages: dict[str, int] = counts.setdefault("stream_messages", {})
    for stream, n in stream_messages_delete(pattern).items():
        messages[stream] = messages.get(stream, 0) + n


def erasure_run(*, request: ErasureRequest) -> ErasureRequest:
    """Erase, verify, record the receipt. Resumes a request left running or failed."""
    claimed = ErasureRequest.objects.filter(
        pk=request.pk, status__in=ErasureRequest.PENDING_STATUSES
    ).update(status=ErasureRequest.Status.RUNNING, started_at=timezone.now(), error="")
    request.refresh_from_db()
    if not claimed:
        return request  # done already
    ErasureRequest.objects.filter(pk=request.pk).update(attempts=request.attempts + 1)
    person = Person(request.user_id, tuple(request.oura_ids))
    started = time.monotonic()
    counts: dict[str, Any] = {}
    person_lock(person.user_id, scope="session")
    try:
        # A writer that slipped in between (a delivery verified before the tombstone, a
        # message published after the stream pass) is found by the scan and erased again.
        passes = 0
        while True:
            passes += 1
            _erase_pass(person, counts)
            scan = erasure_scan(person)
            if scan["found"] == 0:
                break
            if passes == MAX_PASSES:
                raise ErasureIncomplete(
                    f"still found {scan['found']} item(s) after {passes} passes"
                )
        receipt = {
            "request_id": str(request.request_id),
            "person": request.person_ref,
            "oura_accounts": len(person.oura_ids),
            "requested_by": request.requested_by,
            "requested_at": request.requested_at.isoformat(),
            "finished_at": timezone.now().isoformat(),
            "passes": passes,
            "attempts": request.attempts + 1,
            "erased": counts,
            "verification": scan,
            "duration_s": round(time.monotonic() - started, 3),
        }
        with transaction.atomic():
            ErasureRequest.objects.filter(pk=request.pk).update(
                status=ErasureRequest.Status.DONE, finished_at=timezone.now(), receipt=receipt,
                user_id="", oura_ids=[],
            )  # fmt: skip
            audit_record(
                action=AuditEntry.Action.USER_ERASED,
                actor=request.requested_by,
                details=receipt,
            )
    except Exception as exc:
        ErasureRequest.objects.filter(pk=request.pk).update(
            status=ErasureRequest.Status.FAILED, error=type(exc).__name__[:200]
        )
        logger.warning(
            "erasure_failed",
            extra={"person": request.person_ref, "error_type": type(exc).__name__},
        )
        raise
    finally:
        try:
            person_lock(person.user_id, scope="release")
        except Exception:
            logger.warning("erasure_unlock_failed", extra={"person": request.person_ref})
    request.refresh_from_db()
    logger.info("user_erased", extra={"person": request.person_ref, "passes": passes})
    return request


def user_erase(*, user_id: str, actor: str) -> ErasureRequest:
    """Request and run one person's erasure (the admin action and `erase_user`)."""
    return erasure_run(request=erasure_request(user_id=user_id, actor=actor))


def tombstones_lift(*, user_id: str, provider_user_id: str) -> int:
    """A new consent: the person connected again through OAuth, so their data may flow
    again. Called by the OAuth callback inside its transaction."""
    refs = [person_hash(user_id), person_hash(provider_user_id, namespace="oura")]
    deleted, _ = ErasureTombstone.objects.filter(ref__in=refs).delete()
    return deleted


def erasures_resume() -> list[ErasureRequest]:
    """Run every request left requested, running (a crash) or failed; for the scheduler."""
    pending = ErasureRequest.objects.filter(Q(status__in=ErasureRequest.PENDING_STATUSES)).order_by(
        "requested_at"
    )
    return [erasure_run(request=request) for request in pending]
