"""Finding (and deleting) the messages that name a person on every stream.

Subjects carry no person on HEALTH_RAW, HEALTH_SYNC and HEALTH_DLQ (`health.raw.oura.<type>`,
...), so a subject purge cannot reach them: each stream is read from its first message with
a throw-away consumer that acknowledges nothing, every message whose subject, headers or
body names the person is noted, and those are deleted by sequence. The same pass without
the deletes is the verification scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from core import bus
from core.provisioning import STREAMS

FETCH_BATCH = 500


async def _matching_sequences(
    js: JetStreamContext, stream: str, subject: str, pattern: re.Pattern[bytes]
) -> list[int]:
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    last = info.state.last_seq
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    found: list[int] = []
    try:
        while True:
            try:
                messages = await sub.fetch(FETCH_BATCH, timeout=2)
            except NatsTimeoutError:
                break
            done = False
            for msg in messages:
                seq = msg.metadata.sequence.stream
                headers = " ".join(f"{k}:{v}" for k, v in (msg.headers or {}).items())
                if (
                    pattern.search(msg.data)
                    or pattern.search(msg.subject.encode())
                    or pattern.search(headers.encode())
                ):
                    found.append(seq)
                done = done or seq >= last or msg.metadata.num_pending == 0
            if done:
                break
    finally:
        await sub.unsubscribe()
    return found


async def _scan(pattern: re.Pattern[bytes], delete: bool) -> dict[str, int]:
    nc = await bus.connect(name="erasure")
    try:
        js = nc.jetstream()
        counts: dict[str, int] = {}
        for spec in STREAMS:
            sequences = await _matching_sequences(js, spec.name, spec.subjects[0], pattern)
            if delete:
                for seq in sequences:
                    # Aged out or deleted meanwhile: gone either way.
                    with contextlib.suppress(NotFoundError):
                        await js.delete_msg(spec.name, seq)
            counts[spec.name] = len(sequences)
        return counts
    finally:
        await nc.close()


def stream_messages_delete(pattern: re.Pattern[bytes]) -> dict[str, int]:
    """Delete every message naming the person; counts per stream."""
    return asyncio.run(_scan(pattern, delete=True))


def stream_messages_count(pattern: re.Pattern[bytes]) -> dict[str, int]:
    return asyncio.run(_scan(pattern, delete=False))
