"""/healthz and /readyz against the real services, each stopped in turn."""

from __future__ import annotations

import pytest
from django.test import Client

from devstack.stack import Stack

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthz_answers_while_the_process_is_up(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_every_service_answers(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"postgres": "ok", "jetstream": "ok", "s3": "ok"}


@pytest.mark.services
@pytest.mark.parametrize(
    ("service", "check"), [("postgres", "postgres"), ("nats", "jetstream"), ("s3", "s3")]
)
def test_readyz_names_each_service_that_is_down(
    client: Client, stack: Stack, service: str, check: str
) -> None:
    stack.stop(service)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable"
    assert check in body["detail"]
    assert body["checks"][check].startswith("down")
    others = {name: state for name, state in body["checks"].items() if name != check}
    assert others == {name: "ok" for name in others}
