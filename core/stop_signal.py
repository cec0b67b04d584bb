"""SIGTERM/SIGINT for long-running commands, without taking a lock inside the handler.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread
was. `threading.Event.set()` takes the event's lock; a second signal arriving while the first
handler holds it (or the main thread holding it when the first arrives) re-enters the
handler, which waits for that lock forever. `make run`'s supervisor killed with -9 left a
normalizer and a scheduler deadlocked exactly so, each with a stack of handlers waiting in
`Event.set`. Here the handler only writes a byte to a pipe (async-signal-safe, no Python
lock), and a small thread turns it into `stopping.set()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)


def stop_on_signals(
    stopping: threading.Event,
    *,
    event: str,
    log: logging.Logger = logger,
    on_signal: Callable[[], None] | None = None,
) -> None:
    """SIGTERM and SIGINT set `stopping` (soon after, from another thread) and log `event`.

    `on_signal` runs inside the handler: it must take no lock (assigning an attribute is
    fine).
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def watch() -> None:
        while os.read(read_end, 1):
            stopping.set()

    threading.Thread(target=watch, name="stop-signal", daemon=True).start()

    def handler(signum: int, frame: FrameType | None) -> None:
        if on_signal is not None:
            on_signal()
        # A full pipe already holds a wake-up; the flag is set either way.
        with contextlib.suppress(OSError):
            os.write(write_end, b"\0")
        # logging's locks are re-entrant, and a write to a closed pipe (the supervisor is
        # gone) is swallowed by the handler: telling someone never holds up the stop.
        log.info(event, extra={"signal": signal.Signals(signum).name})

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
