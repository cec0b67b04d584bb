"""Measurements shared by the benchmarks."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor


def s3_put_rate(seconds: float, threads: int, size: int = 1024) -> float:
    """Bare PUTs per second against the configured S3 (the bound on anything that archives)."""
    from core import raw_store

    payload = os.urandom(size // 2).hex().encode()
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def loop(index: int) -> None:
        while time.perf_counter() < stop:
            raw_store.put(f"bench/put-{uuid.uuid4()}.json", payload)
            counts[index] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(threads)))
    return round(sum(counts) / (time.perf_counter() - started), 1)
