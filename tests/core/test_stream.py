from __future__ import annotations

import asyncio
import logging

import pytest

from appliance.core.media import EncodedFrame
from appliance.core.stream import ReaderClosed, Stream

SPS = bytes.fromhex("000000016742c01fda014016")
IDR = SPS + bytes.fromhex("0000000168ce3c80") + bytes.fromhex("0000000165888400")
P = bytes.fromhex("00000001419a2011")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stream_forcing(interval: float) -> tuple[Stream, Clock, list[float]]:
    """A stream on a manual clock whose encoder records when it was asked for a keyframe."""
    clock = Clock()
    stream = Stream("cam", keyframe_interval_min=interval, clock=clock)
    forced: list[float] = []
    stream.attach_encoder(lambda: forced.append(clock.now))
    return stream, clock, forced


def frame(n: int, key: bool = False) -> EncodedFrame:
    return EncodedFrame(data=IDR if key else P, pts=n * 3000, keyframe=key, capture_ns=n)


async def test_reader_starts_at_a_keyframe_it_asks_for() -> None:
    clock = Clock()
    stream = Stream("cam", clock=clock)
    forced: list[int] = []
    stream.attach_encoder(lambda: forced.append(1))
    reader = stream.subscribe("v1")
    assert forced == []  # nothing asked before the viewer reads
    getter = asyncio.ensure_future(reader.get())
    await asyncio.sleep(0)
    assert forced == [1]
    stream.publish(frame(1))  # a P-frame: not a start
    stream.publish(frame(2, key=True))
    stream.publish(frame(3))
    assert (await getter).pts == 6000
    assert (await reader.get()).pts == 9000
    assert stream.profile_level_id == "42e01f"
    assert reader.frames == 2 and reader.bytes == len(IDR) + len(P)


async def test_keyframe_requests_merge_and_are_rate_limited() -> None:
    stream, clock, forced = stream_forcing(0.25)
    stream.request_keyframe()
    stream.request_keyframe()  # merged with the one in flight
    assert forced == [100.0]
    stream.publish(frame(1, key=True))
    clock.now += 0.05
    stream.request_keyframe()  # too soon after the last: scheduled, not dropped
    stream.request_keyframe()
    assert forced == [100.0]
    await asyncio.sleep(0.3)
    assert len(forced) == 2
    assert stream.keyframe_requests == 4 and stream.keyframes_forced == 2


async def test_unanswered_request_is_repeated_after_timeout() -> None:
    stream, clock, forced = stream_forcing(0.0)
    stream.request_keyframe()
    clock.now += 0.5
    stream.request_keyframe()
    assert len(forced) == 1
    clock.now += 0.6
    stream.request_keyframe()
    assert len(forced) == 2


async def test_slow_reader_is_resynced_at_next_keyframe_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream, clock, forced = stream_forcing(0.0)
    fast, slow = stream.subscribe("fast", capacity=4), stream.subscribe("slow", capacity=4)
    first = [asyncio.ensure_future(reader.get()) for reader in (fast, slow)]
    await asyncio.sleep(0)
    stream.publish(frame(0, key=True))
    assert [(await f).pts for f in first] == [0, 0]
    got_fast = []
    with caplog.at_level(logging.WARNING):
        for n in range(1, 10):
            clock.now += 1 / 30
            stream.publish(frame(n))
            got_fast.append((await fast.get()).pts // 3000)
    assert got_fast == list(range(1, 10))  # the fast reader lost nothing
    assert slow.backlog == 0  # the slow one was emptied, waits for a keyframe
    assert slow.drops.total == 5
    assert "viewer slow: too slow, frames: 5 dropped (5 in all)" in caplog.text
    assert forced  # and it asked for one
    stream.publish(frame(10, key=True))
    assert (await slow.get()).keyframe


async def test_close_wakes_readers() -> None:
    stream = Stream("cam")
    reader = stream.subscribe("v")
    getter = asyncio.ensure_future(reader.get())
    await asyncio.sleep(0)
    stream.close()
    with pytest.raises(ReaderClosed):
        await getter
    assert stream.readers == 0


class Recording:
    """A fast-path viewer that records the ranges it is handed."""

    def __init__(self) -> None:
        self.ranges: list[range] = []

    def send_range(self, indices: range) -> None:
        self.ranges.append(indices)


class Failing:
    """A fast-path viewer whose sender has a bug."""

    def send_range(self, indices: range) -> None:
        raise RuntimeError("bug in one viewer's sender")


async def test_a_failing_sender_is_removed_and_the_others_keep_their_video(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = Stream("cam")
    before, after = Recording(), Recording()
    for sink in (before, Failing(), after):
        stream.add_sink(sink)
    with caplog.at_level(logging.ERROR):
        stream.publish(frame(0, key=True))
        stream.publish(frame(1))
    assert [len(r) for r in before.ranges] == [len(r) for r in after.ranges] == [1, 1]
    assert caplog.text.count("a viewer's sender failed") == 1  # removed after its first failure
