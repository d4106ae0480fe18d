from __future__ import annotations

import asyncio
import threading
import time

import av
import numpy as np
import pytest

from appliance import config
from appliance.capture.testsrc import (
    TestPattern,
    TestSource,
    ToneSource,
    read_stamp,
    stamp_block_size,
)
from appliance.core import h264
from appliance.core.media import AUDIO_CLOCK_RATE, EncodedAudio, EncodedFrame
from appliance.encoders.opus import OpusEncoder
from appliance.encoders.software import X264Encoder
from tests.apps import yuv420p


@pytest.mark.parametrize(("width", "b"), [(640, 8), (1280, 16), (1920, 24), (320, 8)])
def test_block_size_follows_the_stamp_spec(width: int, b: int) -> None:
    assert stamp_block_size(width) == b


def test_stamp_layout_matches_latency_stamp_md() -> None:
    pattern = TestPattern(1280, 720)
    value = 0b1010_0000_1111_0000_1100_0011_0101_1001
    luma = pattern.render(7, value)[:720]
    b = 16
    for i in range(32):
        bit = (value >> (31 - i)) & 1
        block1 = luma[0:b, i * b : (i + 1) * b]
        block2 = luma[b : 2 * b, i * b : (i + 1) * b]
        assert np.all(block1 == (235 if bit else 16)), i
        assert np.all(block2 == (16 if bit else 235)), i
    assert read_stamp(luma, 1280) == value


def test_stamp_is_modulo_2_to_the_32() -> None:
    ms = 1_795_000_000_123
    luma = TestPattern(640, 480).render(0, ms)[:480]
    assert read_stamp(luma, 640) == ms % 2**32


def test_unreadable_stamp_is_none_not_a_guess() -> None:
    luma = np.full((720, 1280), 128, np.uint8)
    assert read_stamp(luma, 1280) is None


def test_picture_moves_and_clock_is_drawn() -> None:
    pattern = TestPattern(640, 360)
    a = pattern.render(0, 1000).copy()
    b = pattern.render(15, 1000).copy()
    stamp_rows = 2 * stamp_block_size(640)
    assert (a[stamp_rows:360] != b[stamp_rows:360]).mean() > 0.01  # moving content
    c = pattern.render(0, 61_000).copy()  # same frame, a minute later: only the clock changes
    changed = np.argwhere(a[stamp_rows:360] != c[stamp_rows:360])
    assert changed.size and changed[:, 0].min() + stamp_rows > 360 // 2  # in the lower half


def test_stamp_survives_encoding_and_decoding() -> None:
    cfg = config.load(None, env={}, overrides={"video.width": 640, "video.height": 360})
    encoder = X264Encoder(cfg.video)
    decoder = av.CodecContext.create("h264", "r")
    pattern = TestPattern(640, 360)
    stamps = [1_000_000 + 33 * i for i in range(10)]
    read = []
    for i, stamp in enumerate(stamps):
        for frame in encoder.encode_frame(yuv420p(pattern.render(i, stamp)), i * 3000, 0):
            for picture in decoder.decode(av.Packet(frame.data)):
                read.append(read_stamp(picture.to_ndarray(format="yuv420p")[:360], 640))
    assert read == stamps


def test_encoder_forces_an_idr_with_sps_and_pps() -> None:
    cfg = config.load(None, env={}, overrides={"video.width": 320, "video.height": 240})
    encoder = X264Encoder(cfg.video)
    pattern = TestPattern(320, 240)
    frames = [
        f
        for i in range(5)
        for f in encoder.encode_frame(yuv420p(pattern.render(i, i)), i * 3000, i)
    ]
    assert [f.keyframe for f in frames] == [True, False, False, False, False]
    encoder.force_keyframe()
    (forced,) = encoder.encode_frame(yuv420p(pattern.render(5, 5)), 15000, 5)
    assert forced.keyframe
    assert h264.nal_types(forced.data)[:3] == [h264.NAL_SPS, h264.NAL_PPS, h264.NAL_IDR] or (
        h264.nal_types(forced.data)[:2] == [h264.NAL_SPS, h264.NAL_PPS]
    )
    assert forced.pts == 15000 and forced.capture_ns == 5
    assert h264.profile_level_id(h264.find_nal(forced.data, h264.NAL_SPS) or b"") == "42e014"


async def test_source_delivers_on_the_loop_and_stops_on_cancel() -> None:
    cfg = config.load(None, env={}, overrides={"video.width": 320, "video.height": 240})
    source = TestSource(320, 240, 30, X264Encoder(cfg.video))
    got: list[EncodedFrame] = []
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    five = asyncio.Event()

    def publish(frame: EncodedFrame) -> None:
        threads.add(threading.get_ident())
        got.append(frame)
        if len(got) == 5:
            five.set()

    task = asyncio.create_task(source.run(publish))
    await asyncio.wait_for(five.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert threads == {loop_thread}  # never called from the capture thread
    assert got[0].keyframe
    assert all(b.pts > a.pts for a, b in zip(got, got[1:], strict=False))
    assert not any(t.name == "testsrc" for t in threading.enumerate())


class _SlowMachine(Exception):
    pass


class SlowOpus:
    """The real Opus encoder on a machine too slow for real time (an emulated Pi): each period
    holds the event loop for 30 ms, longer than the 20 ms it lasts. Gives up after `periods`."""

    def __init__(self, periods: int) -> None:
        self.inner = OpusEncoder(config.AudioConfig())
        self.name, self.left = self.inner.name, periods

    def encode(self, pcm: bytes, pts: int) -> list[EncodedAudio]:
        self.left -= 1
        if self.left < 0:
            raise _SlowMachine
        time.sleep(0.03)
        return self.inner.encode(pcm, pts)

    def close(self) -> None:
        self.inner.close()


async def test_tone_too_slow_for_real_time_still_lets_the_loop_run() -> None:
    # The watchdog's ping, HTTP and every viewer share this loop: a tone that falls behind must
    # yield each period and skip what is past, never loop until it catches up (systemd killed
    # the daemon on the emulated Pi that way: no ping for 20 s).
    source = ToneSource(1, 20, SlowOpus(periods=60))  # mono, as AudioConfig()
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.005)
            beats += 1

    beating = asyncio.create_task(heartbeat())
    packets: list[EncodedAudio] = []
    started = time.monotonic()
    with pytest.raises(_SlowMachine):
        await source.run(packets.append)
    elapsed = time.monotonic() - started
    beating.cancel()
    # The heartbeat's timer comes due during each 30 ms period, and asyncio runs it within the
    # next two or three periods (before this fix: never, the tone looped until it caught up).
    assert beats >= 60 // 6
    assert len(packets) == source.packets > 0
    assert source.skipped > 0  # fell behind by more than MAX_LAG_S, and skipped to the present
    pts = [p.pts for p in packets]
    assert pts[-1] - pts[0] <= elapsed * AUDIO_CLOCK_RATE  # never ahead of real time
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
