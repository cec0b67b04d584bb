"""Subscription API and signed deliveries against a real HTTP receiver (CONTRACT 5)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from oura_simulator import OuraSimulator
from oura_simulator.testing import WebhookReceiver


def creds(sim: OuraSimulator) -> dict[str, str]:
    return {"x-client-id": sim.config.client_id, "x-client-secret": sim.config.client_secret}


def subscribe(
    sim: OuraSimulator,
    receiver: WebhookReceiver,
    event: str = "create",
    data_type: str = "daily_sleep",
) -> httpx.Response:
    return httpx.post(
        sim.base_url + "/v2/webhook/subscription",
        headers=creds(sim),
        json={
            "callback_url": receiver.url,
            "verification_token": receiver.verification_token,
            "event_type": event,
            "data_type": data_type,
        },
    )


def verify_independently(secret: str, headers: dict[str, str], raw: bytes) -> bool:
    mac = hmac.new(secret.encode(), headers["x-oura-timestamp"].encode() + raw, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest().upper(), headers["x-oura-signature"])


def test_full_flow_oauth_subscription_and_signed_delivery(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    user = oura_sim.add_user(history_days=30)
    redirect = "https://app.example/oura/callback"
    auth = httpx.get(
        oura_sim.base_url + "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": oura_sim.config.client_id,
            "redirect_uri": redirect,
            "state": "xyz",
            "scope": "email personal daily",
        },
    )
    query = parse_qs(urlsplit(auth.headers["location"]).query)
    tokens = httpx.post(
        oura_sim.base_url + "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": redirect,
            "client_id": oura_sim.config.client_id,
            "client_secret": oura_sim.config.client_secret,
        },
    ).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = httpx.get(oura_sim.base_url + "/v2/usercollection/personal_info", headers=bearer).json()
    assert me["id"] == user.oura_user_id

    created = subscribe(oura_sim, oura_webhook_receiver, "update", "daily_sleep")
    assert created.status_code == 201, created.text
    assert oura_webhook_receiver.challenges[0]["verification_token"] == "verify-me"

    existing = oura_sim.documents(user.oura_user_id, "daily_sleep")[-1]
    changed = oura_sim.put_document(user.oura_user_id, "daily_sleep", {**existing, "score": 12})
    got = oura_webhook_receiver.wait_for(1)[0]
    body = got.json()
    assert body["event_type"] == "update"
    assert body["data_type"] == "daily_sleep"
    assert body["object_id"] == changed["id"]
    assert body["user_id"] == me["id"]
    assert got.body == json.dumps(body, separators=(",", ":")).encode()
    assert verify_independently(oura_sim.config.client_secret, got.headers, got.body)
    assert abs(int(got.headers["x-oura-timestamp"]) - time.time()) < 5
    fetched = httpx.get(
        f"{oura_sim.base_url}/v2/usercollection/daily_sleep/{body['object_id']}", headers=bearer
    ).json()
    assert fetched["score"] == 12
    [delivery] = oura_sim.wait_for_deliveries()
    assert delivery.succeeded
    assert delivery.attempts == 1
    assert delivery.status == 200


def test_subscription_crud(oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver) -> None:
    base = oura_sim.base_url + "/v2/webhook/subscription"
    assert httpx.get(base).status_code == 401
    assert httpx.get(base, headers={**creds(oura_sim), "x-client-secret": "no"}).status_code == 401
    assert httpx.get(base, headers=creds(oura_sim)).json() == []
    sub = subscribe(oura_sim, oura_webhook_receiver).json()
    assert sub["expiration_time"] > "2026"
    assert httpx.get(base, headers=creds(oura_sim)).json() == [sub]
    one = httpx.get(f"{base}/{sub['id']}", headers=creds(oura_sim))
    assert one.json() == sub
    upd = httpx.put(
        f"{base}/{sub['id']}",
        headers=creds(oura_sim),
        json={"verification_token": "verify-me", "data_type": "sleep"},
    )
    assert upd.json()["data_type"] == "sleep"
    missing_token = httpx.put(f"{base}/{sub['id']}", headers=creds(oura_sim), json={})
    assert missing_token.status_code == 422
    assert missing_token.json()["detail"][0]["loc"] == ["body", "verification_token"]
    renewed = httpx.put(f"{base}/renew/{sub['id']}", headers=creds(oura_sim))
    assert renewed.status_code == 200
    assert renewed.json()["expiration_time"] >= sub["expiration_time"]
    assert httpx.delete(f"{base}/{sub['id']}", headers=creds(oura_sim)).status_code == 204
    assert httpx.get(f"{base}/{sub['id']}", headers=creds(oura_sim)).status_code == 403
    oura_sim.config.unknown_subscription_status = 404
    assert httpx.put(f"{base}/renew/{sub['id']}", headers=creds(oura_sim)).status_code == 404


def test_invalid_enum_and_failed_challenge(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    bad = subscribe(oura_sim, oura_webhook_receiver, data_type="heartrate")
    assert bad.status_code == 422
    item = bad.json()["detail"][0]
    assert item["type"] == "enum"
    assert item["loc"] == ["body", "data_type"]
    assert "'vo2_max'" in item["msg"]
    assert item["input"] == "heartrate"
    oura_webhook_receiver.challenge_ok = False
    refused = subscribe(oura_sim, oura_webhook_receiver)
    assert refused.status_code == 400
    assert oura_sim.subscriptions == []


def test_vo2_max_mapping_and_delete_events(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    user = oura_sim.add_user(history_days=0)
    subscribe(oura_sim, oura_webhook_receiver, "create", "vo2_max")
    subscribe(oura_sim, oura_webhook_receiver, "delete", "vo2_max")
    doc = oura_sim.put_document(user.oura_user_id, "vO2_max")
    oura_sim.delete_document(user.oura_user_id, "vo2_max", doc["id"])
    deliveries = oura_sim.wait_for_deliveries()
    assert [d.body["event_type"] for d in deliveries] == ["create", "delete"]
    assert {d.body["data_type"] for d in deliveries} == {"vo2_max"}
    assert oura_sim.documents(user.oura_user_id, "vO2_max") == []


def _one_delivery(sim: OuraSimulator, receiver: WebhookReceiver) -> Any:
    user = sim.add_user(history_days=0)
    subscribe(sim, receiver)
    sim.put_document(user.oura_user_id, "daily_sleep")
    return sim.wait_for_deliveries()


def test_wrong_key(oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver) -> None:
    oura_sim.config.sign_with_wrong_key = True
    _one_delivery(oura_sim, oura_webhook_receiver)
    got = oura_webhook_receiver.received[0]
    assert not got.signature_valid(oura_sim.config.client_secret)


def test_stale_timestamp(oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver) -> None:
    oura_sim.config.stale_timestamp_s = 3600
    _one_delivery(oura_sim, oura_webhook_receiver)
    got = oura_webhook_receiver.received[0]
    assert got.signature_valid(oura_sim.config.client_secret)  # signed, just old
    assert time.time() - int(got.headers["x-oura-timestamp"]) >= 3599


def test_pretty_printed_body(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    oura_sim.config.pretty_print_body = True
    _one_delivery(oura_sim, oura_webhook_receiver)
    got = oura_webhook_receiver.received[0]
    assert b"\n" in got.body
    assert not got.signature_valid(oura_sim.config.client_secret)  # raw-body verifier fails
    compact = json.dumps(got.json(), separators=(",", ":")).encode()
    assert verify_independently(oura_sim.config.client_secret, got.headers, compact)


def test_duplicate_delivery(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    oura_sim.config.duplicate_delivery = True
    _one_delivery(oura_sim, oura_webhook_receiver)
    first, second = oura_webhook_receiver.received
    assert first.json() == second.json()


def test_out_of_order(oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver) -> None:
    oura_sim.config.out_of_order = True
    user = oura_sim.add_user(history_days=0)
    subscribe(oura_sim, oura_webhook_receiver, "create")
    subscribe(oura_sim, oura_webhook_receiver, "update")
    doc = oura_sim.put_document(user.oura_user_id, "daily_sleep")
    oura_sim.put_document(user.oura_user_id, "daily_sleep", {**doc, "score": 50})
    oura_sim.wait_for_deliveries()
    events = [r.json()["event_type"] for r in oura_webhook_receiver.received]
    assert events == ["update", "create"]


def test_retries_then_success(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    oura_webhook_receiver.statuses = [500, 503, 404]
    [delivery] = _one_delivery(oura_sim, oura_webhook_receiver)
    assert delivery.succeeded
    assert delivery.attempts == 4
    assert [s for _, s, _ in delivery.attempt_log] == [500, 503, 404, 200]


def test_retry_cap_per_class(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    oura_sim.config.retry_delays_s = [0.0]
    oura_webhook_receiver.statuses = [500] * 30
    [delivery] = _one_delivery(oura_sim, oura_webhook_receiver)
    assert not delivery.succeeded
    assert delivery.attempts == 11


def test_timeout_counts_as_failure(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    oura_sim.config.delivery_timeout_s = 0.2
    oura_sim.config.max_retries_per_class = 1
    oura_webhook_receiver.hang_s = 0.5
    [delivery] = _one_delivery(oura_sim, oura_webhook_receiver)
    assert delivery.attempts == 2
    assert delivery.attempt_log[0][2] == "ReadTimeout"


def test_410_deletes_subscription(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    oura_webhook_receiver.statuses = [410]
    [delivery] = _one_delivery(oura_sim, oura_webhook_receiver)
    assert delivery.attempts == 1
    assert delivery.status == 410
    assert oura_sim.subscriptions == []


def test_expired_subscription_gets_nothing(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver
) -> None:
    user = oura_sim.add_user(history_days=0)
    sub = subscribe(oura_sim, oura_webhook_receiver).json()
    oura_sim.expire_subscription(sub["id"])
    oura_sim.put_document(user.oura_user_id, "daily_sleep")
    assert oura_sim.wait_for_deliveries() == []


@pytest.mark.parametrize("delay", [0.3])
def test_webhook_delay(
    oura_sim: OuraSimulator, oura_webhook_receiver: WebhookReceiver, delay: float
) -> None:
    oura_sim.config.webhook_delay_s = delay
    started = time.time()
    _one_delivery(oura_sim, oura_webhook_receiver)
    assert time.time() - started >= delay
