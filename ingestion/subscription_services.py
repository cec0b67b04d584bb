"""Oura webhook subscriptions: one per (event_type x data_type Oura announces by webhook).

Subscriptions are application-level (CONTRACT 5.1): one set covers every connected user.
Oura gives each about 90 days; `subscriptions_sync` creates what is missing and renews any
that expire within RENEW_WITHIN, so running it daily (or from `make run`) keeps them alive.

Oura's list is the truth and our table is its mirror. The two drift apart: a subscription
deleted or expired at Oura, an Oura (or simulator) that forgot them all, a crash between
Oura's 201 and our insert. Sync therefore reconciles instead of assuming: it creates what
Oura lacks, adopts what Oura has, replaces a local row of the same kind that Oura no longer
knows, and cancels extra copies of one kind at Oura (each would deliver every event again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.models import AuditEntry
from audit.services import audit_record
from ingestion.data_types import WEBHOOK_TYPES
from ingestion.models import WebhookSubscription
from ingestion.oura_client import OuraRequestError, get_client

logger = logging.getLogger(__name__)

RENEW_WITHIN = timedelta(days=7)
EVENT_TYPES = ("create", "update", "delete")
# Every data type Oura announces by webhook, in its webhook spelling (the registry's).
DATA_TYPES = tuple(WEBHOOK_TYPES)


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _expiry(model: dict[str, Any]) -> datetime:
    parsed = parse_datetime(str(model["expiration_time"]))
    if parsed is None:
        raise OuraRequestError(200, "subscription without a valid expiration_time")
    return parsed if parsed.tzinfo else timezone.make_aware(parsed)


def _mirror(model: dict[str, Any], *, renewed: bool = False) -> WebhookSubscription:
    """Record Oura's subscription; a local row of the same kind under another id is stale
    (Oura replaced or forgot it) and gives way, so the unique kind never blocks the mirror."""
    now = timezone.now()
    defaults: dict[str, Any] = {
        "event_type": model["event_type"],
        "data_type": model["data_type"],
        "callback_url": model["callback_url"],
        "expiration_time": _expiry(model),
        "updated_at": now,
    }
    if renewed:
        defaults["renewed_at"] = now
    subscription_id = str(model["id"])
    with transaction.atomic():
        WebhookSubscription.objects.filter(
            callback_url=defaults["callback_url"],
            event_type=defaults["event_type"],
            data_type=defaults["data_type"],
        ).exclude(subscription_id=subscription_id).delete()
        subscription, _ = WebhookSubscription.objects.update_or_create(
            subscription_id=subscription_id, defaults=defaults
        )
    return subscription


def subscriptions_list_remote() -> list[dict[str, Any]]:
    response = get_client().subscriptions_request("GET")
    if response.status_code != 200:
        raise OuraRequestError(response.status_code)
    models: list[dict[str, Any]] = response.json()
    return models


def _renew(subscription_id: str) -> dict[str, Any]:
    response = get_client().subscriptions_request("PUT", f"/renew/{subscription_id}")
    if response.status_code != 200:
        raise OuraRequestError(response.status_code)
    body: dict[str, Any] = response.json()
    return body


def _delete_remote(subscription_id: str) -> None:
    response = get_client().subscriptions_request("DELETE", f"/{subscription_id}")
    # Oura answers an unknown id with 403 "does not exist" (CONTRACT 5.1; 404 elsewhere):
    # already gone is the goal here.
    if response.status_code not in (200, 204, 403, 404):
        raise OuraRequestError(response.status_code)


def _one_per_kind(
    remote: list[dict[str, Any]], report: SyncReport
) -> dict[tuple[str, str], dict[str, Any]]:
    """Oura's subscriptions by kind, cancelling extra copies of a kind at Oura.

    The copy that lives longest is kept; a copy that cannot be cancelled now stays listed
    in `failed` and is tried again on the next sync.
    """
    by_kind: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for model in remote:
        by_kind.setdefault((model["event_type"], model["data_type"]), []).append(model)
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, models in by_kind.items():
        models.sort(key=_expiry, reverse=True)
        kept[kind] = models[0]
        for extra in models[1:]:
            name = f"{kind[0]}:{kind[1]}"
            try:
                _delete_remote(str(extra["id"]))
                report.removed.append(name)
            except OuraRequestError as exc:
                logger.warning("oura_subscription_failed", extra={"subscription": name})
                report.failed.append(f"{name} duplicate ({exc})")
    return kept


def subscriptions_sync(*, callback_url: str | None = None) -> SyncReport:
    """Make Oura's subscriptions for our callback match what we handle, and our mirror match
    Oura's; idempotent, and safe whatever state either side was left in."""
    callback = callback_url or settings.OURA_WEBHOOK_CALLBACK_URL
    report = SyncReport()
    remote = [m for m in subscriptions_list_remote() if m.get("callback_url") == callback]
    by_kind = _one_per_kind(remote, report)
    soon = timezone.now() + RENEW_WITHIN
    for data_type in DATA_TYPES:
        for event_type in EVENT_TYPES:
            name = f"{event_type}:{data_type}"
            existing = by_kind.get((event_type, data_type))
            try:
                if existing is None:
                    response = get_client().subscriptions_request(
                        "POST",
                        json_body={
                            "callback_url": callback,
                            "verification_token": settings.OURA_WEBHOOK_VERIFICATION_TOKEN,
                            "event_type": event_type,
                            "data_type": data_type,
                        },
                    )
                    if response.status_code != 201:
                        raise OuraRequestError(response.status_code)
                    _mirror(response.json())
                    report.created.append(name)
                elif _expiry(existing) <= soon:
                    _mirror(_renew(str(existing["id"])), renewed=True)
                    report.renewed.append(name)
                else:
                    _mirror(existing)
                    report.unchanged.append(name)
            except OuraRequestError as exc:
                logger.warning("oura_subscription_failed", extra={"subscription": name})
                report.failed.append(f"{name} ({exc})")
    # Forget local mirrors that Oura no longer has (deleted, expired, or cancelled by a 410).
    live_ids = {str(m["id"]) for m in subscriptions_list_remote()}
    WebhookSubscription.objects.exclude(subscription_id__in=live_ids).delete()
    return report


def subscriptions_renew(
    *, within: timedelta = RENEW_WITHIN, actor: str | None = None
) -> SyncReport:
    """Renew every subscription of ours that expires within `within`. A run asked for by a
    person (`actor`, the admin action) is audited; the scheduler's runs are in upkeep.run."""
    report = SyncReport()
    soon = timezone.now() + within
    for model in subscriptions_list_remote():
        name = f"{model['event_type']}:{model['data_type']}"
        if _expiry(model) > soon:
            _mirror(model)
            report.unchanged.append(name)
            continue
        try:
            _mirror(_renew(str(model["id"])), renewed=True)
            report.renewed.append(name)
        except OuraRequestError as exc:
            report.failed.append(f"{name} ({exc})")
    if actor is not None:
        audit_record(
            action=AuditEntry.Action.SUBSCRIPTIONS_RENEWED,
            actor=actor,
            details={
                "renewed": len(report.renewed),
                "unchanged": len(report.unchanged),
                "failed": len(report.failed),
            },
        )
    return report
