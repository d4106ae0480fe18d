"""A token bucket per client: how often one address may open sessions.

Core module (stdlib only; the clock is injectable for tests). A client gets `burst` sessions at
once, then one every `60 / per_minute` seconds. Idle clients are forgotten, so the table cannot
grow without bound whatever the number of addresses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

MAX_CLIENTS = 4096


class RateLimiter:
    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """0 when `client` may go ahead now (one token taken), else seconds until it may."""
        now = self._clock()
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._forget(now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate if self.rate > 0 else math.inf

    def _forget(self, now: float) -> None:
        """Drop the clients whose buckets are full again: they are as good as new."""
        full = (self.burst - 1) / self.rate if self.rate > 0 else math.inf
        for client, (_, at) in list(self._buckets.items()):
            if now - at >= full:
                del self._buckets[client]
