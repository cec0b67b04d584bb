"""Connecting, refreshing and disconnecting users' Oura accounts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_record
from core.identifiers import validate_user_id
from core.pseudonyms import person_hash
from ingestion import crypto
from ingestion.models import OAuthState, OuraConnection
from ingestion.oura_client import OuraError, get_client
from privacy.services import tombstones_lift

logger = logging.getLogger(__name__)


class ConnectError(Exception):
    """The connect flow failed; `code` is stable, the message is safe to show the person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class BrowserBinding:
    """What the start step gives the browser: where to go at Oura, and the cookie's nonce."""

    authorize_url: str
    nonce: str


@dataclass(frozen=True)
class LinkedAccount:
    """The connection made, and how the success page names the Oura account (no health data)."""

    connection: OuraConnection
    account_suffix: str
    masked_email: str | None


def connection_start(*, user_id: str) -> str:
    """Create a pending connect for `user_id` and return our start URL with its one-time ticket.

    Nothing in it goes to Oura yet: the browser that opens the URL first is the one bound to
    the flow (`connection_authorize`), so a link that leaks after use is worth nothing.
    """
    validate_user_id(user_id)
    ticket = secrets.token_urlsafe(32)
    OAuthState.objects.create(
        ticket_hash=_hash_secret(ticket),
        user_id=user_id,
        code_verifier_enc=crypto.encrypt(secrets.token_urlsafe(48)),
        expires_at=timezone.now() + timedelta(seconds=settings.OURA_OAUTH_STATE_TTL_S),
    )
    start = reverse("oura-oauth-start")
    return f"{settings.PUBLIC_BASE_URL}{start}?{urlencode({'ticket': ticket})}"


def connection_authorize(*, ticket: str) -> BrowserBinding:
    """Open a ticket, once: mint the state Oura echoes and the nonce the browser keeps.

    One conditional UPDATE consumes the ticket, so two browsers opening the same link get
    one flow between them. The state then has OURA_OAUTH_STATE_TTL_S for the sign-in at Oura.
    PKCE (S256) is sent as well: Oura's documentation does not promise it, but an OAuth
    server that does not know the parameters ignores them, and one that does gets a code
    that is useless to anyone who intercepts it.
    """
    now = timezone.now()
    ticket_hash = _hash_secret(ticket)
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    opened = OAuthState.objects.filter(
        ticket_hash=ticket_hash, ticket_used_at__isnull=True, expires_at__gt=now
    ).update(
        ticket_used_at=now,
        state_hash=_hash_secret(state),
        browser_nonce_hash=_hash_secret(nonce),
        expires_at=now + timedelta(seconds=settings.OURA_OAUTH_STATE_TTL_S),
    )
    pending = OAuthState.objects.filter(ticket_hash=ticket_hash).first()
    if pending is None:
        raise ConnectError("invalid_ticket", "This sign-in link is not valid.")
    if not opened:
        if pending.ticket_used_at is not None:
            raise ConnectError("ticket_used", "This sign-in link was already used.")
        raise ConnectError("ticket_expired", "This sign-in link has expired. Start again.")
    verifier = crypto.decrypt(pending.code_verifier_enc)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.OURA_CLIENT_ID,
            "redirect_uri": settings.OURA_REDIRECT_URI,
            "scope": " ".join(settings.OURA_SCOPES),
            "state": state,
            "code_challenge": challenge.decode().rstrip("="),
            "code_challenge_method": "S256",
        }
    )
    return BrowserBinding(authorize_url=f"{settings.OURA_AUTHORIZE_URL}?{query}", nonce=nonce)


def _consume_state(state: str) -> OAuthState:
    """Mark the state used, atomically: a replayed callback finds it already used."""
    now = timezone.now()
    state_hash = _hash_secret(state)
    updated = OAuthState.objects.filter(state_hash=state_hash, used_at__isnull=True).update(
        used_at=now
    )
    pending = OAuthState.objects.filter(state_hash=state_hash).first()
    if pending is None:
        raise ConnectError("invalid_state", "This sign-in link is not valid.")
    if updated == 0:
        raise ConnectError("state_reused", "This sign-in link was already used.")
    if pending.expires_at <= now:
        raise ConnectError("state_expired", "This sign-in link has expired. Start again.")
    return pending


def _same_browser(pending: OAuthState, browser_nonce: str | None) -> bool:
    if not pending.browser_nonce_hash or not browser_nonce:
        return False
    return hmac.compare_digest(pending.browser_nonce_hash, _hash_secret(browser_nonce))


def _mask_email(email: object) -> str | None:
    if not isinstance(email, str) or "@" not in email:
        return None
    local, domain = email.rsplit("@", 1)
    return f"{local[:1]}***@{domain}"


def connection_complete(
    *, state: str, code: str | None, error: str | None, browser_nonce: str | None
) -> LinkedAccount:
    """Finish the OAuth callback: exchange the code, identify the Oura user, store tokens.

    Only the browser that opened the ticket (its cookie's nonce) may finish; the state is
    consumed before that check, so a callback URL opened elsewhere cannot be retried.
    """
    if not state:
        raise ConnectError("invalid_state", "The sign-in response has no state.")
    pending = _consume_state(state)
    if not _same_browser(pending, browser_nonce):
        logger.warning(
            "oauth_callback_from_another_browser", extra={"person": person_hash(pending.user_id)}
        )
        raise ConnectError(
            "other_browser",
            "This sign-in was started in another browser, so nothing was connected. "
            "Start again and finish in the same browser.",
        )
    if error:
        reason = "access_denied" if error == "access_denied" else "authorization_failed"
        raise ConnectError(reason, "Access to Oura was not granted.")
    if not code:
        raise ConnectError("missing_code", "Oura did not return an authorization code.")
    client = get_client()
    try:
        tokens = client.exchange_code(
            code=code, code_verifier=crypto.decrypt(pending.code_verifier_enc)
        )
        info = client.personal_info(tokens.access_token)
    except OuraError as exc:
        logger.warning("oura_code_exchange_failed", extra={"error_type": type(exc).__name__})
        raise ConnectError("exchange_failed", "Oura did not accept the sign-in.") from None

    provider_user_id = str(info["id"])
    now = timezone.now()
    try:
        with transaction.atomic():
            taken = (
                OuraConnection.objects.select_for_update()
                .filter(provider_user_id=provider_user_id)
                .exclude(user_id=pending.user_id)
                .exclude(status=OuraConnection.Status.REVOKED)
                .exists()
            )
            if taken:
                raise ConnectError(
                    "already_connected", "This Oura account is connected to another user."
                )
            # A new consent: an erasure's tombstones of this person and account are lifted.
            tombstones_lift(user_id=pending.user_id, provider_user_id=provider_user_id)
            # A revoked link of this Oura account to someone else gives way to the new one.
            OuraConnection.objects.filter(provider_user_id=provider_user_id).exclude(
                user_id=pending.user_id
            ).delete()
            connection, _ = OuraConnection.objects.update_or_create(
                user_id=pending.user_id,
                defaults={
                    "provider_user_id": provider_user_id,
                    "status": OuraConnection.Status.ACTIVE,
                    "scopes": tokens.scopes,
                    "access_token_enc": crypto.encrypt(tokens.access_token),
                    "refresh_token_enc": crypto.encrypt(tokens.refresh_token),
                    "access_token_expires_at": now + timedelta(seconds=tokens.expires_in),
                    "connected_at": now,
                    "revoked_at": None,
                    "updated_at": now,
                },
            )
            audit_record(
                action=AuditEntry.Action.CONNECTION_CREATED,
                actor="oauth_callback",
                user_id=pending.user_id,
                details={"scopes": tokens.scopes},
            )
    except IntegrityError:
        raise ConnectError(
            "already_connected", "This Oura account is connected to another user."
        ) from None
    email = info.get("email") if "email" in tokens.scopes else None
    return LinkedAccount(
        connection=connection,
        account_suffix=provider_user_id[-6:],
        masked_email=_mask_email(email),
    )


def connection_disconnect(*, connection: OuraConnection, actor: str) -> OuraConnection:
    """Revoke at Oura, delete the tokens, mark revoked. Safe to call twice."""
    if connection.status == OuraConnection.Status.REVOKED:
        return connection
    revoked_at_oura: bool | None = None
    if connection.access_token_enc:
        try:
            revoked_at_oura = get_client().revoke(crypto.decrypt(connection.access_token_enc))
        except OuraError as exc:
            # The tokens are deleted here whatever Oura said; an unrevoked token we no longer
            # hold expires on its own.
            logger.warning("oura_revoke_failed", extra={"error_type": type(exc).__name__})
            revoked_at_oura = False
    now = timezone.now()
    with transaction.atomic():
        OuraConnection.objects.filter(pk=connection.pk).update(
            status=OuraConnection.Status.REVOKED,
            access_token_enc=None,
            refresh_token_enc=None,
            access_token_expires_at=None,
            revoked_at=now,
            updated_at=now,
        )
        audit_record(
            action=AuditEntry.Action.CONNECTION_REVOKED,
            actor=actor,
            user_id=connection.user_id,
            details={"revoked_at_oura": revoked_at_oura},
        )
    connection.refresh_from_db()
    return connection


def connection_mark_needs_reauth(*, connection: OuraConnection) -> None:
    """Oura refused the refresh token: stop using this connection until the user reconnects."""
    changed = OuraConnection.objects.filter(
        pk=connection.pk, status=OuraConnection.Status.ACTIVE
    ).update(status=OuraConnection.Status.NEEDS_REAUTH, updated_at=timezone.now())
    connection.status = OuraConnection.Status.NEEDS_REAUTH
    if changed:
        logger.warning(
            "oura_connection_needs_reauth", extra={"person": person_hash(connection.user_id)}
        )
        audit_record(
            action=AuditEntry.Action.CONNECTION_NEEDS_REAUTH,
            actor="oura_client",
            user_id=connection.user_id,
        )


def oauth_states_purge() -> int:
    """Retention: sign-in states that expired or were used (each lives minutes at most)."""
    deleted, _ = OAuthState.objects.filter(
        Q(expires_at__lte=timezone.now()) | Q(used_at__isnull=False)
    ).delete()
    return deleted


def connections_rotate_keys() -> int:
    """Re-encrypt every stored token under the newest TOKEN_ENCRYPTION_KEYS key."""
    rotated = 0
    for pk in OuraConnection.objects.values_list("pk", flat=True):
        with transaction.atomic():
            conn = OuraConnection.objects.select_for_update().get(pk=pk)
            if conn.access_token_enc:
                conn.access_token_enc = crypto.rotate(conn.access_token_enc)
            if conn.refresh_token_enc:
                conn.refresh_token_enc = crypto.rotate(conn.refresh_token_enc)
            conn.save(update_fields=["access_token_enc", "refresh_token_enc"])
            rotated += 1
    for state in OAuthState.objects.filter(used_at__isnull=True):
        state.code_verifier_enc = crypto.rotate(state.code_verifier_enc)
        state.save(update_fields=["code_verifier_enc"])
    return rotated
