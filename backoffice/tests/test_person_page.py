"""The person page and its search (backoffice/person_admin.py), per staff role.

Staff log in through core.tests.staff.verified_login (a session past the two-factor login);
services are real (Postgres, NATS, S3).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_record
from core import raw_store
from core.models import DeadLetter
from core.pseudonyms import person_hash
from core.tests.staff import verified_login
from ingestion.models import OuraConnection, RawEvent
from jobs.models import IngestionJob
from jobs.tests.conftest import broker  # noqa: F401 - fixture, used by name
from normalized.models import DailyActivity, DailyReadiness, DailySleep

# Jobs started here are enqueued on commit: to the broker of the test database (jobs tests'
# fixture), not the app's, which points at the database pytest-django renamed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("broker")]

PAYLOAD_MARK = b"PAYLOAD-BYTES-7f3a"  # in every envelope, raw object and dead letter


@pytest.fixture(autouse=True)
def _groups() -> None:
    call_command("setup_staff_groups", verbosity=0)


def staff(group: str | None = None, *, superuser: bool = False) -> tuple[Client, str]:
    name = f"{(group or 'root').replace(' ', '_')}_{uuid.uuid4().hex[:6]}"
    user = User.objects.create_user(name, password="x", is_staff=True, is_superuser=superuser)
    if group:
        user.groups.add(Group.objects.get(name=group))
    client = Client()
    verified_login(client, user)
    return client, f"staff:{name}"


def new_user_id() -> str:
    return f"p{uuid.uuid4().hex[:8]}"


def raw_event(user_id: str, oura_id: str, *, kind: str = "webhook", archived: bool = True,
              data_type: str = "daily_sleep", at: Any = None) -> RawEvent:  # fmt: skip
    event_id = uuid.uuid4()
    body = b'{"user_id":"' + oura_id.encode() + b'","note":"' + PAYLOAD_MARK + b'"}'
    fields: dict[str, Any] = {}
    if archived:
        key = raw_store.object_key(
            provider="oura", day=date.today(), user_id=user_id, event_id=str(event_id)
        )
        stored = raw_store.put(key, body)
        fields = {"object_key": stored.key, "sha256": stored.sha256, "archived_at": timezone.now()}
    else:
        fields = {"envelope": body}
    return RawEvent.objects.create(
        event_id=event_id, kind=kind, dedupe_key=uuid.uuid4().hex, user_id=user_id,
        provider_user_id=oura_id, data_type=data_type, event_type="update",
        received_at=at or timezone.now(), **fields,
    )  # fmt: skip


def seed(user_id: str, *, raw_events: int = 2, jobs: int = 1) -> dict[str, Any]:
    """A connected person with a job, raw events, scores, a dead letter and audit entries."""
    oura_id = f"oura-{user_id}"
    conn = OuraConnection.objects.create(
        user_id=user_id, provider_user_id=oura_id, scopes=["daily", "personal"]
    )
    events = [
        raw_event(user_id, oura_id, kind="webhook" if n % 2 == 0 else "document")
        for n in range(raw_events - 1)
    ]
    events.append(raw_event(user_id, oura_id, kind="page", archived=False, data_type="workout"))
    today = timezone.localdate()
    job_list = [
        IngestionJob.objects.create(
            user_id=user_id,
            range_start=today - timedelta(days=10 + n),
            range_end=today,
            data_types=["daily_sleep"],
            progress=40,
        )
        for n in range(jobs)
    ]
    for n, (readiness, sleep, activity) in enumerate([(81, 72, 63), (84, 75, 66)]):
        day = today - timedelta(days=n + 1)
        common = {"user_id": user_id, "normalizer_version": 1, "day": day}
        DailyReadiness.objects.create(oura_id=f"r{n}", score=readiness, **common)
        DailySleep.objects.create(oura_id=f"s{n}", score=sleep, **common)
        DailyActivity.objects.create(oura_id=f"a{n}", score=activity, **common)
    letter = DeadLetter.objects.create(
        consumer="normalizer", stream="HEALTH_RAW", subject="health.raw.oura.webhook",
        stream_seq=uuid.uuid4().int % 10**9,
        data=b'{"user_id":"' + user_id.encode() + b'","x":"' + PAYLOAD_MARK + b'"}',
        reason="ValidationError at score", error_type="PoisonMessage", attempts=5,
    )  # fmt: skip
    audit_record(action=AuditEntry.Action.JOB_STARTED, actor="api-key:k1", user_id=user_id)
    AuditEntry.objects.create(
        action=AuditEntry.Action.WEBHOOK_RECEIVED, actor="oura-webhook",
        person_ref=person_hash(oura_id, namespace="oura"),
    )  # fmt: skip
    return {"connection": conn, "oura_id": oura_id, "events": events, "jobs": job_list,
            "dead_letter": letter}  # fmt: skip


def page(client: Client, user_id: str) -> str:
    response = client.get(reverse("admin:person", args=[user_id]))
    assert response.status_code == 200, response.content[:300]
    return response.content.decode()


def refused(actor: str, action: str) -> int:
    return AuditEntry.objects.filter(
        action=AuditEntry.Action.STAFF_REFUSED, actor=actor, details__action=action,
        details__outcome="refused",
    ).count()  # fmt: skip


# --- search -----------------------------------------------------------------------------


def test_search_finds_a_person_by_our_user_id_and_by_their_oura_user_id() -> None:
    user_id = new_user_id()
    seed(user_id)
    seed(new_user_id())  # someone else, not to be found
    client, _ = staff("support")
    person_url = reverse("admin:person", args=[user_id])

    by_user_id = client.get(reverse("admin:person_search"), {"q": user_id})
    by_oura_id = client.get(reverse("admin:person_search"), {"q": f"oura-{user_id}"})

    for response, found_by in ((by_user_id, "user id"), (by_oura_id, "Oura user id")):
        html = response.content.decode()
        assert response.status_code == 200
        assert f'href="{person_url}"' in html
        assert html.count('href="/admin/people/p') == 1  # only this person
        assert f"<td>{found_by}</td>" in html


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("nobody-here", "No person with that user id or Oura user id."),
        ("a b/../c", "Not a valid user id"),
        ("x" * 300, "neither a valid user id nor an Oura user id"),
    ],
)
def test_search_says_when_nobody_matches_or_the_id_is_invalid(query: str, says: str) -> None:
    seed(new_user_id())
    client, _ = staff("support")
    response = client.get(reverse("admin:person_search"), {"q": query})
    assert response.status_code == 200
    html = response.content.decode()
    assert says in html
    assert 'href="/admin/people/p' not in html


def test_an_invalid_user_id_in_the_page_address_is_a_400_not_a_500() -> None:
    client, _ = staff("support")
    assert client.get("/admin/people/a.b*c/").status_code == 400


def test_a_staff_user_without_any_person_right_is_refused_and_audited() -> None:
    user_id = new_user_id()
    seed(user_id)
    client, actor = staff(None)
    assert client.get(reverse("admin:person", args=[user_id])).status_code == 403
    assert client.get(reverse("admin:person_search"), {"q": user_id}).status_code == 403
    assert refused(actor, "person_page") == 1
    assert refused(actor, "person_search") == 1


def test_the_pages_need_the_two_factor_login() -> None:
    user = User.objects.create_user("half", password="x", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)  # password only: no verified device in the session
    response = client.get(reverse("admin:person_search"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


# --- the page ---------------------------------------------------------------------------


def test_the_page_shows_every_section_with_the_seeded_data() -> None:
    user_id = new_user_id()
    seeded = seed(user_id)
    client, _ = staff(superuser=True)

    html = page(client, user_id)

    assert "daily, personal" in html  # connection scopes
    assert f"<td>{seeded['oura_id']}</td>" in html
    assert str(seeded["jobs"][0].job_id) in html
    assert '<span class="job-progress">40%</span>' in html
    for event in seeded["events"]:
        assert str(event.event_id) in html
    assert "<td>daily_sleep</td>" in html  # last webhook / fetch per type
    for score in (81, 72, 63, 84, 75, 66):
        assert f'<td class="score">{score}</td>' in html
    # Two days of three scored types in the 90-day strip.
    assert html.count('class="coverage-cell on"') == 6 + 1  # + the legend's sample
    assert "6/90" not in html
    assert "2/90 days" in html
    assert f">{seeded['dead_letter'].pk}</a>" in html
    assert "PoisonMessage" in html
    assert "<td>job.started</td>" in html
    assert "<td>webhook.received</td>" in html  # the Oura-namespace entry


def test_the_page_loads_its_stylesheet_and_has_no_inline_style_or_script() -> None:
    user_id = new_user_id()
    seed(user_id)
    client, _ = staff(superuser=True)
    response = client.get(reverse("admin:person", args=[user_id]))
    html = response.content.decode()
    assert "backoffice/person.css" in html
    assert "style=" not in html.split('id="person"', 1)[1]
    assert "<script>" not in html
    assert "unsafe-inline" not in response.get("Content-Security-Policy", "")


def test_no_payload_bytes_appear_in_the_page() -> None:
    user_id = new_user_id()
    seed(user_id, raw_events=4)
    client, _ = staff(superuser=True)
    html = page(client, user_id)
    assert PAYLOAD_MARK.decode() not in html
    assert "note" not in html


def test_the_page_makes_the_same_bounded_number_of_queries_however_much_data() -> None:
    few, many = new_user_id(), new_user_id()
    seed(few, raw_events=2, jobs=1)
    seed(many, raw_events=30, jobs=12)
    client, _ = staff("support")
    page(client, few)  # warm the session and permission caches alike for both

    counts = []
    for user_id in (few, many):
        with CaptureQueriesContext(db_connection) as queries:
            page(client, user_id)
        counts.append(len(queries))

    assert counts[0] == counts[1]
    assert counts[1] <= 20, counts


# --- roles ------------------------------------------------------------------------------


def test_support_sees_the_values_but_no_raw_access_or_erase_button() -> None:
    user_id = new_user_id()
    seed(user_id)
    client, _ = staff("support")
    html = page(client, user_id)
    assert '<td class="score">81</td>' in html
    assert 'id="action-backfill"' in html
    assert 'class="action-raw"' not in html
    assert 'id="action-erase"' not in html
    assert 'id="action-disconnect"' not in html


def test_a_privacy_officer_sees_the_raw_access_and_erase_buttons() -> None:
    user_id = new_user_id()
    seeded = seed(user_id)
    client, _ = staff("privacy officer")
    html = page(client, user_id)
    assert 'class="action-raw"' in html
    assert 'id="action-erase"' in html
    assert str(seeded["events"][0].event_id) in html
    assert "<td>job.started</td>" in html
    assert 'id="action-backfill"' not in html


def test_an_operator_sees_jobs_and_dead_letters_and_may_backfill_but_not_raw_or_erase() -> None:
    user_id = new_user_id()
    seeded = seed(user_id)
    client, _ = staff("operator")
    html = page(client, user_id)
    assert str(seeded["jobs"][0].job_id) in html
    assert f">{seeded['dead_letter'].pk}</a>" in html
    assert 'id="action-backfill"' in html
    assert 'class="action-raw"' not in html
    assert 'id="action-erase"' not in html
    assert str(seeded["events"][0].event_id) not in html  # raw events are not theirs
    assert '<td class="score">81</td>' not in html


# --- actions ----------------------------------------------------------------------------


def post(client: Client, name: str, user_id: str, data: dict[str, Any] | None = None) -> Any:
    return client.post(reverse(f"admin:{name}", args=[user_id]), data or {})


@pytest.mark.parametrize(
    ("group", "allowed"), [("support", True), ("operator", True), ("privacy officer", False)]
)
def test_backfill_starts_a_job_for_its_roles_and_is_refused_and_audited_for_others(
    group: str, allowed: bool
) -> None:
    user_id = new_user_id()
    seed(user_id, jobs=0)
    client, actor = staff(group)
    today = timezone.localdate()
    response = post(client, "person_backfill", user_id,
                    {"start": today - timedelta(days=5), "end": today})  # fmt: skip
    jobs = IngestionJob.objects.filter(user_id=user_id, requested_by=actor)
    if allowed:
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:person", args=[user_id])
        assert jobs.count() == 1
        assert AuditEntry.objects.filter(action=AuditEntry.Action.JOB_STARTED, actor=actor).exists()
        assert str(jobs.get().job_id) in page(client, user_id)
    else:
        assert response.status_code == 403
        assert refused(actor, "start_backfill") == 1
        assert not jobs.exists()


@pytest.mark.parametrize(
    ("group", "allowed"),
    [("support", False), ("privacy officer", False), ("operator", False), (None, True)],
)
def test_disconnect_is_for_superusers_and_refused_and_audited_for_every_group(
    group: str | None, allowed: bool
) -> None:
    user_id = new_user_id()
    seed(user_id)
    client, actor = staff(group, superuser=group is None)
    response = post(client, "person_disconnect", user_id)
    status = OuraConnection.objects.get(user_id=user_id).status
    if allowed:
        assert response.status_code == 302
        assert status == OuraConnection.Status.REVOKED
        assert AuditEntry.objects.filter(
            action=AuditEntry.Action.CONNECTION_REVOKED, actor=actor
        ).exists()
    else:
        assert response.status_code == 403
        assert refused(actor, "disconnect") == 1
        assert status == OuraConnection.Status.ACTIVE


@pytest.mark.parametrize(
    ("group", "allowed"), [("privacy officer", True), ("support", False), ("operator", False)]
)
def test_erase_confirms_with_counts_then_erases_for_privacy_officers_only(
    group: str, allowed: bool
) -> None:
    user_id = new_user_id()
    seed(user_id)
    client, actor = staff(group)
    asked = post(client, "person_erase", user_id)
    if not allowed:
        assert asked.status_code == 403
        assert refused(actor, "erase") == 1
        assert OuraConnection.objects.filter(user_id=user_id).exists()
        return
    assert asked.status_code == 200
    assert "Erase these people?" in asked.content.decode()
    assert OuraConnection.objects.filter(user_id=user_id).exists()  # nothing gone yet
    pk = OuraConnection.objects.get(user_id=user_id).pk
    done = post(client, "person_erase", user_id,
                {"action": "erase", "confirm": "yes", "_selected_action": str(pk)})  # fmt: skip
    assert done.status_code == 200
    assert not OuraConnection.objects.filter(user_id=user_id).exists()
    assert AuditEntry.objects.filter(action=AuditEntry.Action.USER_ERASED, actor=actor).exists()


@pytest.mark.parametrize(
    ("group", "allowed"), [("privacy officer", True), ("support", False), ("operator", False)]
)
def test_raw_access_shows_a_signed_url_once_for_privacy_officers_only(
    group: str, allowed: bool
) -> None:
    user_id = new_user_id()
    event = seed(user_id)["events"][0]
    client, actor = staff(group)
    response = post(client, "person_raw", user_id, {"event_id": str(event.event_id)})
    issued = AuditEntry.objects.filter(action=AuditEntry.Action.RAW_ACCESSED, actor=actor)
    if allowed:
        assert response.status_code == 200
        assert 'class="shown-once"' in response.content.decode()
        assert "no-store" in response["Cache-Control"]
        assert issued.filter(event_id=event.event_id).count() == 1
    else:
        assert response.status_code == 403
        assert refused(actor, "signed_url") == 1
        assert not issued.exists()


def test_raw_access_only_opens_events_of_that_person() -> None:
    user_id, other = new_user_id(), new_user_id()
    seed(user_id)
    someone_elses = seed(other)["events"][0]
    client, _ = staff("privacy officer")
    response = post(client, "person_raw", user_id, {"event_id": str(someone_elses.event_id)})
    assert response.status_code == 302
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.RAW_ACCESSED).exists()


# --- links from the lists -----------------------------------------------------------------


@pytest.mark.parametrize(
    "changelist", ["ingestion/ouraconnection", "ingestion/rawevent", "jobs/ingestionjob"]
)
def test_the_lists_link_the_user_id_to_the_person_page(changelist: str) -> None:
    user_id = new_user_id()
    seed(user_id)
    client, _ = staff(superuser=True)
    html = client.get(f"/admin/{changelist}/").content.decode()
    assert f'<a href="{reverse("admin:person", args=[user_id])}">{user_id}</a>' in html


def test_opening_a_persons_page_is_audited_by_keyed_hash_with_the_sections_seen() -> None:
    from core.pseudonyms import person_hash

    user_id = new_user_id()
    seed(user_id)
    client, actor = staff("support")
    page(client, user_id)
    entry = AuditEntry.objects.get(action=AuditEntry.Action.PERSON_VIEWED, actor=actor)
    assert entry.person_ref == person_hash(user_id)
    assert entry.user_id == ""  # the hash names them; the plain id is not kept
    assert "coverage" in entry.details["sections"]
    assert "raw_events" not in entry.details["sections"]
