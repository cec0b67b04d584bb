"""The missed-webhook watchdog: notice when Oura went quiet about a person's data, or when a
webhook subscription lapsed, and repair both. Run by the scheduler (upkeep task `watchdog`).

Webhooks get lost: a subscription lapses or is cancelled at Oura (a 410 cancels it), or Oura's
retries (about an hour, CONTRACT 5.4) give up during our outage. Nothing else would notice:
the data simply stops arriving.

**Subscriptions.** Oura's own list is asked once per run (one app-level request) and compared
with what we must hold: every (event type x webhook data type) for our callback, none expired.
Our mirror is not enough: a subscription Oura expired or cancelled still looks alive in it,
and the renewal task only renews what Oura lists, never re-creates what is gone. When Oura
cannot be asked, the mirror is the best we have. Repair: `subscriptions_sync()`.

**Stale data: the rule.** For every active connection and every type Oura announces by
webhook that a backfill can page (and the connection's scopes grant), the watchdog takes the
last time we had *news* of that type for that person: a webhook, a fetched document or a
backfill page received (raw events), or a job that asked Oura for the type over a range
reaching the recent days and finished without an error for it. When that news is older than
the type's expected silence, it starts a small catch-up: a backfill job of the recent window.

Why news and not "the newest day held": which days a person *should* have is not knowable
(no ring worn, no app opened: CONTRACT 5.4 says sleep and readiness sync only when the app is
opened), so a gap in days is not a fault in itself. Silence is cheap to read (one indexed
aggregate per batch of people) and honest: either Oura told us something about the type
lately, or we asked. A catch-up that finds nothing is itself news (the job), so a person who
does not wear the ring costs one request per type per silence period, never a loop.
- Daily types (one document per day, updated through the day): a day and a bit of silence,
  DAILY_SILENCE, is unexpected for anyone wearing the ring.
- Documents and intervals (workouts, sessions, sleep periods, tags, rest mode) legitimately
  have gaps of days: SPORADIC_SILENCE bounds both their cost and how long a lost workout
  stays missing.
What it cannot see: one lost delivery between later ones of the same type (the later ones
are news). Most daily documents are updated again the next time the ring syncs, which heals
that; the rest is what a periodic backfill is for.

**Catch-ups** are ordinary backfill jobs (`job_start`, requested by "watchdog"), run by the
worker and paged through the shared rate budget at `Priority.BACKFILL`: they may use only
BACKFILL_SHARE of it, and live webhook fetches keep the rest. The window runs from the day
before the oldest stale news to today (UTC), CATCHUP_MIN_DAYS to CATCHUP_MAX_DAYS long: one
request per type (a type's window is 7 to 30 days). Idempotent: a type an active job of the
person already covers gets no new job (nor does an identical request, by the job table's
unique index), so a second run right after the first starts nothing. At most
`max_catch_ups` jobs per run, the stalest people first; the rest is recorded as deferred and
comes next run.

Every finding is a `WatchdogFinding` row (admin, read-only), a log line naming the person by
keyed hash only, and `watchdog_findings_total` / `watchdog_repairs_total`; the run itself is
audited by the scheduler (upkeep.run, with the counts) and each catch-up by job_start.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from core.pseudonyms import person_hash
from ingestion.data_types import DATA_TYPES, DataType, Kind, canonical, granted
from ingestion.models import OuraConnection, RawEvent, WebhookSubscription
from ingestion.oura_client import OuraError
from ingestion.rate_budget import BudgetExhausted
from ingestion.subscription_services import (
    DATA_TYPES as WEBHOOK_DATA_TYPES,
)
from ingestion.subscription_services import (
    EVENT_TYPES,
    subscriptions_list_remote,
    subscriptions_sync,
)
from jobs.metrics import watchdog_findings_total, watchdog_repairs_total
from jobs.models import IngestionJob, WatchdogFinding
from jobs.services import JobRequestInvalid, job_start

logger = logging.getLogger(__name__)

Reason = WatchdogFinding.Reason
Action = WatchdogFinding.Action

ACTOR = "watchdog"
DAILY_SILENCE = timedelta(hours=30)
SPORADIC_SILENCE = timedelta(hours=72)
CATCHUP_MIN_DAYS = 3
CATCHUP_MAX_DAYS = 10
MAX_CATCHUPS_PER_RUN = 50
# News older than the longest catch-up window changes nothing the watchdog does (the window
# is clamped), so it does not read further back.
LOOKBACK = timedelta(days=CATCHUP_MAX_DAYS)
FINDING_RETENTION = timedelta(days=90)
_USER_BATCH = 500

# Types Oura announces by webhook and a backfill can page into rows: the ones whose webhooks
# can be missed and repaired. Time series have no webhooks; raw-only types have no rows.
WATCHED_TYPES: dict[str, DataType] = {
    name: t for name, t in DATA_TYPES.items()
    if t.webhooks and t.backfill and t.kind is not Kind.RAW_ONLY
}  # fmt: skip
_NEWS_STATUSES = (RawEvent.Status.ACCEPTED, RawEvent.Status.TOMBSTONE)
_FINISHED_OK = (IngestionJob.Status.SUCCEEDED, IngestionJob.Status.SUCCEEDED_WITH_ERRORS)


def expected_silence(data_type: DataType) -> timedelta:
    return DAILY_SILENCE if data_type.kind is Kind.DAILY else SPORADIC_SILENCE


@dataclass
class WatchdogReport:
    run_id: uuid.UUID
    stale: int = 0  # (person, type) pairs found stale
    catch_ups: list[str] = field(default_factory=list)  # job ids started
    covered: int = 0
    deferred: int = 0
    refused: int = 0
    subscriptions_missing: int = 0
    subscriptions_expired: int = 0
    subscriptions_unrepaired: int = 0
    findings_purged: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "stale": self.stale, "catch_ups": len(self.catch_ups), "covered": self.covered,
            "deferred": self.deferred, "refused": self.refused,
            "subscriptions_missing": self.subscriptions_missing,
            "subscriptions_expired": self.subscriptions_expired,
            "subscriptions_unrepaired": self.subscriptions_unrepaired,
            "findings_purged": self.findings_purged,
        }  # fmt: skip


def watchdog_run(
    *, now: datetime | None = None, max_catch_ups: int = MAX_CATCHUPS_PER_RUN
) -> WatchdogReport:
    """Check subscriptions, then every connected person's data; repair and record. Never
    raises for one person or one subscription: those are recorded and the run goes on."""
    now = now or timezone.now()
    report = WatchdogReport(run_id=uuid.uuid4())
    # Subscriptions first: while one is missing its type goes silent for everyone, and the
    # catch-ups below only fill what went missing until it is back.
    _repair_subscriptions(report, now)
    _repair_stale_data(report, now, max_catch_ups)
    report.findings_purged, _ = WatchdogFinding.objects.filter(
        found_at__lt=now - FINDING_RETENTION
    ).delete()
    return report


def _record(report: WatchdogReport, finding: WatchdogFinding) -> None:
    finding.run_id = report.run_id
    finding.save(force_insert=True)
    watchdog_findings_total.labels(reason=finding.reason).inc()
    if finding.action in (Action.CATCH_UP_STARTED, Action.SUBSCRIPTIONS_SYNCED):
        watchdog_repairs_total.labels(reason=finding.reason).inc()


# -- subscriptions ---------------------------------------------------------------------------


def _held_subscriptions(callback: str) -> dict[tuple[str, str], datetime]:
    """(event type, data type) -> the latest expiry among our callback's subscriptions, as
    Oura lists them, or as our mirror has them when Oura cannot be asked."""
    held: dict[tuple[str, str], datetime] = {}
    try:
        listed = [
            (str(m["event_type"]), str(m["data_type"]), _parse_expiry(m["expiration_time"]))
            for m in subscriptions_list_remote()
            if m.get("callback_url") == callback
        ]
    except (OuraError, BudgetExhausted) as exc:
        logger.warning("watchdog_subscriptions_unlisted", extra={"error_type": type(exc).__name__})
        listed = [
            (s.event_type, s.data_type, s.expiration_time)
            for s in WebhookSubscription.objects.filter(callback_url=callback)
        ]
    for event_type, data_type, expiry in listed:
        kind = (event_type, data_type)
        held[kind] = max(expiry, held.get(kind, expiry))
    return held


def _parse_expiry(value: object) -> datetime:
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _repair_subscriptions(report: WatchdogReport, now: datetime) -> None:
    held = _held_subscriptions(settings.OURA_WEBHOOK_CALLBACK_URL)
    problems: list[tuple[str, str, str]] = []  # (reason, event type, data type)
    for data_type in WEBHOOK_DATA_TYPES:
        for event_type in EVENT_TYPES:
            expiry = held.get((event_type, data_type))
            if expiry is None:
                problems.append((Reason.SUBSCRIPTION_MISSING, event_type, data_type))
            elif expiry <= now:
                problems.append((Reason.SUBSCRIPTION_EXPIRED, event_type, data_type))
    if not problems:
        return
    failed: set[str] = set()
    detail = ""
    try:
        # Creates what is missing and renews what expires soon (expired included), for every
        # kind at once: one call repairs them all.
        sync = subscriptions_sync()
        # `failed` entries read "event:type (error)"; only the kind is kept.
        failed = {entry.split(" ", 1)[0] for entry in sync.failed}
    except Exception as exc:
        # Broad on purpose: whatever the sync raised, the stale-data check still runs, and
        # the finding says the repair failed (the error type only, never its message).
        detail = type(exc).__name__
        failed = {f"{event_type}:{data_type}" for _, event_type, data_type in problems}
    for reason, event_type, data_type in problems:
        name = f"{event_type}:{data_type}"
        repaired = name not in failed
        if reason == Reason.SUBSCRIPTION_MISSING:
            report.subscriptions_missing += 1
        else:
            report.subscriptions_expired += 1
        report.subscriptions_unrepaired += not repaired
        _record(
            report,
            WatchdogFinding(
                reason=reason, data_type=data_type, event_type=event_type, found_at=now,
                stale_since=held.get((event_type, data_type)),
                action=Action.SUBSCRIPTIONS_SYNCED if repaired else Action.SYNC_FAILED,
                detail=detail if not repaired else "",
            ),
        )  # fmt: skip
        logger.log(
            logging.INFO if repaired else logging.WARNING,
            "watchdog_subscription",
            extra={"reason": str(reason), "subscription": name, "repaired": repaired},
        )


# -- stale data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stale:
    """One person whose types went quiet; `since` is what the window and the order use."""

    connection: OuraConnection
    types: dict[str, datetime | None]  # type -> last news (None: none within the look-back)
    since: datetime  # the oldest last news, or the connection's start when there was none


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _USER_BATCH):
        yield items[start : start + _USER_BATCH]


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _last_news(user_ids: list[str], since: datetime) -> dict[tuple[str, str], datetime]:
    """(user id, type) -> the last news of the type, from raw events and finished jobs."""
    news: dict[tuple[str, str], datetime] = {}

    def keep(user_id: str, name: str, at: datetime) -> None:
        key = (user_id, canonical(name))  # webhooks say vo2_max, pages vO2_max
        if key not in news or at > news[key]:
            news[key] = at

    # raw_user_idx (user_id, received_at) answers this per person.
    events = (
        RawEvent.objects.filter(
            user_id__in=user_ids, received_at__gte=since, status__in=_NEWS_STATUSES
        )
        .values("user_id", "data_type")
        .annotate(last=Max("received_at"))
    )
    for row in events:
        keep(row["user_id"], row["data_type"], row["last"])
    # A job vouches for a type only up to the end of its range: a backfill of last year that
    # finished an hour ago says nothing about this week. updated_at is set with finished_at
    # (ingestion_job_status_idx).
    jobs = IngestionJob.objects.filter(
        user_id__in=user_ids, status__in=_FINISHED_OK, updated_at__gte=since,
        finished_at__gte=since,
    ).values_list("user_id", "data_types", "errors", "range_end", "finished_at")  # fmt: skip
    for user_id, data_types, errors, range_end, finished_at in jobs:
        if finished_at is None:  # excluded by the filter; the type says it may be
            continue
        vouched = min(finished_at, _day_start(range_end + timedelta(days=1)))
        for name in data_types:
            if name not in (errors or {}):
                keep(user_id, name, vouched)
    return news


def _active_jobs(user_ids: list[str]) -> dict[str, list[IngestionJob]]:
    by_user: dict[str, list[IngestionJob]] = {}
    for job in IngestionJob.objects.filter(
        user_id__in=user_ids, status__in=IngestionJob.ACTIVE_STATUSES
    ).order_by("created_at"):
        by_user.setdefault(job.user_id, []).append(job)
    return by_user


def _find_stale(connections: Iterable[OuraConnection], now: datetime) -> list[_Stale]:
    by_user = {c.user_id: c for c in connections}
    found: list[_Stale] = []
    for batch in _batches(sorted(by_user)):
        news = _last_news(batch, now - LOOKBACK)
        for user_id in batch:
            conn = by_user[user_id]
            types: dict[str, datetime | None] = {}
            for name, data_type in WATCHED_TYPES.items():
                if not granted(data_type, conn.scopes):
                    continue
                last = news.get((user_id, name))
                # A fresh connection has had no time to hear anything yet: its silence counts
                # from the connect (whose backfill, if one was asked for, is news too).
                if (last or conn.connected_at) < now - expected_silence(data_type):
                    types[name] = last
            if types:
                oldest = min((t for t in types.values() if t is not None), default=None)
                since = oldest or conn.connected_at
                found.append(_Stale(connection=conn, types=types, since=since))
    return found


def _window(since: datetime, now: datetime) -> tuple[date, date]:
    """From the day before the oldest news (a document of that day may have come after it)
    to today, UTC: the documents of every time zone that exist by now fall in it."""
    today = now.astimezone(UTC).date()
    start = since.astimezone(UTC).date() - timedelta(days=1)
    start = max(start, today - timedelta(days=CATCHUP_MAX_DAYS - 1))
    start = min(start, today - timedelta(days=CATCHUP_MIN_DAYS - 1))
    return start, today


def _covering(jobs: list[IngestionJob], name: str, start: date, end: date) -> IngestionJob | None:
    """An active job that will page the type over the window (up to yesterday at least: a
    job started a few hours before midnight still covers the day that went missing)."""
    for job in jobs:
        if (
            name in job.data_types
            and job.range_start <= start
            and job.range_end >= end - timedelta(days=1)
        ):
            return job
    return None


def _stale_finding(
    person: _Stale, name: str, now: datetime, action: str, job_id: uuid.UUID | None = None,
    detail: str = "",
) -> WatchdogFinding:  # fmt: skip
    return WatchdogFinding(
        reason=Reason.STALE_DATA, user_id=person.connection.user_id, data_type=name,
        found_at=now, stale_since=person.types[name], action=action, job_id=job_id,
        detail=detail,
    )  # fmt: skip


def _repair_stale_data(report: WatchdogReport, now: datetime, max_catch_ups: int) -> None:
    connections = OuraConnection.objects.filter(status=OuraConnection.Status.ACTIVE)
    stale = sorted(_find_stale(connections, now), key=lambda s: (s.since, s.connection.user_id))
    active = _active_jobs([s.connection.user_id for s in stale])
    started = 0
    for person in stale:
        user_id = person.connection.user_id
        start, end = _window(person.since, now)
        report.stale += len(person.types)
        findings: list[WatchdogFinding] = []
        missing: list[str] = []
        for name in sorted(person.types):
            covering = _covering(active.get(user_id, []), name, start, end)
            if covering is None:
                missing.append(name)
            else:
                findings.append(
                    _stale_finding(person, name, now, Action.ALREADY_COVERED, covering.job_id)
                )
        report.covered += len(person.types) - len(missing)
        action, job_id, detail = "", None, ""
        if missing and started >= max_catch_ups:
            action = Action.DEFERRED
            report.deferred += len(missing)
        elif missing:
            try:
                result = job_start(
                    user_id=user_id, start=start, end=end, data_types=missing,
                    requested_by=ACTOR,
                )  # fmt: skip
            except JobRequestInvalid as exc:
                # The connection changed since it was read (reauth, scopes): nothing to repair
                # with a job; the person must connect again.
                action, detail = Action.NOT_REPAIRED, exc.code
                report.refused += len(missing)
            else:
                job_id = result.job.job_id
                if result.created:
                    action = Action.CATCH_UP_STARTED
                    started += 1
                    report.catch_ups.append(str(job_id))
                else:  # an identical job is active (a concurrent run started it)
                    action = Action.ALREADY_COVERED
                    report.covered += len(missing)
        findings.extend(
            _stale_finding(person, name, now, action, job_id, detail) for name in missing
        )
        for row in findings:
            _record(report, row)
        logger.info(
            "watchdog_stale_data",
            extra={
                "person": person_hash(user_id),
                "data_types": sorted(person.types),
                "stale_since": person.since.isoformat(),
                "window": [start.isoformat(), end.isoformat()],
                "action": action or Action.ALREADY_COVERED,
                "job_id": str(job_id) if job_id else None,
            },
        )
