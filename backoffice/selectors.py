"""Reads of the backoffice: finding a person, and what the person page shows of them.

Each section of the person page is one query (plus two to learn the person's Oura ids), so
the page costs the same for a person with ten events as for one with a million. Nothing
here reads a payload: raw events are read as metadata (never `envelope`), dead letters are
matched on their bytes but only their ids and reasons leave this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import BooleanField, CharField, F, IntegerField, Max, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.utils import timezone

from audit.models import AuditEntry
from core.identifiers import is_valid_user_id
from core.models import DeadLetter
from core.pseudonyms import person_hash
from ingestion.models import OuraConnection, RawEvent
from jobs.models import IngestionJob
from normalized.models import (
    Activity,
    DailyActivity,
    DailyReadiness,
    DailySleep,
    SleepPeriod,
)
from privacy.registry import Person, mention_pattern, oura_ids_of

COVERAGE_DAYS = 90
VALUE_DAYS = 14
RECENT_JOBS = 10
RECENT_RAW_EVENTS = 20
RECENT_DEAD_LETTERS = 20
RECENT_AUDIT_ENTRIES = 30
OURA_ID_MAX_LENGTH = 128  # OuraConnection.provider_user_id

# The normalized types the coverage strip shows, in Oura's collection names (as raw events
# and backfills name them), and the ones with a daily score staff are asked about.
COVERAGE_TYPES = ("daily_readiness", "daily_sleep", "daily_activity", "sleep", "workout", "session")
SCORED_TYPES = ("daily_readiness", "daily_sleep", "daily_activity")

RAW_EVENT_FIELDS = (
    "event_id", "kind", "status", "data_type", "event_type", "received_at", "archived_at",
    "published_at",
)  # fmt: skip
CONNECTION_FIELDS = (
    "user_id", "provider_user_id", "status", "scopes", "connected_at", "last_refresh_at",
    "revoked_at",
)  # fmt: skip


@dataclass(frozen=True)
class PersonMatch:
    user_id: str
    matched_by: str  # "user id" or "Oura user id"
    connection_status: str  # the connection's status, or "" without one


def people_find(*, query: str) -> list[PersonMatch]:
    """People whose user id or Oura user id is exactly `query` (at most a few)."""
    query = query.strip()
    found: dict[str, PersonMatch] = {}
    if is_valid_user_id(query):
        status = (
            OuraConnection.objects.filter(user_id=query).values_list("status", flat=True).first()
        )
        known = (
            status is not None
            or RawEvent.objects.filter(user_id=query).exists()
            or IngestionJob.objects.filter(user_id=query).exists()
        )
        if known:
            found[query] = PersonMatch(query, "user id", status or "")
    if query and len(query) <= OURA_ID_MAX_LENGTH:
        linked = OuraConnection.objects.filter(provider_user_id=query).values_list(
            "user_id", "status"
        )
        for user_id, status in linked:
            found.setdefault(user_id, PersonMatch(user_id, "Oura user id", status))
        seen = (
            RawEvent.objects.filter(provider_user_id=query)
            .exclude(user_id="")
            .values_list("user_id", flat=True)
            .distinct()[:10]
        )
        for user_id in seen:
            found.setdefault(user_id, PersonMatch(user_id, "Oura user id", ""))
    return list(found.values())


def person_of(user_id: str) -> Person:
    return Person(user_id, tuple(sorted(oura_ids_of(user_id))))


def raw_events_of(person: Person) -> QuerySet[RawEvent]:
    condition = Q(user_id=person.user_id)
    if person.oura_ids:
        condition |= Q(provider_user_id__in=person.oura_ids)
    return RawEvent.objects.filter(condition)


def person_connection(person: Person) -> dict[str, Any] | None:
    """The connection without its token columns."""
    row = (
        OuraConnection.objects.filter(user_id=person.user_id)
        .values("pk", *CONNECTION_FIELDS)
        .first()
    )
    return dict(row) if row is not None else None


@dataclass
class TypeFlow:
    data_type: str
    last_webhook: datetime | None = None
    last_fetch: datetime | None = None


def person_flow(person: Person) -> list[TypeFlow]:
    """Per data type: the last webhook received and the last document or page fetched."""
    rows = (
        raw_events_of(person)
        .exclude(data_type="")
        .values("data_type")
        .annotate(
            last_webhook=Max("received_at", filter=Q(kind=RawEvent.Kind.WEBHOOK)),
            last_fetch=Max(
                "received_at",
                filter=Q(
                    kind__in=[RawEvent.Kind.DOCUMENT, RawEvent.Kind.PAGE],
                    status=RawEvent.Status.ACCEPTED,
                ),
            ),
        )
        .order_by("data_type")
    )
    return [TypeFlow(r["data_type"], r["last_webhook"], r["last_fetch"]) for r in rows]


@dataclass
class CoverageRow:
    data_type: str
    days: list[tuple[date, bool]]

    @property
    def covered(self) -> int:
        return sum(1 for _, present in self.days if present)


@dataclass
class DayValues:
    day: date
    scores: dict[str, int | None] = field(default_factory=dict)


@dataclass
class Coverage:
    rows: list[CoverageRow]
    values: list[DayValues]  # the last VALUE_DAYS days, newest first


def person_coverage(person: Person, *, today: date | None = None) -> Coverage:
    """Which days each normalized type has over COVERAGE_DAYS, and the daily scores of the
    last VALUE_DAYS days: one UNION query over the normalized tables."""
    today = today or timezone.localdate()
    since = today - timedelta(days=COVERAGE_DAYS - 1)
    no_score = Value(None, output_field=IntegerField())

    def days_of(queryset: QuerySet[Any], name: str, score: Any) -> QuerySet[Any]:
        days: QuerySet[Any] = (
            queryset.filter(user_id=person.user_id, day__gte=since, day__lte=today)
            .annotate(data_type=Value(name, output_field=CharField()), value=score)
            .values_list("day", "data_type", "value")
            .order_by()
        )
        return days

    parts = [
        days_of(DailyReadiness.objects.all(), "daily_readiness", F("score")),
        days_of(DailySleep.objects.all(), "daily_sleep", F("score")),
        days_of(DailyActivity.objects.all(), "daily_activity", F("score")),
        days_of(SleepPeriod.objects.all(), "sleep", no_score),
        days_of(Activity.objects.filter(kind=Activity.Kind.WORKOUT), "workout", no_score),
        days_of(Activity.objects.filter(kind=Activity.Kind.SESSION), "session", no_score),
    ]
    found: set[tuple[date, str]] = set()
    scores: dict[date, dict[str, int | None]] = {}
    for day, data_type, value in parts[0].union(*parts[1:]):
        found.add((day, data_type))
        if data_type in SCORED_TYPES:
            scores.setdefault(day, {})[data_type] = value
    calendar = [since + timedelta(days=n) for n in range(COVERAGE_DAYS)]
    rows = [
        CoverageRow(name, [(day, (day, name) in found) for day in calendar])
        for name in COVERAGE_TYPES
    ]
    values = [
        DayValues(day, scores.get(day, {}))
        for day in (today - timedelta(days=n) for n in range(VALUE_DAYS))
    ]
    return Coverage(rows, values)


def person_jobs(person: Person) -> list[IngestionJob]:
    return list(
        IngestionJob.objects.filter(user_id=person.user_id)
        .only(
            "job_id", "status", "progress", "range_start", "range_end", "data_types",
            "created_at", "finished_at", "requested_by", "last_error",
        )
        .order_by("-created_at")[:RECENT_JOBS]
    )  # fmt: skip


def person_raw_events(person: Person) -> list[dict[str, Any]]:
    """Metadata only: the envelope column is never selected."""
    return list(
        raw_events_of(person).values(*RAW_EVENT_FIELDS).order_by("-received_at")[:RECENT_RAW_EVENTS]
    )


def person_dead_letters(person: Person) -> list[dict[str, Any]]:
    """Dead letters that name the person (privacy.registry's mention match, as erasure
    finds them). Postgres narrows the rows by a byte search for each id; the match itself
    is the registry's pattern, so `al` does not find `alice`."""
    identifiers = list(person.identifiers)
    clause = " OR ".join(["position(%s::bytea in data) > 0"] * len(identifiers))
    in_subject = Q(pk__in=[])
    for identifier in identifiers:
        in_subject |= Q(subject__contains=identifier)
    candidates = (
        DeadLetter.objects.alias(
            # The SQL text is fixed; the ids are bound parameters.
            mentions=RawSQL(  # noqa: S611 - fixed SQL, ids bound
                f"({clause})", [i.encode() for i in identifiers], output_field=BooleanField()
            )
        )
        .filter(Q(mentions=True) | in_subject)
        .values("pk", "consumer", "subject", "error_type", "reason", "attempts", "created_at",
                "replayed_at", "resolved", "data")
        .order_by("-created_at")[: RECENT_DEAD_LETTERS * 5]
    )  # fmt: skip
    pattern = mention_pattern(person)
    matched: list[dict[str, Any]] = []
    for candidate in candidates:
        row: dict[str, Any] = dict(candidate)
        data = bytes(row.pop("data"))
        if pattern.search(data) or pattern.search(row["subject"].encode()):
            matched.append(row)
        if len(matched) == RECENT_DEAD_LETTERS:
            break
    return matched


def person_audit_refs(person: Person) -> list[str]:
    """The keyed hashes that name the person in the audit log: our id, and their Oura ids
    (webhook entries, written before the Oura id was known to be ours)."""
    return [
        person_hash(person.user_id),
        *(person_hash(oura_id, namespace="oura") for oura_id in person.oura_ids),
    ]


def person_audit_trail(person: Person) -> list[dict[str, Any]]:
    return [
        dict(entry)
        for entry in AuditEntry.objects.filter(
            Q(person_ref__in=person_audit_refs(person)) | Q(user_id=person.user_id)
        )
        .values("occurred_at", "action", "actor", "event_id")
        .order_by("-occurred_at", "-id")[:RECENT_AUDIT_ENTRIES]
    ]
