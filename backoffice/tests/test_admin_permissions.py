"""Least privilege in the admin: every action and the raw-access view, for every staff group.

Staff users are logged in with the Django test client (a confirmed TOTP device when the admin
asks for one); services are real (Postgres, NATS, S3).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from access.models import ApiKey
from access.services import api_key_create
from audit.models import AuditEntry
from backoffice.services import STAFF_GROUPS
from core import raw_store
from core.models import DeadLetter
from ingestion.models import OuraConnection, RawEvent, WebhookSubscription
from jobs.models import IngestionJob
from jobs.tests.conftest import broker  # noqa: F401 - fixture, used by name

# Jobs started here are enqueued on commit: to the broker of the test database (jobs tests'
# fixture), not the app's, which points at the database pytest-django renamed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("broker")]

GROUPS = ("support", "privacy officer", "operator")


@pytest.fixture(autouse=True)
def _groups() -> None:
    call_command("setup_staff_groups", verbosity=0)


def staff_client(group: str | None, *, superuser: bool = False) -> tuple[Client, str]:
    name = f"{(group or 'root').replace(' ', '_')}_{uuid.uuid4().hex[:6]}"
    user = User.objects.create_user(name, password="x", is_staff=True, is_superuser=superuser)
    if group:
        user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    if apps.is_installed("django_otp.plugins.otp_totp"):
        from django_otp.plugins.otp_totp.models import TOTPDevice

        device = TOTPDevice.objects.create(user=user, name="test", confirmed=True)
        session = client.session
        session["otp_device_id"] = device.persistent_id
        session.save()
    return client, f"staff:{name}"


def post_action(client: Client, model: str, action: str, pks: list[Any], **extra: str) -> Any:
    return client.post(
        f"/admin/{model}/",
        {"action": action, ACTION_CHECKBOX_NAME: [str(pk) for pk in pks], "index": "0", **extra},
    )


def refused_entries(actor: str, action: str) -> int:
    return AuditEntry.objects.filter(
        action=AuditEntry.Action.STAFF_REFUSED,
        actor=actor,
        details__action=action,
        details__outcome="refused",
    ).count()


def connection(user_id: str) -> OuraConnection:
    return OuraConnection.objects.create(
        user_id=user_id, provider_user_id=f"oura-{user_id}", scopes=["daily"]
    )


def archived_event(user_id: str) -> RawEvent:
    event_id = uuid.uuid4()
    key = raw_store.object_key(
        provider="oura", day=date.today(), user_id=user_id, event_id=str(event_id)
    )
    stored = raw_store.put(key, b'{"event_type":"update"}')
    return RawEvent.objects.create(
        event_id=event_id, kind="webhook", dedupe_key=uuid.uuid4().hex, user_id=user_id,
        object_key=stored.key, sha256=stored.sha256, archived_at=timezone.now(),
    )  # fmt: skip


def dead_letter() -> DeadLetter:
    return DeadLetter.objects.create(
        consumer="normalizer", stream="HEALTH_RAW", subject="health.raw.oura.webhook",
        stream_seq=uuid.uuid4().int % 10**9, data=b"{}", reason="r", error_type="Poison",
        attempts=5,
    )  # fmt: skip


def active_job() -> IngestionJob:
    return IngestionJob.objects.create(
        user_id="ivy", range_start=date.today() - timedelta(days=3), range_end=date.today(),
        data_types=["daily_sleep"],
    )  # fmt: skip


# (admin path, action, who may, the objects, the audit entry an allowed run writes)
ACTIONS: dict[str, tuple[str, str, set[str]]] = {
    "replay": ("core/deadletter", "replay", {"operator"}),
    "cancel": ("jobs/ingestionjob", "cancel", {"operator"}),
    # A retry of a job's failed types is a backfill of those types: core.start_backfill.
    "retry": ("jobs/ingestionjob", "retry_failed_types", {"support", "operator"}),
    "signed_url": ("ingestion/rawevent", "signed_url", {"privacy officer"}),
    "erase": ("ingestion/ouraconnection", "erase", {"privacy officer"}),
    "disconnect": ("ingestion/ouraconnection", "disconnect", set()),
    "revoke": ("access/apikey", "revoke", set()),
    "renew": ("ingestion/webhooksubscription", "renew", {"operator"}),
}


def job_with_a_failed_type() -> IngestionJob:
    user_id = f"ivy{uuid.uuid4().hex[:6]}"
    connection(user_id)
    return IngestionJob.objects.create(
        user_id=user_id, range_start=date.today() - timedelta(days=3), range_end=date.today(),
        data_types=["daily_sleep", "vO2_max"], status="succeeded_with_errors", progress=100,
        checkpoint={"daily_sleep": {"done": True}, "vO2_max": {"done": True}},
        errors={"vO2_max": {"error": "not_found", "detail": "vO2_max: Oura answered 404",
                            "at": timezone.now().isoformat()}},
    )  # fmt: skip


def target_of(action: str) -> list[Any]:
    if action == "replay":
        return [dead_letter().pk]
    if action == "cancel":
        return [active_job().pk]
    if action == "retry":
        return [job_with_a_failed_type().pk]
    if action == "signed_url":
        return [archived_event("ivy").pk]
    if action in ("erase", "disconnect"):
        return [connection(f"ivy{uuid.uuid4().hex[:6]}").pk]
    if action == "revoke":
        issued = api_key_create(name="k", scopes=["health:read"], all_users=True)
        return [issued.api_key.pk]
    subscription = WebhookSubscription.objects.create(
        subscription_id=uuid.uuid4().hex, event_type="create", data_type="daily_sleep",
        callback_url="https://example.test/hook", expiration_time=timezone.now(),
    )  # fmt: skip
    return [subscription.pk]  # renew acts on all of ours, whatever is selected


def allowed_audit(action: str, actor: str) -> bool:
    expected = {
        "replay": AuditEntry.Action.DEAD_LETTER_REPLAYED,
        "cancel": AuditEntry.Action.JOB_CANCELLED,
        "retry": AuditEntry.Action.JOB_STARTED,
        "signed_url": AuditEntry.Action.RAW_ACCESSED,
        "erase": AuditEntry.Action.USER_ERASED,
        "disconnect": AuditEntry.Action.CONNECTION_REVOKED,
        "revoke": AuditEntry.Action.API_KEY_REVOKED,
        "renew": AuditEntry.Action.SUBSCRIPTIONS_RENEWED,
    }[action]
    return AuditEntry.objects.filter(action=expected, actor=actor).exists()


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_is_offered_only_to_its_group_and_a_forged_post_is_refused_and_audited(
    group: str, action: str, request: pytest.FixtureRequest
) -> None:
    path, name, allowed = ACTIONS[action]
    if action == "renew" and group in allowed:
        request.getfixturevalue("oura")
    client, actor = staff_client(group)
    pks = target_of(action)
    pks_extra = {"confirm": "yes"} if action == "erase" else {}

    response = post_action(client, path, name, pks, **pks_extra)

    if group in allowed:
        assert response.status_code in (200, 302), response.content[:300]
        assert allowed_audit(action, actor)
        assert refused_entries(actor, name) == 0
    else:
        assert response.status_code == 403
        assert refused_entries(actor, name) == 1
        assert not allowed_audit(action, actor)


@pytest.mark.parametrize("action", ["disconnect", "revoke"])
def test_disconnect_and_revoke_are_for_superusers_only(action: str) -> None:
    path, name, _ = ACTIONS[action]
    client, actor = staff_client(None, superuser=True)
    response = post_action(client, path, name, target_of(action))
    assert response.status_code == 302
    assert allowed_audit(action, actor)


@pytest.mark.parametrize("group", GROUPS)
def test_the_action_menu_lists_only_the_groups_actions(group: str) -> None:
    client, _ = staff_client(group)
    for action, (path, name, allowed) in ACTIONS.items():
        target_of(action)  # Django shows no action menu over an empty list
        page = client.get(f"/admin/{path}/")
        offered = page.status_code == 200 and f'value="{name}"' in page.content.decode()
        assert offered == (group in allowed), (group, name)


@pytest.mark.parametrize("group", GROUPS)
def test_start_backfill_is_for_support_and_operators(group: str) -> None:
    connection("ivy")
    client, actor = staff_client(group)
    today = date.today()
    response = client.post(
        "/admin/jobs/ingestionjob/add/",
        {"user_id": "ivy", "start": today - timedelta(days=2), "end": today},
    )
    if group in ("support", "operator"):
        assert response.status_code == 302, response.content[:500]
        assert AuditEntry.objects.filter(action=AuditEntry.Action.JOB_STARTED).exists()
        assert IngestionJob.objects.filter(user_id="ivy", requested_by=actor).exists()
    else:
        assert response.status_code == 403
        assert refused_entries(actor, "start_backfill") == 1
        assert not IngestionJob.objects.exists()


@pytest.mark.parametrize("group", GROUPS)
def test_the_audit_log_is_for_privacy_officers(group: str) -> None:
    client, actor = staff_client(group)
    response = client.get("/admin/audit/auditentry/")
    if group == "privacy officer":
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert refused_entries(actor, "changelist") == 1


@pytest.mark.parametrize(
    "model", ["ingestion/ouraconnection", "ingestion/rawevent", "access/apikey", "audit/auditentry"]
)
def test_the_stock_delete_is_gone_even_for_a_superuser(model: str) -> None:
    client, actor = staff_client(None, superuser=True)
    objects = {
        "ingestion/ouraconnection": lambda: connection("ivy").pk,
        "ingestion/rawevent": lambda: archived_event("ivy").pk,
        "access/apikey": lambda: target_of("revoke")[0],
        "audit/auditentry": lambda: AuditEntry.objects.create(action="upkeep.run", actor="t").pk,
    }
    pk = objects[model]()
    listing = client.get(f"/admin/{model}/")
    assert listing.status_code == 200
    assert 'value="delete_selected"' not in listing.content.decode()
    assert client.post(f"/admin/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
    assert post_action(client, model, "delete_selected", [pk], post="yes").status_code == 403
    assert refused_entries(actor, "delete") == 1
    assert refused_entries(actor, "delete_selected") == 1
    model_class = apps.get_model(model.replace("/", "."))
    assert model_class._default_manager.filter(pk=pk).exists()


def test_connections_cannot_be_added_or_changed() -> None:
    client, _ = staff_client(None, superuser=True)
    pk = connection("ivy").pk
    assert client.get("/admin/ingestion/ouraconnection/add/").status_code == 403
    page = client.post(f"/admin/ingestion/ouraconnection/{pk}/change/", {"status": "revoked"})
    assert page.status_code == 403
    assert OuraConnection.objects.get(pk=pk).status == OuraConnection.Status.ACTIVE


def test_a_signed_url_is_shown_once_in_the_page_and_never_in_a_cookie() -> None:
    client, _ = staff_client("privacy officer")
    event = archived_event("ivy")
    response = post_action(client, "ingestion/rawevent", "signed_url", [event.pk])
    assert response.status_code == 200
    page = response.content.decode()
    assert event.object_key.replace("=", "%3D") in page or event.object_key in page
    assert "X-Amz-Signature=" in page or "Signature=" in page
    assert "no-store" in response["Cache-Control"]
    assert all("Signature" not in morsel.value for morsel in response.cookies.values())
    assert "Signature" not in str(client.cookies)


def test_a_new_api_key_is_shown_once_in_the_page_and_never_in_a_cookie() -> None:
    client, _ = staff_client(None, superuser=True)
    response = client.post(
        "/admin/access/apikey/add/",
        {"name": "partner", "scopes": ["health:read"], "all_users": "on", "expires_at": ""},
    )
    assert response.status_code == 200, response.content[:500]
    key = ApiKey.objects.get(name="partner")
    page = response.content.decode()
    assert f"hk_{key.prefix}" in page or key.prefix in page
    assert "no-store" in response["Cache-Control"]
    secret_start = f"{key.prefix}"
    cookies = str(client.cookies) + "".join(m.value for m in response.cookies.values())
    assert "hk_" not in cookies
    assert secret_start not in cookies


def test_erasure_shows_the_counts_then_erases_on_confirmation_and_shows_the_receipt() -> None:
    client, actor = staff_client("privacy officer")
    linked = connection("zed")
    archived_event("zed")
    archived_event("zed")

    confirm = post_action(client, "ingestion/ouraconnection", "erase", [linked.pk])

    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "ingestion.RawEvent</td><td>2<" in page
    assert "ingestion.OuraConnection</td><td>1<" in page
    assert "raw objects (S3)</td><td>2<" in page
    assert 'name="confirm" value="yes"' in page
    assert OuraConnection.objects.filter(user_id="zed").exists()  # nothing gone yet
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.USER_ERASED).exists()

    receipt = post_action(client, "ingestion/ouraconnection", "erase", [linked.pk], confirm="yes")

    assert receipt.status_code == 200
    page = receipt.content.decode()
    assert "ingestion.RawEvent</td><td>2<" in page
    assert "raw objects (S3)</td><td>" in page
    assert "Verification scan afterwards: 0 item(s) found." in page
    assert not OuraConnection.objects.filter(user_id="zed").exists()
    assert not RawEvent.objects.filter(user_id="zed").exists()
    assert AuditEntry.objects.filter(action=AuditEntry.Action.USER_ERASED, actor=actor).exists()


def test_setup_staff_groups_is_idempotent_and_removes_extra_rights() -> None:
    from django.contrib.auth.models import Permission

    support = Group.objects.get(name="support")
    support.permissions.add(Permission.objects.get(codename="view_raw_payload"))
    before = {g.name: set(g.permissions.values_list("pk", flat=True)) for g in Group.objects.all()}

    call_command("setup_staff_groups", verbosity=0)
    call_command("setup_staff_groups", verbosity=0)

    for name, rights in STAFF_GROUPS.items():
        held = {
            f"{p.content_type.app_label}.{p.codename}"
            for p in Group.objects.get(name=name).permissions.select_related("content_type")
        }
        assert held == rights
    assert (
        not Group.objects.get(name="support")
        .permissions.filter(codename="view_raw_payload")
        .exists()
    )
    assert before["support"] != set(support.permissions.values_list("pk", flat=True))


def test_the_retry_action_starts_one_job_for_the_failed_types_however_often_it_is_asked() -> None:
    client, actor = staff_client("support")
    job = job_with_a_failed_type()

    for _ in range(2):
        response = post_action(client, "jobs/ingestionjob", "retry_failed_types", [job.pk])
        assert response.status_code == 302

    retries = IngestionJob.objects.filter(retry_of=job.job_id)
    assert [(r.data_types, r.status, r.requested_by) for r in retries] == [
        (["vO2_max"], "queued", actor)
    ]
