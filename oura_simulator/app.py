"""The WSGI application and the :class:`OuraSimulator` facade.

One base URL serves every Oura host (CONTRACT 1): ``/oauth/*`` (mirrored under
``/oauth/v2/ext/oauth-*``), ``/v2/usercollection/*``, ``/v2/sandbox/usercollection/*`` and
``/v2/webhook/subscription*``.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from cheroot import wsgi as cheroot_wsgi
from werkzeug.wrappers import Request, Response

from . import data, oauth, usercollection, webhooks
from .config import SimulatorConfig
from .data import Doc
from .httputil import detail
from .ratelimit import RateLimiter
from .store import RequestRecord, SimUser, Store, to_instant

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

_OAUTH_ROUTES = {
    "/oauth/authorize": oauth.authorize,
    "/oauth/token": oauth.token,
    "/oauth/revoke": oauth.revoke,
    "/oauth/v2/ext/oauth-authorize": oauth.authorize,
    "/oauth/v2/ext/oauth-token": oauth.token,
    "/oauth/v2/ext/oauth-revoke": oauth.revoke,
}


def _access_logged(app: WSGIApplication) -> WSGIApplication:
    """One line per request (method, path, status) on this module's logger; off by default,
    since tests hammer the server and the lines would drown pytest output."""

    def logged(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            logger.info(
                "%s %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"], status.split()[0]
            )
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged


def _rest_type(data_type: str) -> str:
    dtype = data.WEBHOOK_TO_REST.get(data_type, data_type)
    if dtype not in data.ALL_TYPES:
        raise ValueError(f"unknown Oura data type {data_type!r}")
    return dtype


class OuraSimulator:
    """In-process fake of the Oura Cloud API. See the package docstring for the API."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.store = Store(self.config)
        self.limiter = RateLimiter()
        self.emitter = webhooks.Emitter(self)
        self._rng = random.Random(self.config.seed)
        self._rng_lock = threading.Lock()
        self._server: cheroot_wsgi.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        # The sandbox is its own tiny world: one fixed user, test edits never reach it.
        sandbox_cfg = copy.copy(self.config)
        sandbox_cfg.history_days = self.config.sandbox_history_days
        self.sandbox_store = Store(sandbox_cfg)
        self.sandbox_user_id = "sandbox-user"
        self.sandbox_store.users[self.sandbox_user_id] = self._new_user(
            self.sandbox_user_id, email="sandbox@example.com"
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False) -> str:
        if self._server is not None:
            return self.base_url
        # cheroot, not werkzeug's development server: like Oura, it keeps connections alive
        # (werkzeug closes every one), so a client's connection pool works as in production.
        self._server = cheroot_wsgi.Server(
            (host, port),
            _access_logged(self.wsgi_app) if access_log else self.wsgi_app,
            numthreads=8,
            server_name="oura-simulator",
        )
        self._server.prepare()  # binds: the port is known from here on
        self.base_url = f"http://{host}:{self._server.bind_addr[1]}"
        self._thread = threading.Thread(
            target=self._server.serve, name="oura-sim-http", daemon=True
        )
        self._thread.start()
        self.emitter.start()
        return self.base_url

    def stop(self) -> None:
        self.emitter.stop()
        if self._server is not None:
            self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> OuraSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- users -------------------------------------------------------------------------------

    def _new_user(self, uid: str, **kw: Any) -> SimUser:
        profile = data.make_profile(self.config.seed, uid)
        return SimUser(
            oura_user_id=uid,
            email=kw.get("email"),
            age=profile.age,
            weight=profile.weight,
            height=profile.height,
            biological_sex=profile.sex,
            history_days=kw.get("history_days"),
            scopes=kw.get("scopes"),
            profile=profile,
        )

    def add_user(
        self,
        oura_user_id: str | None = None,
        *,
        email: str | None = None,
        history_days: int | None = None,
        scopes: Iterable[str] | None = None,
    ) -> SimUser:
        index = self.store.next_user_index()
        uid = oura_user_id or data.make_user_id(self.config.seed, index)
        norm = tuple(oauth.normalise_scopes(" ".join(scopes))) if scopes is not None else None
        user = self._new_user(
            uid,
            email=email or f"user{index + 1}@example.com",
            history_days=history_days,
            scopes=norm,
        )
        with self.store.lock:
            if uid in self.store.users:
                raise ValueError(f"user {uid} already exists")
            self.store.users[uid] = user
            self.store.user_order.append(uid)
        return user

    def user(self, oura_user_id: str) -> SimUser:
        return self.store.get_user(oura_user_id)

    @property
    def users(self) -> list[SimUser]:
        with self.store.lock:
            return [self.store.users[u] for u in self.store.user_order]

    def set_login(self, oura_user_id: str) -> None:
        self.store.get_user(oura_user_id)
        with self.store.lock:
            self.store.login_user = oura_user_id

    def deny_next_authorization(self) -> None:
        with self.store.lock:
            self.store.deny_next = True

    def set_membership_lapsed(self, oura_user_id: str, lapsed: bool = True) -> None:
        self.store.get_user(oura_user_id).membership_lapsed = lapsed

    def _login_user(self, hint: str | None) -> SimUser:
        with self.store.lock:
            if hint and hint in self.store.users:
                return self.store.users[hint]
            if self.store.login_user:
                return self.store.users[self.store.login_user]
            if self.store.user_order:
                return self.store.users[self.store.user_order[0]]
        return self.add_user()

    # ---- tokens ------------------------------------------------------------------------------

    def issue_tokens(
        self, oura_user_id: str, scopes: Iterable[str] | None = None
    ) -> dict[str, Any]:
        self.store.get_user(oura_user_id)
        names = oauth.normalise_scopes(" ".join(scopes)) if scopes is not None else None
        granted = frozenset(names if names is not None else self.config.default_scopes)
        _rec, body = oauth.issue(self, oura_user_id, granted)
        return body

    def expire_access_token(self, token: str) -> None:
        with self.store.lock:
            self.store.tokens[token].expires_at = time.time() - 1

    def revoke_token(self, token: str) -> bool:
        """Kill an access token (and its refresh token) or a refresh token."""
        with self.store.lock:
            rec = self.store.tokens.get(token) or self.store.refresh_index.get(token)
            if rec is None:
                return False
            rec.revoked = True
            self.store.revoked_tokens.append(rec.access_token)
            return True

    @property
    def revoked_tokens(self) -> list[str]:
        with self.store.lock:
            return list(self.store.revoked_tokens)

    # ---- documents ---------------------------------------------------------------------------

    def put_document(
        self,
        oura_user_id: str,
        data_type: str,
        document: Doc | None = None,
        *,
        emit: bool = True,
        day: date | str | None = None,
    ) -> Doc:
        """Create or update one document (or time-series row) and announce it by webhook."""
        dtype = _rest_type(data_type)
        user = self.store.get_user(oura_user_id)
        if dtype in data.TIMESERIES_TYPES:
            if document is None:
                raise ValueError("time-series rows must be given explicitly")
            self.store.put_timeseries_row(oura_user_id, dtype, dict(document))
            return document  # heartrate/battery are not webhook data types
        if document is None:
            when = date.fromisoformat(day) if isinstance(day, str) else day
            with self._rng_lock:
                salt = self._rng.randrange(1 << 30)
            doc = data.generate_new(
                user.profile,
                dtype,
                when or datetime.now(UTC).date(),
                self.store.gen_options(),
                salt,
            )
        else:
            doc = copy.deepcopy(document)
        if "id" in doc:
            doc_id = str(doc["id"])
        elif dtype == "daily_cardiovascular_age" and "day" in doc:
            # 2024 documents had no id; keep a day-derived one internally for updates.
            doc_id = self.store.hidden_id(user, dtype, doc)
        else:
            doc_id = str(uuid.uuid4())
            doc = {"id": doc_id, **doc}
        existed = self.store.put_override(oura_user_id, dtype, doc_id, doc)
        if emit:
            self.emitter.emit("update" if existed else "create", dtype, doc_id, oura_user_id)
        return doc

    def delete_document(
        self, oura_user_id: str, data_type: str, object_id: str, emit: bool = True
    ) -> None:
        dtype = _rest_type(data_type)
        if not self.store.delete(oura_user_id, dtype, object_id):
            raise KeyError(f"no {dtype} document {object_id} for {oura_user_id}")
        if emit:
            self.emitter.emit("delete", dtype, object_id, oura_user_id)

    def documents(
        self,
        oura_user_id: str,
        data_type: str,
        start: date | datetime | str | None = None,
        end: date | datetime | str | None = None,
    ) -> list[Doc]:
        """What exists, filtered exactly like the HTTP API filters ``start_date``/``end_date``."""
        dtype = _rest_type(data_type)
        s, e = to_instant(start), to_instant(end)
        if dtype in data.TIMESERIES_TYPES:
            bounds = self.store.history_bounds(self.store.get_user(oura_user_id))
            first = s or datetime(1970, 1, 1, tzinfo=UTC)
            if s is None and bounds:
                first = datetime(bounds[0].year, bounds[0].month, bounds[0].day, tzinfo=UTC)
            rows, _ = self.store.timeseries(
                oura_user_id, dtype, first, e or datetime.now(UTC), None, None
            )
            return rows
        return self.store.list_documents(oura_user_id, dtype, s, e)

    def get_document(self, oura_user_id: str, data_type: str, object_id: str) -> Doc | None:
        return self.store.get_document(oura_user_id, _rest_type(data_type), object_id)

    # ---- subscriptions / deliveries ----------------------------------------------------------

    @property
    def subscriptions(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [s.model() for s in self.store.subscriptions.values()]

    def expire_subscription(self, subscription_id: str) -> None:
        with self.store.lock:
            self.store.subscriptions[subscription_id].expiration_time = datetime.now(UTC)

    @property
    def deliveries(self) -> list[webhooks.Delivery]:
        return list(self.emitter.deliveries)

    def wait_for_deliveries(self, timeout: float = 10) -> list[webhooks.Delivery]:
        if not self.emitter.wait_idle(timeout):
            raise TimeoutError("webhook deliveries still pending")
        return self.deliveries

    # ---- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self.store.lock:
            return list(self.store.requests)

    def reset_requests(self) -> None:
        with self.store.lock:
            self.store.requests.clear()

    # ---- WSGI --------------------------------------------------------------------------------

    def wsgi_app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        who: str | None = None
        try:
            response, who = self._dispatch(request)
        except Exception:  # a simulator bug must surface as a 500, not kill the thread
            import traceback

            traceback.print_exc()
            response = detail(500, "Internal simulator error")
        self.store.log_request(
            RequestRecord(time.time(), request.method, request.path, who, response.status_code)
        )
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> tuple[Response, str | None]:
        path = request.path.rstrip("/") or "/"
        if path in _OAUTH_ROUTES:
            client = request.args.get("client_id") or request.form.get("client_id")
            if request.authorization and request.authorization.type == "basic":
                client = request.authorization.username
            return _OAUTH_ROUTES[path](self, request), client
        segments = [s for s in path.split("/") if s]
        if segments[:2] == ["v2", "webhook"] and segments[2:3] == ["subscription"]:
            return (
                webhooks.handle_subscriptions(self, request, segments[3:]),
                request.headers.get("x-client-id"),
            )
        sandbox = segments[:3] == ["v2", "sandbox", "usercollection"]
        if segments[:2] == ["v2", "usercollection"] or sandbox:
            bearer = _bearer(request)
            if request.method != "GET":
                return detail(405, "Method Not Allowed"), bearer
            parts = segments[3:] if sandbox else segments[2:]
            return self._data_request(request, bearer, parts, sandbox), bearer
        return detail(404, "Not Found"), None

    def _data_request(
        self, request: Request, bearer: str | None, parts: list[str], sandbox: bool
    ) -> Response:
        cfg = self.config
        if cfg.latency_ms:
            time.sleep(cfg.latency_ms / 1000)
        with self.store.lock:
            rec = self.store.tokens.get(bearer or "")
        app = rec.client_id if rec else None
        rejection = self.limiter.check(
            bearer, app, cfg.rate_limit_per_token, cfg.rate_limit_per_app, cfg.rate_limit_window_s
        )
        if rejection is not None:
            return detail(429, "Rate limit exceeded", rejection.headers())
        injected = self._injected_failure()
        if injected is not None:
            return injected
        if sandbox:
            return usercollection.handle_sandbox(self, request, bearer, parts)
        return usercollection.handle(self, request, bearer, parts)

    def _injected_failure(self) -> Response | None:
        cfg = self.config
        with self._rng_lock:
            forced = cfg.force_next_statuses.pop(0) if cfg.force_next_statuses else None
            roll_timeout = cfg.timeout_rate > 0 and self._rng.random() < cfg.timeout_rate
            roll_error = cfg.error_rate > 0 and self._rng.random() < cfg.error_rate
            error_status = self._rng.choice(cfg.error_statuses) if roll_error else 500
        if forced is not None:
            if forced == 429:
                now = int(time.time())
                window = int(cfg.rate_limit_window_s)
                return detail(
                    429,
                    "Rate limit exceeded",
                    {
                        "Retry-After": "1",
                        "X-RateLimit-Limit": str(cfg.rate_limit_per_token),
                        "X-RateLimit-Window": str(window),
                        "X-RateLimit-Reset": str(now + 1),
                        "X-RateLimit-Tier": "token",
                    },
                )
            return detail(forced, _reason(forced))
        if roll_timeout:
            time.sleep(cfg.timeout_hang_s)  # longer than the client's timeout, then answer
        if roll_error:
            return detail(error_status, _reason(error_status))
        return None


def _reason(status: int) -> str:
    return {
        400: "Client Exception",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Rate limit exceeded",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, "Error")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
