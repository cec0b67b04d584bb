"""/metrics: every process's series on every scrape, and the stores' values read at scrape."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import Client, override_settings
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from core import bus
from core.consumers import get_consumer
from core.metrics import provider_rate_limit_hits
from core.models import DeadLetter
from devstack.services import free_port
from ingestion.models import WebhookSubscription
from ingestion.oura_client import endpoint_class
from ingestion.rate_budget import BACKFILL_SHARE, try_acquire
from ingestion.tests.webhook_helpers import connect, record_unpublished
from normalized.tests.normalizer_helpers import delete_durable
from privacy.models import ErasureRequest

PROJECT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client: Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _write_metrics_in_a_process(directory: Path, role: str) -> int:
    """A process of its own that counts one accepted webhook as `role`, then exits."""
    code = textwrap.dedent(
        f"""
        import os
        from core.metrics import process_started, webhook_accepted_total
        process_started({role!r})
        webhook_accepted_total.labels(provider="oura").inc()
        print(os.getpid())
        """
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return int(result.stdout.strip())


def test_the_view_adds_up_every_process_and_forgets_live_gauges_of_dead_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay_pid = _write_metrics_in_a_process(tmp_path, "relay")
    _write_metrics_in_a_process(tmp_path, "normalizer")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    client = Client()

    samples = scrape(client)
    assert value(samples, "webhook_accepted_total", provider="oura") == 2
    assert value(samples, "health_processes", role="relay") == 1
    assert value(samples, "health_processes", role="normalizer") == 1
    assert scrape(client).keys() == samples.keys()  # the same series, whoever answers

    # The relay exited (what make run's supervisor reports): its live gauge goes, its
    # count stays.
    mark_process_dead(relay_pid, str(tmp_path))
    samples = scrape(client)
    assert value(samples, "webhook_accepted_total", provider="oura") == 2
    assert value(samples, "health_processes", role="relay") is None


def test_store_values_are_read_at_scrape_time(clean_streams: None) -> None:
    spec = get_consumer("normalizer")

    async def _durable_with_two_pending() -> None:
        nc = await bus.connect(name="tests")
        try:
            js = nc.jetstream()
            await js.add_consumer(spec.stream, spec.consumer_config())
            for i in range(2):
                await js.publish("health.raw.oura.webhook", f'{{"n": {i}}}'.encode())
        finally:
            await nc.close()

    asyncio.run(_durable_with_two_pending())
    connect()
    record_unpublished(3)
    common = {"consumer": "normalizer", "stream": "HEALTH_RAW", "subject": "s", "data": b"{}",
              "reason": "r", "error_type": "E", "attempts": 1}  # fmt: skip
    DeadLetter.objects.create(stream_seq=1, **common)
    DeadLetter.objects.create(stream_seq=2, resolved=True, **common)
    ErasureRequest.objects.create(person_ref="p1", status="failed", requested_by="t")
    expires = datetime(2030, 1, 2, tzinfo=UTC)
    for event_type, expiration in (("create", expires), ("update", expires + timedelta(days=1))):
        WebhookSubscription.objects.create(
            subscription_id=f"s-{event_type}", event_type=event_type, data_type="daily_sleep",
            callback_url="http://127.0.0.1/v1/webhooks/oura", expiration_time=expiration,
        )  # fmt: skip
    try_acquire(units=5)

    with override_settings(OURA_APP_RATE_LIMIT=100):
        samples = scrape(Client())
    delete_durable(spec)

    assert value(samples, "metrics_source_up", source="postgres") == 1
    assert value(samples, "metrics_source_up", source="nats") == 1
    durable = {"stream": "HEALTH_RAW", "durable": "normalizer"}
    assert value(samples, "jetstream_consumer_pending", **durable) == 2
    assert value(samples, "jetstream_consumer_ack_pending", **durable) == 0
    assert value(samples, "jetstream_consumer_redelivered", **durable) == 0
    assert value(samples, "relay_backlog", kind="publish") == 3
    assert value(samples, "relay_backlog", kind="archive") == 3
    assert value(samples, "dead_letters_open", consumer="normalizer") == 1
    assert value(samples, "erasure_requests", state="failed") == 1
    assert value(samples, "erasure_requests", state="done") == 0
    assert value(
        samples, "oura_subscription_expires_timestamp_seconds", data_type="daily_sleep"
    ) == (expires.timestamp())
    assert value(samples, "oura_rate_budget_remaining", priority="live") == 95
    assert value(samples, "oura_rate_budget_remaining", priority="backfill") == (
        int(100 * BACKFILL_SHARE) - 5
    )


def test_a_down_nats_is_reported_as_a_source_down_and_the_scrape_still_answers() -> None:
    with override_settings(NATS_SERVERS=[f"nats://127.0.0.1:{free_port()}"]):
        samples = scrape(Client())

    assert value(samples, "metrics_source_up", source="nats") == 0
    assert value(samples, "metrics_source_up", source="postgres") == 1
    assert not any(name.startswith("jetstream_") for name, _ in samples)
    assert value(samples, "relay_backlog", kind="publish") == 0


def test_responses_are_counted_by_route_name_and_status_class() -> None:
    def count(route: str, status_class: str) -> float:
        labels = {"route": route, "status_class": status_class}
        return REGISTRY.get_sample_value("http_responses_total", labels) or 0.0

    before = count("healthz", "2xx"), count("unmatched", "4xx")
    client = Client()
    client.get("/healthz")
    client.get("/no/such/user-42/path")

    assert (count("healthz", "2xx"), count("unmatched", "4xx")) == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/v2/usercollection/daily_sleep/3f1c-8a", "daily_sleep"),
        ("/v2/usercollection/workout", "workout"),
        ("/v2/other/thing?user=42", "other"),
    ],
)
def test_oura_requests_are_labelled_by_collection_never_by_id(path: str, endpoint: str) -> None:
    assert endpoint_class(path) == endpoint


def test_the_counter_family_keeps_the_drafts_name_and_its_sample_gets_total() -> None:
    provider_rate_limit_hits.labels(provider="oura", source="oura_429").inc(0)

    # What Prometheus asks for: OpenMetrics, where the family keeps the name it was given.
    response = Client().get("/metrics", headers={"Accept": "application/openmetrics-text"})

    text = response.content.decode()
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert "# TYPE provider_rate_limit_hits counter" in text
    assert 'provider_rate_limit_hits_total{provider="oura",source="oura_429"}' in text
