"""Giving the heap that viewers' set-ups freed back to the system (glibc's `malloc_trim`).

A viewer's set-up allocates several times what the viewer then keeps: the HTTP exchange, the SDP
parsed and written, the DTLS handshake (OpenSSL's buffers, then its whole connection, let go by
rtc/dtls.py). glibc keeps what is freed inside its heap for reuse, so after a burst of joins the
daemon's RSS stays at the burst's peak: measured with 100 viewers joining ten at a time, about 30
KB a viewer of 160 (tests/perf/bench_fanout.py). `malloc_trim(0)` hands the free pages back
(madvise); it takes about 1 ms on a 120 MB heap, 0.2 ms when there is nothing to give back. It
runs once, `delay` seconds after a session connects or closes, however many do meanwhile.
Elsewhere than glibc (musl), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

TRIM_DELAY = 5.0  # s: after a join (its DTLS is let go at its first RTCP, about 1 s later)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """One `malloc_trim(0)` at most every `delay` seconds, when `soon()` was called."""

    def __init__(self, delay: float = TRIM_DELAY) -> None:
        self.delay = delay
        self.trims = 0
        self._trim = _malloc_trim()
        self._pending: asyncio.TimerHandle | None = None

    @property
    def available(self) -> bool:
        return self._trim is not None

    def soon(self) -> None:
        if self._trim is not None and self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.delay, self.trim)

    def trim(self) -> None:
        self._pending = None
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
