"""The one Oura API client used by every part of the system.

- Per-user calls go through `OuraClient.get(connection, path, params)`, which takes a unit of
  the shared budget (rate_budget), refreshes the token before expiry and once on a 401,
  honours Retry-After on 429 and retries 5xx and timeouts with exponential backoff and jitter.
- Every attempt first asks the endpoint class's circuit breaker (circuit_breaker): while Oura
  is down it raises `OuraCircuitOpen` without calling Oura, and a call's own retries stop as
  soon as the breaker opens.
- Token refresh is serialised per connection with `SELECT ... FOR UPDATE`: Oura's refresh
  tokens are single use, so two processes refreshing at once would otherwise lose the
  connection. The second process waits for the lock, sees the bumped `token_version`, and
  uses the token the first one stored.
- A refresh token Oura no longer accepts marks the connection needs_reauth and raises
  `NeedsReauth`; callers stop retrying that user (no crash loop).

Nothing here logs a token, a code or a response body.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.metrics import oura_request_duration_seconds, provider_rate_limit_hits
from ingestion import circuit_breaker, crypto, rate_budget
from ingestion.models import OuraConnection
from ingestion.rate_budget import Priority

logger = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)
MAX_RETRY_AFTER_S = 120.0


class OuraError(Exception):
    """Base of everything this client raises. Messages carry statuses, never bodies."""


class OuraUnavailable(OuraError):
    """5xx, timeouts or connection errors that outlasted the retries: try again later.

    `retry_after_s` is set when the circuit breaker opened meanwhile: how long it stays open.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OuraCircuitOpen(OuraUnavailable):
    """The endpoint class's breaker is open: Oura was not called (or only for this call's
    half-open probe, which failed). Callers that retry wait `retry_after_s` and do not count
    this as an attempt: the breaker already spaces the calls."""

    def __init__(self, endpoint: str, retry_after_s: float) -> None:
        super().__init__(
            f"Oura circuit {endpoint} open: retry after {retry_after_s:.1f}s",
            retry_after_s=retry_after_s,
        )
        self.endpoint = endpoint


@dataclass
class OuraRateLimited(OuraError):
    retry_after_s: float

    def __str__(self) -> str:
        return f"Oura rate limit: retry after {self.retry_after_s:.0f}s"


class NeedsReauth(OuraError):
    """The user must connect again: the refresh token was refused or revoked."""


class OuraRequestError(OuraError):
    """A 4xx other than 401/404/429: our request is wrong; retrying will not help."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"Oura answered {status}{': ' + detail if detail else ''}")
        self.status = status


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_in: int
    scopes: list[str]

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> TokenSet:
        scope = str(body.get("scope") or "")
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=str(body["refresh_token"]),
            expires_in=int(body.get("expires_in") or 86400),
            scopes=[s.removeprefix("extapi:") for s in scope.split() if s],
        )


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped at 10 s."""
    return float(random.uniform(0, min(10.0, 0.2 * 2**attempt)))


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _oauth_error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", ""))
    except ValueError:
        return ""


_COLLECTION = re.compile(r"/v2/usercollection/([a-z_]{1,40})(?:/|$)")


def endpoint_class(path: str) -> str:
    """The metric label of a /v2 data path: its collection, never its ids or query."""
    match = _COLLECTION.match(path)
    return match.group(1) if match else "other"


class OuraClient:
    def __init__(self, http: httpx.Client | None = None) -> None:
        self.http = http or httpx.Client(
            timeout=settings.OURA_HTTP_TIMEOUT_S,
            headers={"User-Agent": "health-integrations/1.0"},
        )

    @property
    def max_retries(self) -> int:
        """Read per request, like every other Oura setting, not once per (singleton) client."""
        retries: int = settings.OURA_MAX_RETRIES
        return retries

    # -- transport with retries ------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        priority: Priority,
        max_budget_wait_s: float,
        prepaid: rate_budget.Prepaid | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One logical request: breaker, budget, then retries on 429/5xx/timeouts. 4xx are
        returned.

        `endpoint` labels the attempts' durations: a fixed name or a collection, no ids."""
        breaker = circuit_breaker.breaker_for(endpoint)
        # A probe's lease outlives its budget wait and request: no one else probes meanwhile.
        timeout = float(kwargs.get("timeout") or settings.OURA_HTTP_TIMEOUT_S)
        lease_s = max_budget_wait_s + timeout + 5.0
        attempt = 0
        failure = ""
        while True:
            try:
                permit = circuit_breaker.admit(breaker, lease_s=lease_s, wait_for_probe_s=lease_s)
            except circuit_breaker.CircuitOpen as refused:
                if not failure:
                    raise OuraCircuitOpen(breaker, refused.retry_after_s) from None
                # This call met the outage itself: its failure counts as an attempt.
                raise OuraUnavailable(failure, retry_after_s=refused.retry_after_s) from None
            # A prepaid unit stands for a first attempt only; retries ask the shared budget.
            rate_budget.acquire(
                priority,
                max_wait_s=max_budget_wait_s,
                prepaid=prepaid if attempt == 0 else None,
            )
            started = time.monotonic()
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                oura_request_duration_seconds.labels(endpoint=endpoint, status="error").observe(
                    time.monotonic() - started
                )
                failure = f"Oura unreachable: {type(exc).__name__}"
                unreachable = True  # handled outside the except: nothing chains to `exc`
            else:
                unreachable = False
            if unreachable:
                self._failed(permit, failure, last=attempt >= self.max_retries)
                attempt += 1
                time.sleep(_backoff(attempt))
                continue
            oura_request_duration_seconds.labels(
                endpoint=endpoint, status=str(response.status_code)
            ).observe(time.monotonic() - started)
            if response.status_code >= 500:
                failure = f"Oura answered {response.status_code}"
                self._failed(permit, failure, last=attempt >= self.max_retries)
                attempt += 1
                time.sleep(_backoff(attempt))
                continue
            # Any other answer, a 429 or a 4xx included, means Oura is up.
            circuit_breaker.record_success(permit)
            if response.status_code == 429:
                wait = _retry_after(response)
                provider_rate_limit_hits.labels(provider="oura", source="oura_429").inc()
                rate_budget.block_until(datetime.now(UTC) + timedelta(seconds=wait))
                if prepaid is not None:
                    prepaid.cancel()  # the batch's other requests must see the pause too
                if attempt >= self.max_retries or wait > MAX_RETRY_AFTER_S:
                    raise OuraRateLimited(retry_after_s=wait)
                attempt += 1
                logger.info("oura_rate_limited", extra={"retry_after_s": wait})
                time.sleep(wait)
                continue
            return response

    @staticmethod
    def _failed(permit: circuit_breaker.Permit, failure: str, *, last: bool) -> None:
        """Record a 5xx/timeout with the breaker; raise unless the call may retry."""
        open_s = circuit_breaker.record_failure(permit)
        if permit.probe:
            raise OuraCircuitOpen(permit.endpoint, open_s)
        if open_s > 0 or last:
            # Retrying into an open breaker only waits for a refusal: stop now.
            raise OuraUnavailable(failure, retry_after_s=open_s or None)

    # -- OAuth -----------------------------------------------------------------------------

    def _token_request(self, form: dict[str, str]) -> httpx.Response:
        form = form | {
            "client_id": settings.OURA_CLIENT_ID,
            "client_secret": settings.OURA_CLIENT_SECRET,
        }
        return self._send(
            "POST", settings.OURA_TOKEN_URL, data=form, endpoint="oauth_token",
            priority=Priority.LIVE, max_budget_wait_s=30,
        )  # fmt: skip

    def exchange_code(self, *, code: str, code_verifier: str) -> TokenSet:
        response = self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": settings.OURA_REDIRECT_URI,
                "code_verifier": code_verifier,
            }
        )
        if response.status_code != 200:
            raise OuraRequestError(response.status_code, _oauth_error(response))
        return TokenSet.from_response(response.json())

    def _refresh_grant(self, refresh_token: str) -> TokenSet:
        response = self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        if response.status_code in (400, 401):
            # invalid_grant: used, revoked or expired. Nothing but a new consent fixes it.
            raise NeedsReauth(f"refresh refused: {_oauth_error(response) or response.status_code}")
        if response.status_code != 200:
            raise OuraRequestError(response.status_code, _oauth_error(response))
        return TokenSet.from_response(response.json())

    def revoke(self, access_token: str) -> bool:
        response = self._send(
            "POST", settings.OURA_REVOKE_URL, params={"access_token": access_token},
            endpoint="oauth_revoke", priority=Priority.LIVE, max_budget_wait_s=30,
        )  # fmt: skip
        return response.status_code < 400

    def personal_info(self, access_token: str) -> dict[str, Any]:
        response = self._send(
            "GET",
            f"{settings.OURA_API_BASE_URL}/v2/usercollection/personal_info",
            headers={"Authorization": f"Bearer {access_token}"},
            endpoint="personal_info",
            priority=Priority.LIVE,
            max_budget_wait_s=30,
        )
        if response.status_code != 200:
            raise OuraRequestError(response.status_code)
        body: dict[str, Any] = response.json()
        return body

    # -- tokens of a connection -------------------------------------------------------------

    def access_token_for(self, connection: OuraConnection) -> str:
        """A valid access token, refreshed first when it expires within REFRESH_MARGIN."""
        if connection.status != OuraConnection.Status.ACTIVE or not connection.access_token_enc:
            raise NeedsReauth(f"connection is {connection.status}")
        expires = connection.access_token_expires_at
        if expires is None or expires - REFRESH_MARGIN <= timezone.now():
            return self.refresh(connection, seen_version=connection.token_version)
        return crypto.decrypt(connection.access_token_enc)

    def refresh(self, connection: OuraConnection, *, seen_version: int) -> str:
        """Refresh once across all processes; returns the access token now current.

        `seen_version` is the token_version the caller's token came from. If another process
        refreshed in the meantime, its token is used and Oura is not called again.
        """
        with transaction.atomic():
            locked = OuraConnection.objects.select_for_update().filter(pk=connection.pk).first()
            if locked is None:  # disconnected and erased meanwhile
                raise NeedsReauth("connection is gone")
            if locked.status != OuraConnection.Status.ACTIVE or not locked.refresh_token_enc:
                raise NeedsReauth(f"connection is {locked.status}")
            if locked.token_version != seen_version and locked.access_token_enc:
                fresh = locked
            else:
                # A NeedsReauth here rolls this transaction back; the caller records the
                # status change afterwards (connection_mark_needs_reauth).
                tokens = self._refresh_grant(crypto.decrypt(locked.refresh_token_enc))
                now = timezone.now()
                locked.access_token_enc = crypto.encrypt(tokens.access_token)
                locked.refresh_token_enc = crypto.encrypt(tokens.refresh_token)
                locked.access_token_expires_at = now + timedelta(seconds=tokens.expires_in)
                locked.token_version += 1
                locked.last_refresh_at = now
                locked.updated_at = now
                if tokens.scopes:
                    locked.scopes = tokens.scopes
                locked.save()
                fresh = locked
        for field in (
            "access_token_enc", "refresh_token_enc", "access_token_expires_at",
            "token_version", "last_refresh_at", "scopes", "status",
        ):  # fmt: skip
            setattr(connection, field, getattr(fresh, field))
        assert fresh.access_token_enc is not None
        return crypto.decrypt(fresh.access_token_enc)

    # -- data ------------------------------------------------------------------------------

    def get(
        self,
        connection: OuraConnection,
        path: str,
        params: dict[str, str] | None = None,
        *,
        priority: Priority = Priority.LIVE,
        max_budget_wait_s: float = 0.0,
        prepaid: rate_budget.Prepaid | None = None,
    ) -> httpx.Response:
        """GET a /v2 path for this user. Returns 200 and 404 responses; raises otherwise."""
        from ingestion.connection_services import connection_mark_needs_reauth

        url = f"{settings.OURA_API_BASE_URL}{path}"
        refreshed = False
        while True:
            try:
                version = connection.token_version
                token = self.access_token_for(connection)
            except NeedsReauth:
                connection_mark_needs_reauth(connection=connection)
                raise
            response = self._send(
                "GET", url, params=params, headers={"Authorization": f"Bearer {token}"},
                endpoint=endpoint_class(path), priority=priority,
                max_budget_wait_s=max_budget_wait_s, prepaid=prepaid,
            )  # fmt: skip
            if response.status_code == 401 and not refreshed:
                refreshed = True
                try:
                    self.refresh(connection, seen_version=version)
                except NeedsReauth:
                    connection_mark_needs_reauth(connection=connection)
                    raise
                continue
            if response.status_code == 401:
                connection_mark_needs_reauth(connection=connection)
                raise NeedsReauth("Oura refused a freshly refreshed token")
            if response.status_code in (200, 404):
                return response
            raise OuraRequestError(response.status_code)

    def get_document(
        self,
        connection: OuraConnection,
        collection: str,
        document_id: str,
        *,
        prepaid: rate_budget.Prepaid | None = None,
    ) -> dict[str, Any] | None:
        """One document, or None when Oura says it does not exist (deleted)."""
        response = self.get(
            connection, f"/v2/usercollection/{collection}/{document_id}", prepaid=prepaid
        )
        if response.status_code == 404:
            return None
        body: dict[str, Any] = response.json()
        return body

    # -- webhook subscriptions (application credentials, no user token) --------------------

    def _app_headers(self) -> dict[str, str]:
        return {
            "x-client-id": settings.OURA_CLIENT_ID,
            "x-client-secret": settings.OURA_CLIENT_SECRET,
        }

    def subscriptions_request(
        self, method: str, path: str = "", json_body: dict[str, Any] | None = None
    ) -> httpx.Response:
        response = self._send(
            method,
            f"{settings.OURA_API_BASE_URL}/v2/webhook/subscription{path}",
            headers=self._app_headers(),
            json=json_body,
            endpoint="webhook_subscription",
            priority=Priority.LIVE,
            max_budget_wait_s=30,
            # Oura calls our callback while the create request is open (the challenge).
            timeout=max(settings.OURA_HTTP_TIMEOUT_S, 60.0),
        )
        return response


_client: OuraClient | None = None


def get_client() -> OuraClient:
    global _client
    if _client is None:
        _client = OuraClient()
    return _client
