"""Dead letters: one row per message, replay from the command and from the admin."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AuditEntry
from core.consumers import MessageMeta
from core.models import DeadLetter
from core.services import dead_letter_record
from core.tests.staff import verified_login
from normalized.tests.normalizer_helpers import stream_messages

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]

SUBJECT = "health.raw.oura.webhook"


def record(seq: int = 11, attempts: int = 1) -> DeadLetter:
    return dead_letter_record(
        meta=MessageMeta("normalizer", SUBJECT, "HEALTH_RAW", seq, attempts, "orig-id"),
        data=json.dumps({"event_id": f"e-{seq}"}).encode(),
        reason="workout document violates the Oura contract: intensity: literal_error",
        error_type="ContractViolation",
    )


def test_the_same_message_dead_lettered_twice_is_one_row_with_the_latest_attempts() -> None:
    first = record(attempts=3)
    again = record(attempts=4)
    assert first.pk == again.pk
    assert DeadLetter.objects.get().attempts == 4


def test_replay_republishes_the_bytes_with_a_fresh_msg_id_and_marks_the_row() -> None:
    dead = record()
    call_command("replay_dead_letters", "--id", str(dead.pk))
    assert [json.loads(m) for m in stream_messages(SUBJECT)] == [{"event_id": "e-11"}]
    dead.refresh_from_db()
    assert dead.resolved
    assert dead.replayed_at is not None
    entry = AuditEntry.objects.get(action="dead_letter.replayed")
    assert entry.details["dead_letter_id"] == dead.pk
    # --all replays only what is still unresolved.
    record(seq=12)
    call_command("replay_dead_letters", "--all")
    assert len(stream_messages(SUBJECT)) == 2


def test_replay_of_an_unknown_id_fails_loudly() -> None:
    with pytest.raises(CommandError, match="no dead letter with id 999"):
        call_command("replay_dead_letters", "--id", "999")


def test_the_admin_lists_dead_letters_and_replays_them() -> None:
    dead = record()
    admin = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw")
    client = Client()
    verified_login(client, admin)  # the admin asks for 2FA
    page = client.get("/admin/core/deadletter/")
    assert page.status_code == 200
    assert b"ContractViolation" in page.content
    response = client.post(
        "/admin/core/deadletter/",
        {"action": "replay", "_selected_action": [str(dead.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"1 dead letter(s) replayed" in response.content
    dead.refresh_from_db()
    assert dead.resolved
    assert AuditEntry.objects.get(action="dead_letter.replayed").actor == "staff:staff"
