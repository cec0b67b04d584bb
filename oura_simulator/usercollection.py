"""REST v2 ``/v2/usercollection`` and ``/v2/sandbox/usercollection`` routes (CONTRACT 3)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from . import data
from .data import Doc
from .httputil import detail, json_response, pydantic_item, validation_error
from .store import SimUser, Store, TokenRecord

if TYPE_CHECKING:
    from .app import OuraSimulator

# Any one of these scopes unlocks the collection; the first one is named in the 401 text.
COLLECTION_SCOPES: dict[str, tuple[str, ...]] = {
    "daily_activity": ("daily",),
    "daily_readiness": ("daily",),
    "daily_sleep": ("daily",),
    "daily_stress": ("daily",),
    "sleep": ("daily",),
    "sleep_time": ("daily",),
    "rest_mode_period": ("daily",),
    "daily_spo2": ("spo2",),
    "daily_resilience": ("stress",),
    "daily_cardiovascular_age": ("heart_health", "daily"),
    "vO2_max": ("heart_health", "daily"),
    "workout": ("workout",),
    "session": ("session",),
    "tag": ("tag",),
    "enhanced_tag": ("tag",),
    "heartrate": ("heartrate",),
    "ring_battery_level": ("ring_configuration",),
    "ring_configuration": (),
}

_NUMERIC = re.compile(r"^[+-]?\d+(\.\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("bad request")
        self.response = response


def parse_when(name: str, raw: str, date_allowed: bool) -> datetime:
    """Mimic pydantic v2 lax parsing of ``datetime | date`` query values.

    Numbers are unix seconds (ms above 2e10), which is why ``start_date=1`` answers an empty
    200 on the live API (CONTRACT 3.4); impossible calendar dates answer 422.
    """
    if _NUMERIC.match(raw):
        value = float(raw)
        if abs(value) > 2e10:
            value /= 1000
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    else:
        try:
            return data.parse_instant(raw)
        except ValueError:
            pass
    loc_tail = ["datetime", "date"] if date_allowed else [None]
    items = []
    for tail in loc_tail:
        loc: list[str | int] = ["query", name]
        if tail:
            loc.append(tail)
        kind = "datetime" if tail != "date" else "date"
        err = "day value is outside expected range" if _DATE.match(raw) else "invalid format"
        items.append(
            pydantic_item(
                f"{kind}_from_date_parsing" if kind == "datetime" else "date_from_datetime_parsing",
                loc,
                f"Input should be a valid {kind}, {err}",
                raw,
                {"error": err},
            )
        )
    raise BadRequest(validation_error(items))


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "t", "yes", "y", "on"):
        return True
    if low in ("0", "false", "f", "no", "n", "off"):
        return False
    raise BadRequest(
        validation_error(
            [
                pydantic_item(
                    "bool_parsing",
                    ["query", name],
                    "Input should be a valid boolean, unable to interpret input",
                    raw,
                )
            ]
        )
    )


def encode_token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, dtype: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest(detail(400, "Invalid next_token")) from None
    if not isinstance(payload, dict) or payload.get("t") != dtype:
        raise BadRequest(detail(400, "Invalid next_token"))
    return payload


def _project(doc: Doc, keep: set[str] | None) -> Doc:
    if keep is None:
        return doc
    return {k: v for k, v in doc.items() if k in keep}


def _fields(dtype: str, raw: str | None) -> set[str] | None:
    if not raw:
        return None
    known = {f.strip() for f in raw.split(",")} & set(data.FIELDS[dtype])
    if not known:
        return None  # unknown names are ignored and the full record returns (CONTRACT 3.3)
    always = {"timestamp"} if dtype in data.TIMESERIES_TYPES else {"id"}
    return known | always


class Query:
    """Resolved list query; also what an opaque next_token carries."""

    def __init__(
        self,
        dtype: str,
        start: datetime,
        end: datetime,
        fields: str | None,
        latest: bool,
        cursor: int | None,
    ) -> None:
        self.dtype = dtype
        self.start = start
        self.end = end
        self.fields = fields
        self.latest = latest
        self.cursor = cursor

    def token(self, cursor: int) -> str:
        return encode_token(
            {
                "t": self.dtype,
                "s": self.start.isoformat(),
                "e": self.end.isoformat(),
                "f": self.fields,
                "l": self.latest,
                "c": cursor,
            }
        )


def resolve_query(dtype: str, args: Any, sandbox: bool) -> Query:
    raw_token = args.get("next_token")
    if raw_token:  # an empty next_token= counts as absent (CONTRACT 3.3)
        p = decode_token(raw_token, dtype)
        try:
            return Query(
                dtype,
                datetime.fromisoformat(p["s"]),
                datetime.fromisoformat(p["e"]),
                p.get("f"),
                bool(p.get("l")),
                int(p["c"]),
            )
        except (KeyError, TypeError, ValueError):
            raise BadRequest(detail(400, "Invalid next_token")) from None
    timeseries = dtype in data.TIMESERIES_TYPES
    s_name, e_name = (
        ("start_datetime", "end_datetime") if timeseries else ("start_date", "end_date")
    )
    raw_s, raw_e = args.get(s_name) or None, args.get(e_name) or None
    start = parse_when(s_name, raw_s, not timeseries) if raw_s else None
    end = parse_when(e_name, raw_e, not timeseries) if raw_e else None
    # Defaults are undocumented; CONTRACT 3.4(4): last 24 h for time series, one day back
    # from today for documents.
    if timeseries:
        end = end or datetime.now(UTC)
        start = start or end - timedelta(hours=24)
    else:
        today = datetime.now(UTC).date()
        end = end or datetime(today.year, today.month, today.day, tzinfo=UTC)
        start = start or end - timedelta(days=1)
    if start > end:
        raise BadRequest(
            detail(400, f"Start date {start.isoformat()} is after end date {end.isoformat()}")
        )
    fields = None if sandbox else (args.get("fields") or None)
    latest = False
    if timeseries and not sandbox and args.get("latest"):
        latest = _parse_bool("latest", args["latest"])
    return Query(dtype, start, end, fields, latest, None)


def list_collection(
    store: Store, uid: str, dtype: str, q: Query, page_size: int, ts_page_size: int
) -> Doc:
    keep = _fields(dtype, q.fields)
    if dtype in data.TIMESERIES_TYPES:
        if q.latest:
            rows, _ = store.timeseries(uid, dtype, q.start, q.end, None, None)
            return {"data": [_project(r, keep) for r in rows[-1:]], "next_token": None}
        after = (q.cursor // 10_000, q.cursor % 10_000) if q.cursor is not None else None
        rows, nxt = store.timeseries(uid, dtype, q.start, q.end, after, ts_page_size)
        # One opaque integer carries (ms, rows already sent at that ms).
        token = q.token(nxt[0] * 10_000 + nxt[1]) if nxt else None
        return {"data": [_project(r, keep) for r in rows], "next_token": token}
    if dtype == "ring_configuration":
        docs = store.list_documents(uid, dtype, None, None)
    else:
        docs = store.list_documents(uid, dtype, q.start, q.end)
    offset = q.cursor or 0
    page = docs[offset : offset + page_size]
    token = q.token(offset + page_size) if offset + page_size < len(docs) else None
    return {"data": [_project(d, keep) for d in page], "next_token": token}


def _scope_failure(
    sim: OuraSimulator, rec: TokenRecord, dtype: str, single: bool
) -> Response | None:
    needed = COLLECTION_SCOPES[dtype]
    if not needed or rec.scopes & set(needed):
        return None
    if sim.config.missing_scope_mode == "empty":
        if single:
            return detail(404, "Document not found.")
        return json_response({"data": [], "next_token": None})
    return detail(401, f"Token is not authorized access {needed[0]} scope.")


def _route_exists(sim: OuraSimulator, dtype: str) -> bool:
    return dtype in COLLECTION_SCOPES and dtype not in sim.config.missing_collections


def authenticate(sim: OuraSimulator, bearer: str | None) -> tuple[TokenRecord, SimUser] | Response:
    if not bearer:
        return detail(401, "Invalid Token")
    with sim.store.lock:
        rec = sim.store.tokens.get(bearer)
    if rec is None:
        return detail(401, "Invalid Access token")
    if rec.revoked:
        return detail(401, "Token Already Used Or Revoked")
    if rec.expires_at <= time.time():
        return detail(401, "Expired Token")
    try:
        user = sim.store.get_user(rec.user_id)
    except KeyError:
        return detail(401, "Invalid Access token")
    if user.membership_lapsed:
        return detail(403, "Oura membership is not active; data is not available via the API.")
    return rec, user


def handle(sim: OuraSimulator, request: Request, bearer: str | None, parts: list[str]) -> Response:
    """parts: path segments after /v2/usercollection/."""
    dtype = parts[0] if parts else ""
    auth = authenticate(sim, bearer)
    if isinstance(auth, Response):
        return auth
    rec, user = auth
    if dtype == "personal_info" and len(parts) == 1:
        info = user.personal_info()
        if "personal" not in rec.scopes:
            info.update(age=None, weight=None, height=None, biological_sex=None)
        if "email" not in rec.scopes:
            info["email"] = None
        return json_response(info)
    if not _route_exists(sim, dtype) or len(parts) > 2:
        return detail(404, "Not Found")
    single = len(parts) == 2
    if single and dtype in data.TIMESERIES_TYPES:
        return detail(404, "Not Found")
    failure = _scope_failure(sim, rec, dtype, single)
    if failure is not None:
        return failure
    if single:
        doc = sim.store.get_document(user.oura_user_id, dtype, parts[1])
        return json_response(doc) if doc is not None else detail(404, "Document not found.")
    try:
        q = resolve_query(dtype, request.args, sandbox=False)
    except BadRequest as exc:
        return exc.response
    cfg = sim.config
    body = list_collection(
        sim.store, user.oura_user_id, dtype, q, cfg.document_page_size, cfg.timeseries_page_size
    )
    return json_response(body)


# ---- sandbox ---------------------------------------------------------------------------------

_SANDBOX_ID = re.compile(r"^(?P<t>[A-Za-z0-9_]+)-(?P<i>\d+)-(?P<y>\d+)-(?P<m>\d+)-(?P<d>\d+)$")


def _sandbox_id(seed: int, uid: str, dtype: str, doc: Doc) -> Doc:
    # Sandbox ids look like "daily_sleep-1-2026-8-1" on the live API (CONTRACT 3.7).
    decoded = data.decode_id(seed, uid, dtype, doc.get("id", ""))
    if decoded is None:
        return doc
    day, idx = decoded
    return {**doc, "id": f"{dtype}-{idx + 1}-{day.year}-{day.month}-{day.day}"}


def handle_sandbox(
    sim: OuraSimulator, request: Request, bearer: str | None, parts: list[str]
) -> Response:
    if not bearer:
        return detail(401, "Not authenticated")
    dtype = parts[0] if parts else ""
    # personal_info has no sandbox twin: a bare framework 404 (CONTRACT 3.6).
    if not _route_exists(sim, dtype) or len(parts) > 2:
        return detail(404, "Not Found")
    store, uid = sim.sandbox_store, sim.sandbox_user_id
    seed = store.config.seed
    if len(parts) == 2:
        if dtype in data.TIMESERIES_TYPES:
            return detail(404, "Not Found")
        m = _SANDBOX_ID.match(parts[1])
        if not m or m["t"] != dtype:
            return detail(404, "Document not found.")
        try:
            day = date(int(m["y"]), int(m["m"]), int(m["d"]))
        except ValueError:
            return detail(404, "Document not found.")
        real_id = data.make_id(seed, uid, dtype, day, int(m["i"]) - 1)
        doc = store.get_document(uid, dtype, real_id)
        if doc is None:
            return detail(404, "Document not found.")
        return json_response(_sandbox_id(seed, uid, dtype, doc))
    try:
        q = resolve_query(dtype, request.args, sandbox=True)
    except BadRequest as exc:
        return exc.response
    cfg = sim.config
    body = list_collection(store, uid, dtype, q, cfg.document_page_size, cfg.timeseries_page_size)
    if dtype not in data.TIMESERIES_TYPES:
        body["data"] = [_sandbox_id(seed, uid, dtype, d) for d in body["data"]]
    return json_response(body)
