"""Counters that the stream and the viewers keep, and a drop reporter that logs at most once a second.

Core module: standard library only.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable


class RateMeter:
    """Events and bytes per second over a sliding window (for fps and bitrate in the status API)."""

    def __init__(self, window: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._events: deque[tuple[float, int]] = deque()

    def add(self, size: int) -> None:
        now = self._clock()
        self._events.append((now, size))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self._window:
            self._events.popleft()

    def rates(self) -> tuple[float, float]:
        """(events per second, bits per second) over the window."""
        self._trim(self._clock())
        if len(self._events) < 2:
            return 0.0, 0.0
        span = self._events[-1][0] - self._events[0][0]
        if span <= 0:
            return 0.0, 0.0
        count = len(self._events) - 1
        size = sum(s for _, s in list(self._events)[1:])
        return count / span, size * 8 / span


class DropReporter:
    """Counts drops and logs them at most once per `interval` seconds, with the count since the last line."""

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        what: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._what = what
        self._interval = interval
        self._clock = clock
        self._last_log = float("-inf")
        self._pending = 0
        self.total = 0

    def add(self, n: int = 1) -> None:
        self.total += n
        self._pending += n
        now = self._clock()
        if now - self._last_log >= self._interval:
            self._logger.warning(
                "%s: %d dropped (%d in all)", self._what, self._pending, self.total
            )
            self._pending = 0
            self._last_log = now


class LogLimiter:
    """Logs at most one line per `interval` seconds; the next line that goes out says how many were
    held back. For what a client can cause at will (refusals under load), so that no request
    pattern can flood the log."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")
        self.held = 0

    def log(self, level: int, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._last < self._interval:
            self.held += 1
            return
        if self.held:
            message += f" (and {self.held} more like it held back)"
        self._logger.log(level, message, *args)
        self._last, self.held = now, 0
