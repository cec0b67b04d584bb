"""Coalesced webhook fetches: one Oura range request for several webhooks of one user and type.

A webhook names its document (`object_id`) but not the document's day, and Oura's range
routes filter by day (CONTRACT 3.4), so no range is known in advance to hold a webhook's
document. Nothing here relies on one doing so:

- Only a batch's create/update webhooks of one connection, one collection and one UTC day
  of `event_time` are grouped, and only groups of two or more (a lone webhook is fetched by
  id, as before: a range for it could only cost as much or more).
- The group's range covers the event day and the day on each side (`window_for`): the
  documents Oura announces at a sync are the ones that changed then (today's daily scores,
  last night's sleep, today's activity), whose filter instants usually lie less than a day
  from it. The rest (a workout entered days later, a sleep read more than a day after
  bedtime) miss the range and cost one request more than before.
- A member whose document the range holds gets that document, which is the same JSON a
  by-id fetch returns (recorded responses: fixtures/*.single.json equal their items in the
  collection pages) and is stored through the same `document_bytes`, so its raw object, sha256
  and dedupe key are those of a by-id fetch. A member whose document is not in the range
  (older, deleted meanwhile, no id in the list) is fetched by id exactly as before, and a
  404 there is a delete, as before.
- A range request that fails, whatever the cause (5xx or timeouts after the client's
  retries, a 429, an open breaker, no budget, a 400/422 on the query, a body that is not a
  page), leaves every member to its own by-id fetch, which then fails or succeeds exactly as
  it does without coalescing: the same retry classification, and no message dead-lettered
  for what only the range request met. It costs little: after a 429 the budget is paused and
  the by-id fetches are refused before reaching Oura, and during an outage the failures open
  the circuit breaker as they did (each by-id failure still counts; a failed range request
  counting once for the group would have kept the breaker closed for several batches).
  Only a refused token (needs reauth) ends the group at once: it is the user's, not the
  request's, and every by-id fetch would meet it too.

Each range page costs one unit of the shared budget like any request, and goes through the
client's retries and the usercollection circuit breaker. Off with OURA_COALESCE_FETCHES=false.

Where ranges keep missing, they stop being asked for (`note`, `worthwhile`): a group of n
members served with hit rate h costs 1 + n(1 - h) requests against n, so below one hit in two
a group of two costs more than it saves. Each process keeps the last HIT_WINDOW members of
each collection; under MIN_HIT_RATE the collection's groups are fetched by id, except one in
PROBE_EVERY, whose outcome keeps the rate current (a pattern that changes is seen). Seen in
the chaos run, whose documents lie years before their webhooks: ranges there only added
requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from core.metrics import oura_range_fetches_total
from ingestion.data_types import DATA_TYPES, Window
from ingestion.models import OuraConnection
from ingestion.oura_client import NeedsReauth, OuraError, get_client
from ingestion.rate_budget import BudgetExhausted, Prepaid

logger = logging.getLogger(__name__)

# Date-ranged document collections with webhooks. Time series have no webhooks, and
# ring_configuration is not date-ranged (Oura ignores start/end there).
COALESCED_COLLECTIONS: frozenset[str] = frozenset(
    t.name for t in DATA_TYPES.values() if t.webhooks and t.backfill and not t.timeseries
)
# A few documents per day and collection: one page (Oura pages documents at 1000, and a
# 3-day window of any collection is far below). More pages than this means something else is
# going on (Oura was seen repeating a next_token, CONTRACT 3.5); the members not found by
# then are fetched by id.
MAX_PAGES = 3


@dataclass(frozen=True)
class GroupKey:
    user_id: str
    collection: str
    event_day: date  # UTC day of the members' event_time


@dataclass(frozen=True)
class Member:
    """A webhook that may be served by its group's range."""

    event_id: str
    object_id: str
    event_time: datetime  # timezone-aware
    connection: OuraConnection


@dataclass
class RangeFetch:
    """What one group's range request brought back, for its members' `fetch_webhook`: the
    documents by id (a member not among them is fetched by id), or `needs_reauth` (every
    member is dropped, as its own fetch would be)."""

    observed_at: datetime  # before the request: the state we got is at least this new
    started: float  # perf_counter before the request, for the members' duration metric
    documents: dict[str, Mapping[str, Any]]
    needs_reauth: bool = False
    failed: bool = False
    requests: int = 0


def enabled() -> bool:
    return bool(settings.OURA_COALESCE_FETCHES)


def group_key(collection: str, member: Member) -> GroupKey | None:
    if collection not in COALESCED_COLLECTIONS:
        return None
    return GroupKey(member.connection.user_id, collection, member.event_time.astimezone(UTC).date())


def plan(members: Sequence[tuple[str, Member]]) -> dict[GroupKey, list[Member]]:
    """Groups of two or more (collection, member) pairs that one range request can serve,
    in the collections where ranges have been serving their members (`worthwhile`)."""
    groups: dict[GroupKey, list[Member]] = {}
    for collection, member in members:
        key = group_key(collection, member)
        if key is not None:
            groups.setdefault(key, []).append(member)
    return {
        key: group
        for key, group in groups.items()
        if len(group) >= 2 and worthwhile(key.collection)
    }


HIT_WINDOW = 200  # members remembered per collection
MIN_HITS_TO_JUDGE = 50  # fewer remembered: too early to say, keep coalescing
MIN_HIT_RATE = 0.5
PROBE_EVERY = 20


class _HitRate:
    def __init__(self) -> None:
        self.recent: deque[bool] = deque(maxlen=HIT_WINDOW)
        self.skipped = 0


_hit_rates: dict[str, _HitRate] = {}
_hit_rates_lock = threading.Lock()


def note(collection: str, *, hit: bool) -> None:
    """A member of a range that was answered: whether the range held its document."""
    with _hit_rates_lock:
        _hit_rates.setdefault(collection, _HitRate()).recent.append(hit)


def worthwhile(collection: str) -> bool:
    """Whether a group of this collection should be read by range (see the module doc)."""
    with _hit_rates_lock:
        rate = _hit_rates.get(collection)
        if rate is None or len(rate.recent) < MIN_HITS_TO_JUDGE:
            return True
        if sum(rate.recent) >= MIN_HIT_RATE * len(rate.recent):
            return True
        rate.skipped += 1
        return rate.skipped % PROBE_EVERY == 0


def forget_hit_rates() -> None:
    """Start again from nothing (tests)."""
    with _hit_rates_lock:
        _hit_rates.clear()


def window_for(event_day: date) -> Window:
    """Whole UTC days around the sync: a document announced then has its filter instant (a
    daily document's timestamp, a sleep's bedtime_start, a workout's start) less than a day
    from the event, which is within one UTC day on either side of the event's day."""
    return Window(event_day - timedelta(days=1), event_day + timedelta(days=1))


def fetch_range(key: GroupKey, connection: OuraConnection, prepaid: Prepaid | None) -> RangeFetch:
    """One group's range request (and its next pages, if any). Never raises for Oura's
    answers: what they mean for the members is in the result."""
    result = RangeFetch(observed_at=timezone.now(), started=time.perf_counter(), documents={})
    path = f"/v2/usercollection/{key.collection}"
    params = window_for(key.event_day).query(DATA_TYPES[key.collection])
    seen_tokens: set[str] = set()
    outcome, error_type = "ok", ""
    try:
        for _ in range(MAX_PAGES):
            result.requests += 1
            response = get_client().get(connection, path, params, prepaid=prepaid)
            # A 404 here is the route, not a document (the client returns 200 and 404).
            body = _page(response.json() if response.status_code == 200 else None)
            if body is None:
                raise ValueError("not a collection page")
            documents, token = body
            for document in documents:
                document_id = document.get("id")
                if isinstance(document_id, str):
                    result.documents[document_id] = document
            if token is None or token in seen_tokens:
                break
            seen_tokens.add(token)
            params = params | {"next_token": token}
    except NeedsReauth:
        result.needs_reauth = True
        outcome = "needs_reauth"
    except (OuraError, BudgetExhausted, ValueError) as exc:
        # Each member's own by-id fetch meets what this request met, or does better.
        result.documents.clear()
        result.failed = True
        outcome, error_type = "failed", type(exc).__name__
    oura_range_fetches_total.labels(outcome=outcome).inc()
    logger.info(
        "oura_range_fetch",
        extra={"collection": key.collection, "requests": result.requests, "outcome": outcome,
               "error_type": error_type, "documents": len(result.documents)},
    )  # fmt: skip
    return result


def _page(body: Any) -> tuple[list[Mapping[str, Any]], str | None] | None:
    """The documents and next_token of a collection response, or None if it is not one."""
    if not isinstance(body, dict):
        return None
    documents = body.get("data")
    if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
        return None
    token = body.get("next_token")
    return documents, token if isinstance(token, str) and token else None
