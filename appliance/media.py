"""Core media value types shared by sources, encoders and the stream."""

from __future__ import annotations

from dataclasses import dataclass

VIDEO_CLOCK_RATE = 90_000


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
