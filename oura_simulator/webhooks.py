"""Webhook subscription API (CONTRACT 5.2/5.3/5.6) and the delivery emitter (5.4/5.5).

The emitter is one background thread working a due-time heap, so first attempts leave in
the order the events happened (unless ``out_of_order`` says otherwise) and a test can wait
for quiescence with :meth:`Emitter.wait_idle`.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from werkzeug.wrappers import Request, Response

from . import data
from .httputil import detail, json_response, pydantic_item, validation_error
from .store import Subscription

if TYPE_CHECKING:
    from .app import OuraSimulator
    from .config import SimulatorConfig

OPERATIONS = ("create", "update", "delete")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + body, "sha256").hexdigest().upper()


@dataclass
class Delivery:
    """One notification to one subscription, with every attempt it took."""

    id: int
    url: str
    subscription_id: str
    body: dict[str, Any]
    raw_body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    attempts: int = 0
    attempt_log: list[tuple[float, int | None, str | None]] = field(default_factory=list)
    done: bool = False
    succeeded: bool = False
    class_counts: dict[str, int] = field(default_factory=dict)


# ---- subscription API ------------------------------------------------------------------------


def _enum_error(field_name: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    quoted = [f"'{a}'" for a in allowed]
    expected = ", ".join(quoted[:-1]) + f" or {quoted[-1]}"
    return pydantic_item(
        "enum", ["body", field_name], f"Input should be {expected}", value, {"expected": expected}
    )


def _validate(body: Any, required: tuple[str, ...]) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return [
            pydantic_item(
                "model_attributes_type",
                ["body"],
                "Input should be a valid dictionary or object",
                body,
            )
        ]
    errors = []
    for name in required:
        if name not in body:
            errors.append(pydantic_item("missing", ["body", name], "Field required", body))
    for name in ("callback_url", "verification_token"):
        if (
            name in body
            and not isinstance(body[name], str)
            and not (body[name] is None and name not in required)
        ):
            errors.append(
                pydantic_item(
                    "string_type", ["body", name], "Input should be a valid string", body[name]
                )
            )
    if body.get("event_type") is not None and body["event_type"] not in OPERATIONS:
        errors.append(_enum_error("event_type", body["event_type"], OPERATIONS))
    if body.get("data_type") is not None and body["data_type"] not in data.WEBHOOK_DATA_TYPES:
        errors.append(_enum_error("data_type", body["data_type"], data.WEBHOOK_DATA_TYPES))
    return errors


def run_challenge(cfg: SimulatorConfig, callback_url: str, verification_token: str) -> str | None:
    """GET the callback with the challenge; returns an error text, or None when it echoed."""
    challenge = secrets.token_urlsafe(24)
    try:
        resp = httpx.get(
            callback_url,
            params={"verification_token": verification_token, "challenge": challenge},
            timeout=cfg.challenge_timeout_s,
        )
    except httpx.HTTPError as exc:
        return f"Verification request to callback_url failed: {type(exc).__name__}"
    if resp.status_code != 200:
        return f"Verification request to callback_url answered {resp.status_code}"
    try:
        echoed = resp.json().get("challenge")
    except (ValueError, AttributeError):
        return "Verification response was not JSON with a challenge"
    if echoed != challenge:
        return "Verification challenge mismatch"
    return None


def handle_subscriptions(sim: OuraSimulator, request: Request, parts: list[str]) -> Response:
    """parts: path segments after /v2/webhook/subscription."""
    cfg = sim.config
    if (
        request.headers.get("x-client-id") != cfg.client_id
        or request.headers.get("x-client-secret") != cfg.client_secret
    ):
        return detail(401, "Invalid client credentials")
    store = sim.store
    method = request.method
    if not parts:
        if method == "GET":
            with store.lock:
                subs = [s.model() for s in store.subscriptions.values()]
            return json_response(subs)
        if method == "POST":
            return _create(sim, request)
        return detail(405, "Method Not Allowed")
    renew = parts[0] == "renew" and len(parts) == 2
    if len(parts) > (2 if renew else 1):
        return detail(404, "Not Found")
    sub_id = parts[-1]
    with store.lock:
        sub = store.subscriptions.get(sub_id)
    if renew and method != "PUT":
        return detail(405, "Method Not Allowed")
    if sub is None:
        if cfg.unknown_subscription_status == 404:
            return detail(404, f"Subscription with id {sub_id} not found.")
        return detail(403, "Webhook with specified id does not exist.")
    if renew:
        with store.lock:
            sub.expiration_time = _expiry(cfg)
        return json_response(sub.model())
    if method == "GET":
        return json_response(sub.model())
    if method == "DELETE":
        with store.lock:
            store.subscriptions.pop(sub_id, None)
        return Response(status=204)
    if method == "PUT":
        body = _json_body(request)
        errors = _validate(body, ("verification_token",))
        if errors:
            return validation_error(errors)
        new_url = body.get("callback_url") or sub.callback_url
        if new_url != sub.callback_url and cfg.rechallenge_on_callback_change:
            failure = run_challenge(cfg, new_url, body["verification_token"])
            if failure:
                return detail(400, failure)
        with store.lock:
            sub.callback_url = new_url
            sub.event_type = body.get("event_type") or sub.event_type
            sub.data_type = body.get("data_type") or sub.data_type
            sub.verification_token = body["verification_token"]
        return json_response(sub.model())
    return detail(405, "Method Not Allowed")


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError:
        return None


def _expiry(cfg: SimulatorConfig) -> datetime:
    return (datetime.now(UTC) + timedelta(days=cfg.subscription_ttl_days)).replace(microsecond=0)


def _create(sim: OuraSimulator, request: Request) -> Response:
    cfg = sim.config
    body = _json_body(request)
    errors = _validate(body, ("callback_url", "verification_token", "event_type", "data_type"))
    if errors:
        return validation_error(errors)
    if cfg.duplicate_subscription_409:
        with sim.store.lock:
            for s in sim.store.subscriptions.values():
                if (s.callback_url, s.event_type, s.data_type) == (
                    body["callback_url"],
                    body["event_type"],
                    body["data_type"],
                ):
                    return detail(409, "Subscription already exists")
    # The challenge runs while the POST is still open, as on the live API (CONTRACT 5.2).
    failure = run_challenge(cfg, body["callback_url"], body["verification_token"])
    if failure:
        return detail(400, failure)
    sub = Subscription(
        id=str(uuid.uuid4()),
        callback_url=body["callback_url"],
        event_type=body["event_type"],
        data_type=body["data_type"],
        verification_token=body["verification_token"],
        expiration_time=_expiry(cfg),
    )
    with sim.store.lock:
        sim.store.subscriptions[sub.id] = sub
    return json_response(sub.model(), 201)


# ---- emitter ---------------------------------------------------------------------------------


class Emitter:
    def __init__(self, sim: OuraSimulator) -> None:
        self.sim = sim
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._in_flight = 0
        self._held: list[tuple[str, dict[str, Any]]] = []
        self._stop = False
        self.deliveries: list[Delivery] = []
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    def start(self) -> None:
        self._stop = False
        self._client = httpx.Client()
        self._thread = threading.Thread(target=self._run, name="oura-sim-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            self._client.close()

    # -- producing events --

    def emit(self, event_type: str, rest_type: str, object_id: str, user_id: str) -> None:
        cfg = self.sim.config
        data_type = data.REST_TO_WEBHOOK.get(rest_type, rest_type)
        body = {
            "event_type": event_type,
            "data_type": data_type,
            "object_id": object_id,
            "event_time": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "user_id": user_id,
        }
        now = datetime.now(UTC)
        with self.sim.store.lock:
            targets = [
                s
                for s in self.sim.store.subscriptions.values()
                if s.event_type == event_type
                and s.data_type == data_type
                and s.expiration_time > now
            ]
        copies = 2 if cfg.duplicate_delivery else 1
        jobs = [(s.id, body) for s in targets for _ in range(copies)]
        with self._cv:
            if cfg.out_of_order:
                self._held.extend(jobs)
                if len(self._held) >= max(1, cfg.out_of_order_batch):
                    self._flush_held_locked()
            else:
                for sub_id, b in jobs:
                    self._schedule_locked(sub_id, b, time.time() + cfg.webhook_delay_s)
            self._cv.notify_all()

    def flush_held(self) -> None:
        with self._cv:
            self._flush_held_locked()
            self._cv.notify_all()

    def _flush_held_locked(self) -> None:
        held, self._held = self._held, []
        due = time.time() + self.sim.config.webhook_delay_s
        for sub_id, b in reversed(held):  # newest first: an update can beat its create
            self._schedule_locked(sub_id, b, due)

    def _schedule_locked(self, sub_id: str, body: dict[str, Any], due: float) -> None:
        with self.sim.store.lock:
            sub = self.sim.store.subscriptions.get(sub_id)
        if sub is None:
            return
        d = Delivery(id=next(self._ids), url=sub.callback_url, subscription_id=sub_id, body=body)
        self.deliveries.append(d)
        heapq.heappush(self._heap, (due, next(self._seq), d))

    # -- waiting --

    def wait_idle(self, timeout: float) -> bool:
        self.flush_held()
        deadline = time.time() + timeout
        with self._cv:
            while self._heap or self._in_flight:
                remaining = deadline - time.time()
                if remaining <= 0:
                    return False
                self._cv.wait(min(remaining, 0.05))
        return True

    # -- worker --

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0][0] > time.time()):
                    wait = (self._heap[0][0] - time.time()) if self._heap else None
                    self._cv.wait(wait if wait is None else max(0.0, min(wait, 0.5)))
                if self._stop:
                    return
                _, _, d = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                retry_at = self._attempt(d)
            finally:
                with self._cv:
                    self._in_flight -= 1
                    if retry_at is not None and not self._stop:
                        heapq.heappush(self._heap, (retry_at, next(self._seq), d))
                    self._cv.notify_all()

    def _attempt(self, d: Delivery) -> float | None:
        cfg = self.sim.config
        with self.sim.store.lock:
            sub = self.sim.store.subscriptions.get(d.subscription_id)
        if sub is None or sub.expiration_time <= datetime.now(UTC):
            d.done = True
            return None
        compact = json.dumps(d.body, separators=(",", ":")).encode()
        raw = json.dumps(d.body, indent=2).encode() if cfg.pretty_print_body else compact
        ts = str(int(time.time()) - cfg.stale_timestamp_s)
        key = cfg.wrong_signing_key if cfg.sign_with_wrong_key else cfg.client_secret
        # Signed over the compact form even when the wire body is pretty, i.e. what the
        # documented JSON.stringify(req.body) verifier computes (CONTRACT 5.5 ambiguity a).
        signature = sign(key, ts, compact)
        if cfg.signature_lowercase:
            signature = signature.lower()
        headers = {
            "Content-Type": "application/json",
            "x-oura-signature": signature,
            "x-oura-timestamp": ts,
        }
        d.url, d.raw_body, d.headers = sub.callback_url, raw, headers
        d.attempts += 1
        status: int | None = None
        error: str | None = None
        assert self._client is not None
        try:
            resp = self._client.post(
                sub.callback_url, content=raw, headers=headers, timeout=cfg.delivery_timeout_s
            )
            status = resp.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        d.status = status
        d.attempt_log.append((time.time(), status, error))
        if status is not None and (
            200 <= status < 300 or (cfg.success_on_3xx and 300 <= status < 400)
        ):
            d.done = d.succeeded = True
            return None
        if status == 410:  # the receiver cancels the subscription (CONTRACT 5.4)
            with self.sim.store.lock:
                self.sim.store.subscriptions.pop(d.subscription_id, None)
            d.done = True
            return None
        klass = "timeout" if status is None else ("4xx" if status < 500 else "5xx")
        d.class_counts[klass] = d.class_counts.get(klass, 0) + 1
        if d.class_counts[klass] > cfg.max_retries_per_class:
            d.done = True
            return None
        delays = cfg.retry_delays_s or [1.0]
        retry_no = sum(d.class_counts.values())
        return time.time() + delays[min(retry_no - 1, len(delays) - 1)]
