"""Oura connections against the simulator: connect, refresh, revoke, subscriptions."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.db import connection as db
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEntry
from ingestion import crypto
from ingestion.connection_apis import BROWSER_COOKIE
from ingestion.models import OAuthState, OuraConnection, WebhookSubscription
from ingestion.oura_client import NeedsReauth, OuraClient, OuraRateLimited, get_client
from ingestion.rate_budget import BudgetExhausted
from ingestion.subscription_services import (
    DATA_TYPES,
    EVENT_TYPES,
    subscriptions_renew,
    subscriptions_sync,
)
from oura_simulator import OuraSimulator

pytestmark = pytest.mark.django_db(transaction=True)


def clear(cipher: bytes | memoryview | None) -> str:
    """The clear text of a stored token; the test fails if there is none."""
    assert cipher is not None
    return crypto.decrypt(cipher)


def start_connect(api_client: APIClient, make_api_key, user_id: str = "user-1") -> str:
    """The API step: our start URL with a one-time ticket, for the person's browser."""
    key = make_api_key(scopes=("health:connect",))
    response = api_client.post(
        f"/v1/health/{user_id}/oura/connection", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 200, response.content
    return str(response.json()["authorizeUrl"])


def open_start(browser: Client, start_url: str) -> str:
    """The person's browser opens our start step: it gets the cookie and is sent to Oura."""
    response = browser.get(start_url)
    assert response.status_code == 302, response.content
    return str(response["Location"])


def authorize_at_oura(authorize_url: str) -> dict[str, str]:
    """What the person's browser does: Oura redirects back with code and state."""
    response = httpx.get(authorize_url, follow_redirects=False)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {k: v[0] for k, v in query.items()}


def connect(api_client, make_api_key, client: Client, user_id: str = "user-1") -> dict[str, str]:
    """The whole flow in one browser (`client` keeps the cookie from start to callback)."""
    params = authorize_at_oura(open_start(client, start_connect(api_client, make_api_key, user_id)))
    response = client.get("/v1/oauth/oura/callback", params)
    assert response.status_code == 200, response.content
    return params


def test_connect_stores_the_connection_with_encrypted_tokens(
    oura: OuraSimulator, api_client, make_api_key, client: Client
) -> None:
    sim_user = oura.add_user()
    oura.set_login(sim_user.oura_user_id)
    authorize_url = open_start(client, start_connect(api_client, make_api_key))
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["code_challenge_method"] == ["S256"]
    params = authorize_at_oura(authorize_url)
    page = client.get("/v1/oauth/oura/callback", params)

    assert page.status_code == 200
    assert b"Oura connected" in page.content
    conn = OuraConnection.objects.get(user_id="user-1")
    assert conn.provider_user_id == sim_user.oura_user_id
    assert conn.status == OuraConnection.Status.ACTIVE
    assert "daily" in conn.scopes
    access = clear(conn.access_token_enc)
    # The stored token works at Oura...
    info = httpx.get(
        f"{oura.base_url}/v2/usercollection/personal_info",
        headers={"Authorization": f"Bearer {access}"},
    )
    assert info.json()["id"] == sim_user.oura_user_id
    # ...and the database never holds it in clear: read the columns with raw SQL.
    refresh = clear(conn.refresh_token_enc)
    with db.cursor() as cursor:
        cursor.execute("SELECT * FROM health.oura_connections")
        raw = b" ".join(
            bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
            for row in cursor.fetchall()
            for v in row
        )
    assert access.encode() not in raw
    assert refresh.encode() not in raw
    assert AuditEntry.objects.filter(action="connection.created", user_id="user-1").exists()


def test_the_same_browser_links_the_account_and_the_page_names_only_its_suffix(
    oura: OuraSimulator, api_client, make_api_key, client: Client, settings
) -> None:
    sim_user = oura.add_user(oura_user_id="oura-account-7f3a9c", email="jane@example.com")
    oura.set_login(sim_user.oura_user_id)
    start_url = start_connect(api_client, make_api_key)
    assert start_url.startswith(f"{settings.PUBLIC_BASE_URL}/v1/oauth/oura/start?ticket=")
    oura_url = open_start(client, start_url)
    assert oura_url.startswith(settings.OURA_AUTHORIZE_URL)

    page = client.get("/v1/oauth/oura/callback", authorize_at_oura(oura_url))

    assert page.status_code == 200
    assert OuraConnection.objects.get(user_id="user-1").provider_user_id == "oura-account-7f3a9c"
    text = page.content.decode()
    assert "7f3a9c" in text
    assert "oura-account" not in text
    assert "example.com" not in text  # no email scope asked, so no email shown
    assert page.cookies[BROWSER_COOKIE].value == ""  # the callback clears the cookie
    assert page.cookies[BROWSER_COOKIE]["max-age"] == 0


def test_with_the_email_scope_the_page_shows_the_email_masked(
    oura: OuraSimulator, api_client, make_api_key, client: Client, settings
) -> None:
    settings.OURA_SCOPES = [*settings.OURA_SCOPES, "email"]
    oura.set_login(oura.add_user(email="jane@example.com").oura_user_id)
    params = authorize_at_oura(open_start(client, start_connect(api_client, make_api_key)))
    page = client.get("/v1/oauth/oura/callback", params)
    assert page.status_code == 200
    assert "j***@example.com" in page.content.decode()
    assert b"jane" not in page.content


def test_a_callback_opened_in_a_browser_without_the_cookie_links_nothing_and_burns_the_state(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    params = authorize_at_oura(open_start(client, start_connect(api_client, make_api_key)))

    other_browser = Client()
    refused = other_browser.get("/v1/oauth/oura/callback", params)

    assert refused.status_code == 400
    assert b"other_browser" in refused.content
    assert not OuraConnection.objects.exists()
    # Not even the browser that started it can use this state now.
    retried = client.get("/v1/oauth/oura/callback", params)
    assert retried.status_code == 400
    assert b"state_reused" in retried.content
    assert not OuraConnection.objects.exists()


def test_a_callback_opened_with_another_flows_cookie_links_nothing(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    victim = authorize_at_oura(open_start(client, start_connect(api_client, make_api_key)))
    other_browser = Client()
    open_start(other_browser, start_connect(api_client, make_api_key, user_id="user-2"))
    assert other_browser.cookies[BROWSER_COOKIE].value

    refused = other_browser.get("/v1/oauth/oura/callback", victim)

    assert refused.status_code == 400
    assert b"other_browser" in refused.content
    assert not OuraConnection.objects.exists()
    assert client.get("/v1/oauth/oura/callback", victim).status_code == 400


def test_a_ticket_opens_once(oura, api_client, make_api_key, client: Client) -> None:
    oura.add_user()
    start_url = start_connect(api_client, make_api_key)
    open_start(client, start_url)
    for browser in (client, Client()):
        again = browser.get(start_url)
        assert again.status_code == 400
        assert b"ticket_used" in again.content
        assert BROWSER_COOKIE not in again.cookies
    forged = client.get("/v1/oauth/oura/start", {"ticket": "forged"})
    assert forged.status_code == 400
    assert b"invalid_ticket" in forged.content


def test_an_expired_ticket_is_refused(oura, api_client, make_api_key, client: Client) -> None:
    oura.add_user()
    start_url = start_connect(api_client, make_api_key)
    OAuthState.objects.update(expires_at=timezone.now())
    expired = client.get(start_url)
    assert expired.status_code == 400
    assert b"ticket_expired" in expired.content
    assert BROWSER_COOKIE not in expired.cookies
    assert OAuthState.objects.get().state_hash is None  # no state was handed to Oura


@pytest.mark.parametrize("secure", [False, True])
def test_the_start_step_sets_an_httponly_lax_cookie_for_the_oauth_paths_only(
    oura, api_client, make_api_key, client: Client, settings, secure: bool
) -> None:
    settings.SESSION_COOKIE_SECURE = secure
    response = client.get(start_connect(api_client, make_api_key))
    assert response.status_code == 302
    cookie = response.cookies[BROWSER_COOKIE]
    assert cookie.value
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/v1/oauth/oura/"
    assert bool(cookie["secure"]) is secure
    assert cookie["max-age"] == settings.OURA_OAUTH_STATE_TTL_S
    # Only its hash is stored.
    assert OAuthState.objects.get().browser_nonce_hash not in ("", cookie.value)


def test_denied_consent_stores_nothing(oura, api_client, make_api_key, client: Client) -> None:
    oura.add_user()
    oura.deny_next_authorization()
    params = authorize_at_oura(open_start(client, start_connect(api_client, make_api_key)))
    assert params["error"] == "access_denied"
    page = client.get("/v1/oauth/oura/callback", params)
    assert page.status_code == 400
    assert b"access_denied" in page.content
    assert not OuraConnection.objects.exists()


def test_bad_reused_and_expired_state_are_refused(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    bad = client.get("/v1/oauth/oura/callback", {"state": "forged", "code": "x"})
    assert bad.status_code == 400
    assert b"invalid_state" in bad.content

    params = authorize_at_oura(open_start(client, start_connect(api_client, make_api_key)))
    assert client.get("/v1/oauth/oura/callback", params).status_code == 200
    reused = client.get("/v1/oauth/oura/callback", params)
    assert reused.status_code == 400
    assert b"state_reused" in reused.content

    params = authorize_at_oura(
        open_start(client, start_connect(api_client, make_api_key, user_id="user-2"))
    )
    OAuthState.objects.filter(used_at__isnull=True).update(expires_at=timezone.now())
    expired = client.get("/v1/oauth/oura/callback", params)
    assert expired.status_code == 400
    assert b"state_expired" in expired.content
    assert not OuraConnection.objects.filter(user_id="user-2").exists()


def test_a_failed_code_exchange_stores_nothing(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    params = authorize_at_oura(open_start(client, start_connect(api_client, make_api_key)))
    params["code"] = "not-a-code-oura-issued"
    page = client.get("/v1/oauth/oura/callback", params)
    assert page.status_code == 400
    assert b"exchange_failed" in page.content
    assert not OuraConnection.objects.exists()


def token_requests(oura: OuraSimulator) -> int:
    return sum(1 for r in oura.requests if r.path.endswith("/oauth/token"))


def test_an_expiring_token_is_refreshed_and_rotated(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    connect(api_client, make_api_key, client)
    conn = OuraConnection.objects.get()
    old_refresh = clear(conn.refresh_token_enc)
    OuraConnection.objects.update(access_token_expires_at=timezone.now())
    conn.refresh_from_db()

    response = OuraClient().get(conn, "/v2/usercollection/daily_readiness")

    assert response.status_code == 200
    conn.refresh_from_db()
    assert conn.token_version == 1
    assert conn.last_refresh_at is not None
    assert clear(conn.refresh_token_enc) != old_refresh
    # Oura's refresh tokens are single use: the old one is dead now.
    reuse = httpx.post(
        f"{oura.base_url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": old_refresh,
              "client_id": "sim-client-id", "client_secret": "sim-client-secret"},
    )  # fmt: skip
    assert reuse.status_code == 400


def test_two_processes_refreshing_at_once_refresh_once_and_keep_the_connection(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    connect(api_client, make_api_key, client)
    before = token_requests(oura)
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def refresh() -> None:
        try:
            conn = OuraConnection.objects.get()
            barrier.wait()
            results.append(OuraClient().refresh(conn, seen_version=conn.token_version))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(set(results)) == 1  # both ended with the same, current token
    assert token_requests(oura) - before == 1
    conn = OuraConnection.objects.get()
    assert conn.status == OuraConnection.Status.ACTIVE
    assert conn.token_version == 1


def test_a_401_triggers_one_refresh_then_succeeds(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    connect(api_client, make_api_key, client)
    conn = OuraConnection.objects.get()
    oura.expire_access_token(clear(conn.access_token_enc))
    response = OuraClient().get(conn, "/v2/usercollection/daily_sleep")
    assert response.status_code == 200
    conn.refresh_from_db()
    assert conn.token_version == 1


def test_a_used_refresh_token_marks_needs_reauth_without_a_crash_loop(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    connect(api_client, make_api_key, client)
    conn = OuraConnection.objects.get()
    # Someone else (a leaked copy, an old deployment) used our refresh token first.
    stolen = clear(conn.refresh_token_enc)
    httpx.post(
        f"{oura.base_url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": stolen,
              "client_id": "sim-client-id", "client_secret": "sim-client-secret"},
    )  # fmt: skip
    OuraConnection.objects.update(access_token_expires_at=timezone.now())
    conn.refresh_from_db()

    with pytest.raises(NeedsReauth):
        OuraClient().get(conn, "/v2/usercollection/daily_sleep")
    conn.refresh_from_db()
    assert conn.status == OuraConnection.Status.NEEDS_REAUTH
    assert AuditEntry.objects.filter(action="connection.needs_reauth").count() == 1

    calls = len(oura.requests)
    with pytest.raises(NeedsReauth):
        OuraClient().get(conn, "/v2/usercollection/daily_sleep")
    assert len(oura.requests) == calls  # no further calls to Oura for this user


def test_429_and_5xx_are_retried(oura, api_client, make_api_key, client: Client) -> None:
    oura.add_user()
    connect(api_client, make_api_key, client)
    conn = OuraConnection.objects.get()
    oura.config.force_next_statuses = [429, 500, 503]
    response = OuraClient().get(conn, "/v2/usercollection/daily_activity")
    assert response.status_code == 200


def test_a_429_with_a_long_retry_after_is_raised_not_slept(
    oura, api_client, make_api_key, client: Client
) -> None:
    oura.add_user()
    connect(api_client, make_api_key, client)
    conn = OuraConnection.objects.get()
    oura.config.rate_limit_per_token = 1  # already spent on personal_info while connecting
    with pytest.raises(OuraRateLimited) as raised:
        OuraClient().get(conn, "/v2/usercollection/daily_activity")
    assert raised.value.retry_after_s > 1
    # Every process now waits for Oura's Retry-After without calling it again.
    calls = len(oura.requests)
    with pytest.raises(BudgetExhausted) as paused:
        OuraClient().get(conn, "/v2/usercollection/daily_activity")
    assert paused.value.retry_after_s > 1
    assert len(oura.requests) == calls


def test_disconnect_revokes_at_oura_and_deletes_tokens(
    oura, api_client: APIClient, make_api_key, client: Client
) -> None:
    oura.add_user()
    connect(api_client, make_api_key, client)
    access = clear(OuraConnection.objects.get().access_token_enc)
    key = make_api_key(scopes=("health:connect",))
    response = api_client.delete(
        "/v1/health/user-1/oura/connection", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 204
    conn = OuraConnection.objects.get()
    assert conn.status == OuraConnection.Status.REVOKED
    assert conn.access_token_enc is None
    assert conn.refresh_token_enc is None
    assert conn.revoked_at is not None
    assert access in oura.revoked_tokens
    again = api_client.delete(
        "/v1/health/user-1/oura/connection", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert again.status_code == 204
    missing = api_client.delete(
        "/v1/health/nobody/oura/connection", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert missing.status_code == 404


def test_subscriptions_are_created_with_the_challenge_then_renewed(
    oura, oura_webhook_receiver, settings
) -> None:
    oura_webhook_receiver.verification_token = settings.OURA_WEBHOOK_VERIFICATION_TOKEN
    callback = oura_webhook_receiver.url

    first = subscriptions_sync(callback_url=callback)
    assert len(first.created) == len(DATA_TYPES) * len(EVENT_TYPES)
    assert first.failed == []
    assert len(oura_webhook_receiver.challenges) == len(first.created)
    assert WebhookSubscription.objects.count() == len(first.created)

    second = subscriptions_sync(callback_url=callback)
    assert second.created == []
    assert len(second.unchanged) == len(first.created)

    # Move one subscription close to expiry at Oura; renew picks exactly that one.
    target = oura.subscriptions[0]
    oura.store.subscriptions[target["id"]].expiration_time = timezone.now() + timedelta(days=2)
    renewed = subscriptions_renew()
    assert renewed.renewed == [f"{target['event_type']}:{target['data_type']}"]
    mirror = WebhookSubscription.objects.get(subscription_id=target["id"])
    assert mirror.expiration_time > timezone.now() + timedelta(days=80)


def test_a_failed_challenge_creates_no_subscription(oura, oura_webhook_receiver, settings) -> None:
    oura_webhook_receiver.verification_token = "something-else"
    report = subscriptions_sync(callback_url=oura_webhook_receiver.url)
    assert report.created == []
    assert len(report.failed) == len(DATA_TYPES) * len(EVENT_TYPES)
    assert not WebhookSubscription.objects.exists()


def test_no_token_or_code_reaches_the_logs(
    oura, api_client, make_api_key, client: Client, caplog, capfd
) -> None:
    caplog.set_level(logging.DEBUG)
    oura.add_user()
    start_url = start_connect(api_client, make_api_key)
    params = authorize_at_oura(open_start(client, start_url))
    nonce = client.cookies[BROWSER_COOKIE].value
    assert client.get("/v1/oauth/oura/callback", params).status_code == 200
    conn = OuraConnection.objects.get()
    secrets_seen = [parse_qs(urlsplit(start_url).query)["ticket"][0], nonce, params["code"],
                    params["state"], clear(conn.access_token_enc),
                    clear(conn.refresh_token_enc)]  # fmt: skip
    OuraConnection.objects.update(access_token_expires_at=timezone.now())
    conn.refresh_from_db()
    OuraClient().get(conn, "/v2/usercollection/daily_readiness")
    conn.refresh_from_db()
    secrets_seen += [clear(conn.access_token_enc), clear(conn.refresh_token_enc)]
    key = make_api_key(scopes=("health:connect",))
    api_client.delete("/v1/health/user-1/oura/connection", HTTP_AUTHORIZATION=f"Bearer {key}")

    logged = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    out, err = capfd.readouterr()
    for secret in secrets_seen:
        assert secret not in logged
        assert secret not in out + err


def test_sync_replaces_local_rows_that_a_forgetful_oura_no_longer_has(
    oura, oura_webhook_receiver, settings
) -> None:
    """A fresh simulator (or an Oura that lost them) lists nothing, yet our mirror still
    holds every kind: sync creates them again and the stale rows give way."""
    oura_webhook_receiver.verification_token = settings.OURA_WEBHOOK_VERIFICATION_TOKEN
    callback = oura_webhook_receiver.url
    first = subscriptions_sync(callback_url=callback)
    stale_ids = set(WebhookSubscription.objects.values_list("subscription_id", flat=True))
    with oura.store.lock:
        oura.store.subscriptions.clear()

    again = subscriptions_sync(callback_url=callback)

    assert again.failed == []
    assert len(again.created) == len(first.created)
    live = {s["id"] for s in oura.subscriptions}
    mirrored = set(WebhookSubscription.objects.values_list("subscription_id", flat=True))
    assert mirrored == live
    assert not mirrored & stale_ids


def test_sync_adopts_oura_subscriptions_and_cancels_extra_copies_of_a_kind(
    oura, oura_webhook_receiver, settings
) -> None:
    oura_webhook_receiver.verification_token = settings.OURA_WEBHOOK_VERIFICATION_TOKEN
    callback = oura_webhook_receiver.url
    subscriptions_sync(callback_url=callback)
    WebhookSubscription.objects.all().delete()  # our side forgot; Oura still has them
    # A second copy of one kind at Oura, e.g. from a crash between Oura's 201 and our insert.
    kind = oura.subscriptions[0]
    response = get_client().subscriptions_request(
        "POST",
        json_body={
            "callback_url": callback,
            "verification_token": settings.OURA_WEBHOOK_VERIFICATION_TOKEN,
            "event_type": kind["event_type"],
            "data_type": kind["data_type"],
        },
    )
    assert response.status_code == 201

    report = subscriptions_sync(callback_url=callback)

    assert report.created == []
    assert report.removed == [f"{kind['event_type']}:{kind['data_type']}"]
    assert len(oura.subscriptions) == len(DATA_TYPES) * len(EVENT_TYPES)
    mirrored = set(WebhookSubscription.objects.values_list("subscription_id", flat=True))
    assert mirrored == {s["id"] for s in oura.subscriptions}
