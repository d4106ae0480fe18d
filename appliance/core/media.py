"""Core media value types shared by sources, encoders and the stream."""

from __future__ import annotations

import time
from dataclasses import dataclass

VIDEO_CLOCK_RATE = 90_000
AUDIO_CLOCK_RATE = 48_000  # Opus's RTP clock, whatever the capture rate (RFC 7587 section 4.1)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded access unit (H.264 Annex-B), as an encoder hands it to the stream.

    `pts` is in 90 kHz units on the stream's monotonic clock; `capture_ns` is the wall-clock time
    (`time.time_ns()`) at which the source captured the picture, the one the latency stamp carries.
    """

    data: bytes
    pts: int
    keyframe: bool
    capture_ns: int


def pts_from_ns(monotonic_ns: int) -> int:
    """90 kHz pts of a CLOCK_MONOTONIC time: one clock for every source, continuous across restarts."""
    return monotonic_ns * 9 // 100_000


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    """One encoded audio frame (an Opus packet, 20 ms by default), as an encoder hands it over.

    `pts` counts 48 kHz samples on the monotonic clock (`audio_pts_from_ns`), so that audio and
    video times compare; `capture_ns` is the wall-clock time of its first sample."""

    data: bytes
    pts: int
    capture_ns: int


def audio_pts_from_ns(monotonic_ns: int) -> int:
    """48 kHz pts of a CLOCK_MONOTONIC time: the audio twin of `pts_from_ns`."""
    return monotonic_ns * 6 // 125_000


class Timeline:
    """Places another clock's timestamps (a publisher's RTP time, unwrapped) on ours: the first one
    at "now" (pts on the monotonic clock at `clock_rate`, and the wall-clock capture time), the
    later ones at their own spacing from it. Returns (pts, capture_ns)."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self._origin: tuple[int, int, int] | None = None  # (timestamp, pts, wall ns)

    def place(self, timestamp: int) -> tuple[int, int]:
        if self._origin is None:
            now = time.monotonic_ns()
            self._origin = (timestamp, now * self.clock_rate // 1_000_000_000, time.time_ns())
        ts0, pts0, wall0 = self._origin
        elapsed = timestamp - ts0
        return pts0 + elapsed, wall0 + elapsed * 1_000_000_000 // self.clock_rate
