"""The runner's JetStream pull subscription against a real NATS server."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from core import bus
from core.consumers import ConsumerSpec, PullConsumer, get_consumer
from normalized.tests.normalizer_helpers import delete_durable

pytestmark = pytest.mark.usefixtures("clean_streams")

# Far longer than any fetch should take once a message is there: a fetch that returns well
# before it did not wait for its batch to fill.
LONG_TIMEOUT_S = 20.0


@pytest.fixture
def spec() -> Iterator[ConsumerSpec]:
    subject = f"health.raw.test.fetch{uuid.uuid4().hex[:8]}"
    spec = dataclasses.replace(
        get_consumer("normalizer"),
        name="test-fetch",
        durable=f"test-fetch-{uuid.uuid4().hex[:10]}",
        filter_subject=subject,
    )
    yield spec
    delete_durable(spec)


@pytest.fixture
def puller(spec: ConsumerSpec) -> Iterator[PullConsumer]:
    puller = PullConsumer(spec)
    puller.start()
    yield puller
    puller.close()


def test_a_lone_message_is_returned_without_waiting_for_the_batch_to_fill(
    spec: ConsumerSpec, puller: PullConsumer
) -> None:
    bus.get_bus().publish(spec.filter_subject, b"{}", msg_id=str(uuid.uuid4()))

    started = time.monotonic()
    msgs = puller.fetch(50, timeout=LONG_TIMEOUT_S)

    assert len(msgs) == 1
    assert time.monotonic() - started < LONG_TIMEOUT_S / 2
    puller.ack(msgs[0])


def test_a_message_arriving_while_idle_is_returned_at_once_with_what_came_with_it(
    spec: ConsumerSpec, puller: PullConsumer
) -> None:
    # The fetch is already waiting (long poll) when the messages are published, as a consumer
    # is after an idle spell.
    def publish_later() -> None:
        time.sleep(0.5)
        for _ in range(3):
            bus.get_bus().publish(spec.filter_subject, b"{}", msg_id=str(uuid.uuid4()))

    publisher = threading.Thread(target=publish_later)
    publisher.start()
    started = time.monotonic()
    msgs = puller.fetch(50, timeout=LONG_TIMEOUT_S)
    publisher.join()
    received: list[Any] = list(msgs)
    while len(received) < 3:  # the ones published after this fetch returned
        more = puller.fetch(50, timeout=LONG_TIMEOUT_S)
        assert more, "a published message never came"
        received += more

    assert time.monotonic() - started < LONG_TIMEOUT_S / 2
    assert len(received) == 3
    for msg in received:
        puller.ack(msg)


def test_a_full_batch_is_returned_whole(spec: ConsumerSpec, puller: PullConsumer) -> None:
    for _ in range(30):
        bus.get_bus().publish(spec.filter_subject, b"{}", msg_id=str(uuid.uuid4()))

    received: list[Any] = []
    while len(received) < 30:
        msgs = puller.fetch(10, timeout=LONG_TIMEOUT_S)
        assert 0 < len(msgs) <= 10
        received += msgs

    assert len(received) == 30
    assert len({msg.metadata.sequence.stream for msg in received}) == 30
    for msg in received:
        puller.ack(msg)
    assert puller.fetch(10, timeout=0.5) == []


def test_messages_published_while_one_process_is_busy_go_to_the_idle_one(
    spec: ConsumerSpec, puller: PullConsumer
) -> None:
    # `puller` takes a message after an idle spell and is then busy with it, fetching nothing:
    # what is published meanwhile must reach the other process, not wait for this one.
    other = PullConsumer(spec)
    other.start()
    try:

        def publish_later(count: int) -> None:
            time.sleep(0.3)
            for _ in range(count):
                bus.get_bus().publish(spec.filter_subject, b"{}", msg_id=str(uuid.uuid4()))

        first_publisher = threading.Thread(target=publish_later, args=(1,))
        first_publisher.start()
        (first,) = puller.fetch(50, timeout=LONG_TIMEOUT_S)  # long-polled, then got one
        first_publisher.join()

        publish_later(3)  # while `puller` is busy and does not fetch
        received: list[Any] = []
        while len(received) < 3:
            more = other.fetch(50, timeout=2.0)
            assert more, "the messages went to the busy process"
            received += more

        for msg in received:
            other.ack(msg)
        puller.ack(first)
    finally:
        other.close()


def test_a_fetch_that_times_out_on_an_empty_stream_returns_nothing_and_raises_nothing(
    puller: PullConsumer,
) -> None:
    # Deadlines this short end in nats-py's timeouts on every path; none may surface as
    # BusUnavailable, which makes the runner log a failure and sleep for a second.
    for _ in range(50):
        assert puller.fetch(50, timeout=0.001) == []
