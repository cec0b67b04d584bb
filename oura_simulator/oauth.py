"""OAuth2 authorization-code flow: authorize, token, revoke (CONTRACT 2).

PKCE is not in the contract; we accept it like any RFC 7636 server (S256 or plain) and
enforce it at token time only when the authorize request carried a code_challenge.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from .config import ALL_SCOPES
from .httputil import json_response, oauth_error
from .store import AuthCode, TokenRecord

if TYPE_CHECKING:
    from .app import OuraSimulator

# Legacy spo2Daily (S137) and spo2 (AUTH page) gate the same collection.
SCOPE_ALIASES = {"spo2Daily": "spo2"}
KNOWN_SCOPES = frozenset(ALL_SCOPES) | {"openid", "profile", "biomarkers", "metabolic", "research"}


def normalise_scopes(raw: str | None) -> list[str]:
    out: list[str] = []
    for part in (raw or "").replace(",", " ").split():
        name = part.removeprefix("extapi:")
        name = SCOPE_ALIASES.get(name, name)
        if name in KNOWN_SCOPES and name not in out:
            out.append(name)
    return out


def scope_string(scopes: frozenset[str] | list[str]) -> str:
    # Live token responses echo scopes with the new IdP's prefix (CONTRACT 2.3).
    ordered = [s for s in ALL_SCOPES if s in scopes] + sorted(set(scopes) - set(ALL_SCOPES))
    return " ".join(f"extapi:{s}" for s in ordered)


def _redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location})


def _with_query(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


def authorize(sim: OuraSimulator, request: Request) -> Response:
    cfg = sim.config
    args = request.args
    if args.get("client_id") != cfg.client_id:
        return oauth_error(400, "invalid_client", "Invalid client")
    redirect_uri = args.get("redirect_uri")
    if cfg.redirect_uris:
        if redirect_uri is None and len(cfg.redirect_uris) == 1:
            redirect_uri = cfg.redirect_uris[0]
        if redirect_uri not in cfg.redirect_uris:
            return oauth_error(400, "invalid_request", "Invalid redirect_uri")
    elif not redirect_uri:
        return oauth_error(400, "invalid_request", "Missing redirect_uri")
    assert redirect_uri is not None
    state = args.get("state")
    extra = {"state": state} if state is not None else {}
    if args.get("response_type") != "code":
        return _redirect(_with_query(redirect_uri, {"error": "unsupported_response_type", **extra}))
    method = args.get("code_challenge_method")
    challenge = args.get("code_challenge")
    if challenge and (method or "plain") not in ("S256", "plain"):
        return _redirect(_with_query(redirect_uri, {"error": "invalid_request", **extra}))
    with sim.store.lock:
        if sim.store.deny_next:
            sim.store.deny_next = False
            return _redirect(_with_query(redirect_uri, {"error": "access_denied", **extra}))
    user = sim._login_user(args.get("login_hint"))
    requested = normalise_scopes(args.get("scope")) or list(cfg.default_scopes)
    granted = [s for s in requested if user.scopes is None or s in user.scopes]
    code = AuthCode(
        code=secrets.token_urlsafe(24),
        user_id=user.oura_user_id,
        scopes=frozenset(granted),
        redirect_uri=args.get("redirect_uri"),
        client_id=cfg.client_id,
        expires_at=time.time() + cfg.auth_code_ttl_s,
        code_challenge=challenge,
        code_challenge_method=(method or "plain") if challenge else None,
    )
    with sim.store.lock:
        sim.store.codes[code.code] = code
    params = {"code": code.code, "scope": scope_string(granted), **extra}
    if cfg.include_iss:
        params["iss"] = cfg.issuer
    return _redirect(_with_query(redirect_uri, params))


def _client_credentials(
    request: Request, form: MultiDict[str, str]
) -> tuple[str | None, str | None]:
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        return auth.username, auth.password
    return form.get("client_id"), form.get("client_secret")


def issue(
    sim: OuraSimulator, user_id: str, scopes: frozenset[str]
) -> tuple[TokenRecord, dict[str, Any]]:
    rec = TokenRecord(
        access_token="_0XBPWQQ_" + secrets.token_urlsafe(32),
        refresh_token="_1XBPWQQ_" + secrets.token_urlsafe(32),
        user_id=user_id,
        scopes=scopes,
        client_id=sim.config.client_id,
        expires_at=time.time() + sim.config.access_token_ttl_s,
    )
    with sim.store.lock:
        sim.store.tokens[rec.access_token] = rec
        sim.store.refresh_index[rec.refresh_token] = rec
    body = {
        "token_type": "bearer",
        "access_token": rec.access_token,
        "expires_in": sim.config.access_token_ttl_s,
        "refresh_token": rec.refresh_token,
        "scope": scope_string(scopes),
        "id_token": None,
    }
    return rec, body


def _pkce_ok(code: AuthCode, verifier: str | None) -> bool:
    if code.code_challenge is None:
        return True
    if not verifier:
        return False
    if code.code_challenge_method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        return secrets.compare_digest(computed, code.code_challenge)
    return secrets.compare_digest(verifier, code.code_challenge)


def token(sim: OuraSimulator, request: Request) -> Response:
    form = request.form
    client_id, client_secret = _client_credentials(request, form)
    if client_id != sim.config.client_id or client_secret != sim.config.client_secret:
        return oauth_error(401, "invalid_client", "Invalid client")
    grant = form.get("grant_type")
    if not grant:
        return oauth_error(400, "invalid_request", "Missing grant_type")
    now = time.time()
    if grant == "authorization_code":
        code_value = form.get("code") or ""
        with sim.store.lock:
            code = sim.store.codes.get(code_value)
            if code is None or code.used or code.expires_at < now:
                return oauth_error(400, "invalid_grant", "Invalid or expired authorization code")
            # Single use even when the rest of the request is wrong (RFC 6749 10.5).
            code.used = True
        if code.redirect_uri is not None and form.get("redirect_uri") != code.redirect_uri:
            return oauth_error(400, "invalid_grant", "redirect_uri does not match")
        if not _pkce_ok(code, form.get("code_verifier")):
            return oauth_error(400, "invalid_grant", "PKCE verification failed")
        _rec, body = issue(sim, code.user_id, code.scopes)
        return json_response(body)
    if grant == "refresh_token":
        with sim.store.lock:
            old = sim.store.refresh_index.get(form.get("refresh_token") or "")
            if old is None or old.refresh_used or old.revoked:
                return oauth_error(400, "invalid_grant", "Token already used or revoked")
            old.refresh_used = True  # rotation: every refresh token works exactly once
        _rec, body = issue(sim, old.user_id, old.scopes)
        return json_response(body)
    return oauth_error(400, "unsupported_grant_type", f"Unsupported grant_type {grant}")


def revoke(sim: OuraSimulator, request: Request) -> Response:
    value = (
        request.args.get("access_token")
        or request.form.get("access_token")
        or request.form.get("token")
        or request.args.get("token")
        or ""
    )
    sim.revoke_token(value)
    # Unknown tokens also get 200, as RFC 7009 asks; the real body is undocumented.
    return json_response({})
