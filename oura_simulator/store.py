"""Thread-safe in-memory state: users, OAuth artefacts, documents, subscriptions, request log.

Documents are the union of the lazily generated history (see ``data``) and test-made
overrides. An override replaces a generated document with the same id, and a tombstone hides
one, so tests can create, update and delete anywhere in a five-year history without
materialising it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from . import data
from .config import SimulatorConfig
from .data import Doc


@dataclass
class SimUser:
    """One Oura account. Mutable on purpose: tests flip ``membership_lapsed`` at run time."""

    oura_user_id: str
    email: str | None
    age: int | None
    weight: float | None
    height: float | None
    biological_sex: str | None
    history_days: int | None = None
    scopes: tuple[str, ...] | None = None  # what this user grants; None = whatever is asked
    membership_lapsed: bool = False
    profile: data.Profile = field(repr=False, default=None)  # type: ignore[assignment]  # set right after construction

    def personal_info(self) -> Doc:
        return {
            "id": self.oura_user_id,
            "age": self.age,
            "weight": self.weight,
            "height": self.height,
            "biological_sex": self.biological_sex,
            "email": self.email,
        }


@dataclass
class TokenRecord:
    access_token: str
    refresh_token: str
    user_id: str
    scopes: frozenset[str]
    client_id: str
    expires_at: float
    revoked: bool = False
    refresh_used: bool = False


@dataclass
class AuthCode:
    code: str
    user_id: str
    scopes: frozenset[str]
    redirect_uri: str | None
    client_id: str
    expires_at: float
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    used: bool = False


@dataclass
class Subscription:
    id: str
    callback_url: str
    event_type: str
    data_type: str
    verification_token: str
    expiration_time: datetime

    def model(self) -> Doc:
        return {
            "id": self.id,
            "callback_url": self.callback_url,
            "event_type": self.event_type,
            "data_type": self.data_type,
            "expiration_time": self.expiration_time.isoformat(),
        }


class RequestRecord(NamedTuple):
    timestamp: float
    method: str
    path: str
    token_or_client: str | None
    status: int


def to_instant(value: date | datetime | str | None) -> datetime | None:
    """Bare dates mean 00:00 UTC, exactly as the HTTP date filters read them."""
    if value is None:
        return None
    if isinstance(value, str):
        return data.parse_instant(value)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


class Store:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.users: dict[str, SimUser] = {}
        self.user_order: list[str] = []
        self.tokens: dict[str, TokenRecord] = {}
        self.refresh_index: dict[str, TokenRecord] = {}
        self.codes: dict[str, AuthCode] = {}
        self.revoked_tokens: list[str] = []
        self.overrides: dict[tuple[str, str], dict[str, Doc]] = {}
        self.tombstones: dict[tuple[str, str], set[str]] = {}
        self.ts_overrides: dict[tuple[str, str], list[Doc]] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.requests: list[RequestRecord] = []
        self.login_user: str | None = None
        self.deny_next: bool = False
        self._user_counter = 0

    # ---- users -------------------------------------------------------------------------

    def next_user_index(self) -> int:
        with self.lock:
            self._user_counter += 1
            return self._user_counter - 1

    def get_user(self, uid: str) -> SimUser:
        with self.lock:
            try:
                return self.users[uid]
            except KeyError:
                raise KeyError(f"unknown Oura user {uid!r}") from None

    # ---- history window -------------------------------------------------------------------

    def history_bounds(self, user: SimUser) -> tuple[date, date] | None:
        days = user.history_days if user.history_days is not None else self.config.history_days
        if days <= 0:
            return None
        end = (
            date.fromisoformat(self.config.history_end)
            if self.config.history_end
            else datetime.now(UTC).date()
        )
        return end - timedelta(days=days - 1), end

    def gen_options(self) -> data.GenOptions:
        c = self.config
        return data.GenOptions(
            include_meta=c.include_meta,
            include_producer_timestamp=c.include_producer_timestamp,
            omit_timestamp_unix=c.omit_timestamp_unix,
            omit_cardiovascular_age_id=c.omit_cardiovascular_age_id,
        )

    # ---- documents ---------------------------------------------------------------------

    def _generated(self, user: SimUser, dtype: str, first: date, last: date) -> Iterator[Doc]:
        bounds = self.history_bounds(user)
        if bounds is None:
            return
        opts = self.gen_options()
        lo, hi = max(first, bounds[0]), min(last, bounds[1])
        if dtype == "ring_configuration":
            for d in data.ring_setup_days(*bounds):
                yield from data.generate_day(user.profile, dtype, d, opts)
            return
        d = lo
        while d <= hi:
            yield from data.generate_day(user.profile, dtype, d, opts)
            d += timedelta(days=1)

    def list_documents(
        self, uid: str, dtype: str, start: datetime | None, end: datetime | None
    ) -> list[Doc]:
        """Documents with ``start <= filter_ts <= end`` (either bound optional), oldest first."""
        user = self.get_user(uid)
        key = (uid, dtype)
        with self.lock:
            overrides = dict(self.overrides.get(key, {}))
            tombstones = set(self.tombstones.get(key, set()))
        # Generation keys are local days, while filters compare instants: scan a margin.
        first = (start.date() - timedelta(days=2)) if start else date.min
        last = (end.date() + timedelta(days=2)) if end else date.max
        out: list[tuple[datetime, str, Doc]] = []
        far_past = datetime.min.replace(tzinfo=UTC)

        def keep(doc: Doc) -> None:
            ts = data.filter_ts(dtype, doc)
            if ts is not None and ((start and ts < start) or (end and ts > end)):
                return
            out.append((ts or far_past, str(doc.get("id", doc.get("day", ""))), doc))

        for doc in self._generated(user, dtype, first, last):
            doc_id = doc.get("id") or self.hidden_id(user, dtype, doc)
            if doc_id in overrides or doc_id in tombstones:
                continue
            keep(doc)
        for doc in overrides.values():
            keep(doc)
        out.sort(key=lambda t: (t[0], t[1]))
        return [d for _, _, d in out]

    def hidden_id(self, user: SimUser, dtype: str, doc: Doc) -> str:
        # cardiovascular_age without ids (2024 mode) still needs an identity for overrides.
        return data.make_id(
            self.config.seed, user.oura_user_id, dtype, date.fromisoformat(doc["day"]), 0
        )

    def get_document(self, uid: str, dtype: str, doc_id: str) -> Doc | None:
        user = self.get_user(uid)
        key = (uid, dtype)
        with self.lock:
            if doc_id in self.tombstones.get(key, set()):
                return None
            if doc_id in self.overrides.get(key, {}):
                return self.overrides[key][doc_id]
        decoded = data.decode_id(self.config.seed, uid, dtype, doc_id)
        bounds = self.history_bounds(user)
        if decoded is None or bounds is None:
            return None
        day, _idx = decoded
        if dtype == "ring_configuration":
            if day not in data.ring_setup_days(*bounds):
                return None
        elif not bounds[0] <= day <= bounds[1]:
            return None
        for doc in data.generate_day(user.profile, dtype, day, self.gen_options()):
            if (doc.get("id") or self.hidden_id(user, dtype, doc)) == doc_id:
                return doc
        return None

    def put_override(self, uid: str, dtype: str, doc_id: str, doc: Doc) -> bool:
        """Store a document; returns True if it replaced an existing one (an update)."""
        existed = self.get_document(uid, dtype, doc_id) is not None
        with self.lock:
            self.overrides.setdefault((uid, dtype), {})[doc_id] = doc
            self.tombstones.get((uid, dtype), set()).discard(doc_id)
        return existed

    def delete(self, uid: str, dtype: str, doc_id: str) -> bool:
        existed = self.get_document(uid, dtype, doc_id) is not None
        with self.lock:
            self.overrides.get((uid, dtype), {}).pop(doc_id, None)
            self.tombstones.setdefault((uid, dtype), set()).add(doc_id)
        return existed

    # ---- time series -------------------------------------------------------------------------

    def timeseries(
        self,
        uid: str,
        dtype: str,
        start: datetime,
        end: datetime,
        after: tuple[int, int] | None,
        limit: int | None,
    ) -> tuple[list[Doc], tuple[int, int] | None]:
        """Rows with start <= ts <= end, oldest first, resuming after a cursor.

        The cursor is (ms, n): skip rows before ms and the first n rows stamped exactly ms,
        because real recordings contain duplicate timestamps. Returns (rows, next cursor).
        """
        user = self.get_user(uid)
        bounds = self.history_bounds(user)
        with self.lock:
            extra = list(self.ts_overrides.get((uid, dtype), []))
        extra_by_day: dict[date, list[tuple[int, Doc]]] = {}
        for row in extra:
            ts = data.parse_instant(row["timestamp"])
            extra_by_day.setdefault(ts.astimezone(UTC).date(), []).append(
                (round(ts.timestamp() * 1000), row)
            )
        now_ms = int(time.time() * 1000)
        start_ms = round(start.timestamp() * 1000)
        end_ms = round(end.timestamp() * 1000)
        skip_ms, skip_n = after if after is not None else (start_ms, 0)
        lo_ms = max(start_ms, skip_ms)
        day = datetime.fromtimestamp(lo_ms / 1000, UTC).date()
        last_day = end.astimezone(UTC).date()
        out: list[Doc] = []
        last_ms, same = skip_ms, skip_n if lo_ms == skip_ms else 0
        opts = self.gen_options()
        gen = data.generate_heartrate if dtype == "heartrate" else data.generate_battery
        while day <= last_day:
            rows: list[tuple[int, Doc]] = []
            if bounds and bounds[0] <= day <= bounds[1]:
                for row in gen(user.profile, day, opts):
                    t = int(data.parse_instant(row["timestamp"]).timestamp() * 1000)
                    if t <= now_ms:  # the ring has not measured the future yet
                        rows.append((t, row))
            rows.extend(extra_by_day.get(day, []))
            rows.sort(key=lambda x: x[0])
            seen_at_skip = 0
            for t, row in rows:
                if t < lo_ms or t > end_ms:
                    continue
                if t == skip_ms and seen_at_skip < skip_n:
                    seen_at_skip += 1
                    continue
                if limit is not None and len(out) == limit:
                    return out, (last_ms, same)
                out.append(row)
                same = same + 1 if t == last_ms else 1
                last_ms = t
            day += timedelta(days=1)
        return out, None

    def put_timeseries_row(self, uid: str, dtype: str, row: Doc) -> None:
        with self.lock:
            self.ts_overrides.setdefault((uid, dtype), []).append(row)

    # ---- request log ---------------------------------------------------------------------------

    def log_request(self, rec: RequestRecord) -> None:
        with self.lock:
            self.requests.append(rec)
