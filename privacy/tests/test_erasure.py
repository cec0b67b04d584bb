"""Erasure of one person everywhere, on real Postgres, S3 and JetStream, with Oura faked by
the simulator: everything they left (connection, backfill pages, webhooks, orphans, objects
nobody indexed, dead letters, job status, API key grants, every stream) is gone, nothing of
anybody else is, and later deliveries for their Oura account are refused."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from access.models import ApiKey
from access.services import api_key_create
from core import bus, raw_store
from core.identifiers import InvalidUserId
from core.models import DeadLetter
from core.provisioning import STREAMS
from ingestion.models import OuraConnection, RawEvent
from ingestion.relay import relay_drain
from ingestion.tests.webhook_helpers import URL, notification, signed
from jobs.backfill import backfill_run
from jobs.services import job_start
from jobs.tests.conftest import (  # noqa: F401 - fixtures used by name
    HISTORY_END,
    _jobs_broker,
    broker,
    connect_user,
    oura_sim_config,
)
from normalized.models import DailyReadiness
from normalized.tests.normalizer_helpers import delete_durable, make_spec, run
from privacy import registry
from privacy.models import ErasureRequest, ErasureTombstone
from privacy.registry import Person
from privacy.services import erasure_request, erasure_run, user_erase

pytestmark = pytest.mark.django_db(transaction=True)

ID_CHARS = "A-Za-z0-9_-"


def _anywhere(*identifiers: str) -> re.Pattern[str]:
    """An id as a whole token in any text (row text has commas and parentheses around it)."""
    ids = "|".join(re.escape(i) for i in identifiers)
    return re.compile(f"(?<![{ID_CHARS}])(?:{ids})(?![{ID_CHARS}])")


def every_table_row_naming(pattern: re.Pattern[str]) -> dict[str, int]:
    """Every row of every table in our schemas, as Postgres prints it, searched for the ids."""
    found: dict[str, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('health', 'dramatiq', 'public') AND table_type = 'BASE TABLE'"
        )
        for schema, table in cursor.fetchall():
            cursor.execute(f'SELECT t::text FROM "{schema}"."{table}" AS t')  # noqa: S608 - catalog names
            hits = sum(1 for (text,) in cursor.fetchall() if pattern.search(text))
            if hits:
                found[f"{schema}.{table}"] = hits
    return found


def every_object_naming(pattern: re.Pattern[str]) -> list[str]:
    return [
        key
        for key in raw_store.list_keys("")
        if pattern.search(key) or pattern.search(raw_store.get(key).decode(errors="replace"))
    ]


def every_message_naming(pattern: re.Pattern[str]) -> dict[str, int]:
    async def scan() -> dict[str, int]:
        nc = await bus.connect(name="tests")
        found: dict[str, int] = {}
        try:
            js = nc.jetstream()
            for spec in STREAMS:
                sub = await js.subscribe(spec.subjects[0], ordered_consumer=True)
                while True:
                    try:
                        msg = await sub.next_msg(timeout=0.5)
                    except Exception:
                        break
                    text = (
                        msg.subject
                        + json.dumps(msg.headers or {})
                        + msg.data.decode(errors="replace")
                    )
                    if pattern.search(text):
                        found[spec.name] = found.get(spec.name, 0) + 1
                await sub.unsubscribe()
        finally:
            await nc.close()
        return found

    return asyncio.run(scan())


def post_webhook(client: Client, oura_user_id: str, data_type: str = "daily_readiness") -> Any:
    body, headers = signed(notification(user_id=oura_user_id, data_type=data_type))
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def backfill(user_id: str, days: int) -> str:
    job = job_start(
        user_id=user_id, start=HISTORY_END - timedelta(days=days), end=HISTORY_END,
        data_types=["daily_readiness", "daily_sleep", "workout"], requested_by="test",
    )  # fmt: skip
    return str(job.job.job_id)


def backfill_in_thread(job_id: str) -> None:
    try:
        backfill_run(job_id=job_id)
    finally:
        connections.close_all()  # this thread's connection, or the test database stays busy


def seed(oura: Any, client: Client, user_id: str) -> tuple[OuraConnection, str]:
    """What a month of use leaves of one person."""
    conn, oura_id = connect_user(oura, user_id=user_id)
    backfill_run(job_id=backfill(user_id, 5))
    assert post_webhook(client, oura_id).status_code == 202
    # An orphan: a delivery for their Oura account kept before any connection named it,
    # archived under user=unknown with only the Oura id inside.
    orphan_id = uuid.uuid4()
    orphan_key = raw_store.object_key(
        provider="oura", day=timezone.now().date(), user_id="unknown", event_id=str(orphan_id)
    )
    stored = raw_store.put(orphan_key, json.dumps({"user_id": oura_id}).encode())
    RawEvent.objects.create(
        event_id=orphan_id, kind="webhook", status=RawEvent.Status.ORPHAN,
        dedupe_key=uuid.uuid4().hex, user_id="", provider_user_id=oura_id,
        object_key=stored.key, sha256=stored.sha256, archived_at=timezone.now(),
        received_at=timezone.now(),
    )  # fmt: skip
    # An object no index row lists (a PUT whose row never committed).
    raw_store.put(
        raw_store.object_key(
            provider="oura", day=HISTORY_END, user_id=user_id, event_id=str(uuid.uuid4())
        ),
        b"{}",
    )
    envelope = json.dumps({"user_id": user_id, "notification": {"user_id": oura_id}}).encode()
    DeadLetter.objects.create(
        consumer="normalizer", stream="HEALTH_RAW", subject="health.raw.oura.webhook",
        stream_seq=uuid.uuid4().int % 10**9, data=envelope, reason="test", error_type="Poison",
        attempts=5,
    )  # fmt: skip
    bus.get_bus().publish("health.dlq.normalizer", envelope, msg_id=uuid.uuid4().hex)
    return conn, oura_id


def test_erasure_removes_one_person_from_every_store_while_a_backfill_runs(
    oura: Any, clean_streams: None
) -> None:
    client = Client()
    spec = make_spec()
    try:
        _, alice_oura = seed(oura, client, "alice")
        _, bob_oura = seed(oura, client, "bob")
        relay_drain(batch_size=100, grace_s=0)
        run(spec)  # pages and webhooks -> rows, and health.normalized.user.* announcements
        only_alice = api_key_create(name="a", scopes=["health:read"], user_ids=["alice"])
        both = api_key_create(name="ab", scopes=["health:read"], user_ids=["alice", "bob"])
        alice, bob = _anywhere("alice", alice_oura), _anywhere("bob", bob_oura)
        assert every_table_row_naming(alice)
        assert every_object_naming(alice)
        assert every_message_naming(alice).get("HEALTH_RAW")
        assert every_message_naming(alice).get("HEALTH_SYNC")
        assert DailyReadiness.objects.filter(user_id="alice").exists()
        bob_tables, bob_objects = every_table_row_naming(bob), every_object_naming(bob)
        bob_messages = every_message_naming(bob)

        # Erase while a long backfill of hers is writing pages.
        job_id = backfill("alice", 300)
        running = threading.Thread(target=backfill_in_thread, args=(job_id,))
        running.start()
        request = user_erase(user_id="alice", actor="staff:privacy-officer")
        running.join(60)
        assert not running.is_alive()
        relay_drain(batch_size=100, grace_s=0)
        run(spec)  # anything of hers still in flight is refused, not stored

        # Later deliveries for her Oura account are refused and stored nowhere.
        late = post_webhook(client, alice_oura)
        assert late.status_code == 200
        assert late.json() == {"status": "erased"}

        assert request.status == ErasureRequest.Status.DONE
        assert request.user_id == ""
        assert request.oura_ids == []
        assert request.receipt["verification"]["found"] == 0
        assert every_table_row_naming(alice) == {}
        assert every_object_naming(alice) == []
        assert every_message_naming(alice) == {}
        # Nobody else's data is gone.
        assert every_table_row_naming(bob) == bob_tables
        assert every_object_naming(bob) == bob_objects
        assert every_message_naming(bob) == bob_messages
        assert DailyReadiness.objects.filter(user_id="bob").exists()
        only_alice_key = ApiKey.objects.get(pk=only_alice.api_key.pk)
        assert only_alice_key.revoked_at is not None
        assert only_alice_key.allowed_user_ids == []
        assert ApiKey.objects.get(pk=both.api_key.pk).allowed_user_ids == ["bob"]
    finally:
        delete_durable(spec)


def test_erasure_is_idempotent_and_resumes_after_a_crash(oura: Any, clean_streams: None) -> None:
    client = Client()
    _, oura_id = seed(oura, client, "carol")
    request = erasure_request(user_id="carol", actor="test")
    # The tombstones are written before anything is deleted.
    assert ErasureTombstone.objects.count() == 2
    # A crash mid-run leaves it running; running it again finishes the job.
    ErasureRequest.objects.filter(pk=request.pk).update(status=ErasureRequest.Status.RUNNING)
    done = erasure_run(request=request)
    assert done.status == ErasureRequest.Status.DONE
    again = user_erase(user_id="carol", actor="test")  # a second request finds nothing
    assert again.status == ErasureRequest.Status.DONE
    assert again.receipt["verification"]["found"] == 0
    assert sum(again.receipt["erased"]["rows"].values()) == 0
    assert every_object_naming(_anywhere("carol", oura_id)) == []
    # Her backfill pages, her webhook's archive, the orphan and the unindexed object.
    assert done.receipt["erased"]["s3_objects"] >= 4


def test_a_new_consent_lifts_the_tombstone(oura: Any) -> None:
    from privacy.selectors import oura_account_erased, user_erased
    from privacy.services import tombstones_lift

    _, oura_id = connect_user(oura, user_id="dave")
    user_erase(user_id="dave", actor="test")
    assert oura_account_erased(oura_id)
    assert user_erased("dave")
    tombstones_lift(user_id="dave", provider_user_id=oura_id)
    assert not oura_account_erased(oura_id)
    assert not user_erased("dave")


@pytest.mark.parametrize("user_id", ["", "a" * 65, "*", "a.b", "a>", "ä", "a\n"])
def test_erasure_refuses_ids_outside_the_pattern(user_id: str) -> None:
    with pytest.raises(InvalidUserId):
        erasure_request(user_id=user_id, actor="test")
    assert not ErasureRequest.objects.exists()


# Fields that name a person, by name; a model holding one must be covered by the registry.
PERSON_FIELDS = {"user_id", "provider_user_id", "allowed_user_ids", "oura_ids"}
# Covered otherwise, and why.
NOT_IN_REGISTRY = {
    # The request itself holds the ids only while it is pending; they are blanked when done.
    ("privacy.ErasureRequest", "user_id"),
    ("privacy.ErasureRequest", "oura_ids"),
}


def test_every_model_that_names_a_person_is_in_the_erasure_registry() -> None:
    covered = {(store.model, field) for store in registry.stores() for field in store.fields}
    for model in apps.get_models():
        for model_field in model._meta.concrete_fields:
            if model_field.name in PERSON_FIELDS:
                key = (model._meta.label, model_field.name)
                assert key in covered or key in NOT_IN_REGISTRY, f"{key} is not erased"
    # Dead letters hold copies of bus messages, whatever their field is called.
    assert ("core.DeadLetter", "data") in covered


def test_the_mention_pattern_matches_whole_ids_only() -> None:
    pattern = registry.mention_pattern(Person("al", ("oura-1",)))
    assert pattern.search(b'{"user_id":"al"}')
    assert pattern.search(b"provider=oura/date=2026-01-01/user=al/event=x.json")
    assert pattern.search(b"health.normalized.user.al.metrics")
    assert pattern.search(b'{"body":"{\\"user_id\\":\\"oura-1\\"}"}')
    assert not pattern.search(b'{"user_id":"alice"}')
    assert not pattern.search(b'{"user_id":"oura-10"}')


def test_erase_user_command_erases_refuses_bad_ids_and_resumes(oura: Any) -> None:
    from django.core.management import CommandError, call_command

    connect_user(oura, user_id="frank")
    out = io.StringIO()
    call_command("erase_user", "frank", stdout=out)
    assert "scan found 0" in out.getvalue()
    assert not OuraConnection.objects.filter(user_id="frank").exists()
    with pytest.raises(CommandError, match="user id must match"):
        call_command("erase_user", "frank.smith")
    with pytest.raises(CommandError, match="not both"):
        call_command("erase_user", "frank", "--resume")
    # A failed run is finished by --resume.
    connect_user(oura, user_id="gina")
    failed = erasure_request(user_id="gina", actor="test")
    ErasureRequest.objects.filter(pk=failed.pk).update(status=ErasureRequest.Status.FAILED)
    call_command("erase_user", "--resume", stdout=io.StringIO())
    failed.refresh_from_db()
    assert failed.status == ErasureRequest.Status.DONE
    assert not OuraConnection.objects.filter(user_id="gina").exists()
