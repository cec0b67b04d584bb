"""Two-tier sliding-window rate limiter (per access token, per application; CONTRACT 6)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection:
    tier: str  # "token" | "application" (values undocumented, CONTRACT 6.2)
    limit: int
    window_s: float
    reset_epoch: int
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(self.retry_after_s),
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Window": str(int(self.window_s)),
            "X-RateLimit-Reset": str(self.reset_epoch),
            "X-RateLimit-Tier": self.tier,
        }


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()

    def check(
        self,
        token: str | None,
        app: str | None,
        per_token: int,
        per_app: int,
        window_s: float,
        now: float | None = None,
    ) -> Rejection | None:
        """Count one request against both tiers, or reject it without counting it."""
        now = time.time() if now is None else now
        keys = [("token", token, per_token), ("application", app, per_app)]
        with self._lock:
            for tier, key, limit in keys:
                if key is None or limit <= 0:
                    continue
                hits = self._hits.setdefault((tier, key), deque())
                while hits and hits[0] <= now - window_s:
                    hits.popleft()
                if len(hits) >= limit:
                    reset = hits[0] + window_s
                    return Rejection(
                        tier=tier,
                        limit=limit,
                        window_s=window_s,
                        reset_epoch=math.ceil(reset),
                        retry_after_s=max(1, math.ceil(reset - now)),
                    )
            for tier, key, limit in keys:
                if key is not None and limit > 0:
                    self._hits[(tier, key)].append(now)
        return None
