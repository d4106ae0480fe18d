"""What a camera costs before the packetizer: buffer conversion, JPEG decoding, the libx264 encode,
and how much the encoder thread stalls the event loop (the GIL), at 1280x720 and 30 fps.

    .venv/bin/python -m tests.perf.bench_capture

Part 1 times `appliance.encoders.worker.converter` (the encoder thread's first step: a driver buffer
to an av.VideoFrame) for YUYV, NV12 and MJPEG buffers of the test pattern, and the libx264 encode
that follows (ultrafast and veryfast). Part 2 runs that work on a thread at 30 fps, as the camera's
encoder thread does, while the event loop runs a 1 ms timer; the timer's lateness is what every
other task on the loop (RTP fan-out, RTCP, HTTP) sees. The same probe without the thread is the
baseline. The figures are this machine's (x86); a Pi 4 is several times slower per frame.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

from appliance import config
from appliance.capture.testsrc import TestPattern
from appliance.core.videomode import Mode
from appliance.encoders.software import X264Encoder
from appliance.encoders.worker import converter

W, H, FPS = 1280, 720, 30
FRAMES = 90


def buffers(pixel_format: str) -> list[bytes]:
    """Driver-like buffers of the moving test pattern."""
    pattern = TestPattern(W, H)
    out = []
    jpeg: Any = None
    if pixel_format == "MJPG":
        jpeg = av.CodecContext.create("mjpeg", "w")
        jpeg.width, jpeg.height, jpeg.pix_fmt = W, H, "yuvj422p"  # what UVC cameras send
        jpeg.time_base = Fraction(1, FPS)
    for i in range(30):
        frame = av.VideoFrame.from_ndarray(pattern.render(i, i), format="yuv420p")
        if pixel_format == "YUYV":
            out.append(frame.reformat(format="yuyv422").to_ndarray().tobytes())
        elif pixel_format == "NV12":
            out.append(frame.reformat(format="nv12").to_ndarray().tobytes())
        else:
            f = frame.reformat(format="yuvj422p")
            f.pts = i
            out.append(b"".join(bytes(p) for p in jpeg.encode(f)))
    return out


def per_frame_us(fn: Any, items: list[Any], repeat: int = FRAMES) -> tuple[float, float]:
    times = []
    for i in range(repeat):
        t = time.perf_counter_ns()
        fn(items[i % len(items)], i)
        times.append((time.perf_counter_ns() - t) / 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95)]


def encoder(preset: str) -> X264Encoder:
    overrides = {"video.width": W, "video.height": H, "video.fps": FPS, "video.preset": preset}
    return X264Encoder(config.load(None, env={}, overrides=overrides).video)


async def loop_lag(seconds: float) -> list[float]:
    """Lateness (ms) of a 1 ms timer on the event loop."""
    lags = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append((time.perf_counter() - t - 0.001) * 1000)
    return lags


def pipeline(stop: threading.Event, convert: Any, items: list[bytes], preset: str) -> None:
    enc = encoder(preset)
    t0 = time.monotonic()
    i = 0
    while not stop.is_set():
        for frame in convert(memoryview(items[i % len(items)])):
            enc.encode_frame(frame, i * 3000, 0)
        i += 1
        delay = t0 + i / FPS - time.monotonic()
        if delay > 0:
            stop.wait(delay)


def summary(lags: list[float]) -> str:
    lags = sorted(lags)
    p = lambda q: lags[min(len(lags) - 1, int(len(lags) * q))]  # noqa: E731
    return f"p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {lags[-1]:.2f} ms ({len(lags)} ticks)"


async def main() -> None:
    print(f"{W}x{H} @ {FPS} fps, test pattern, {FRAMES} frames per figure (median / p95)")
    print("\n1. per frame, on the encoder thread")
    inputs = {fmt: buffers(fmt) for fmt in ("YUYV", "NV12", "MJPG")}
    for fmt, items in inputs.items():
        stride = W * 2 if fmt == "YUYV" else (W if fmt == "NV12" else 0)
        convert = converter(Mode(fmt, W, H, Fraction(FPS)), stride)
        med, p95 = per_frame_us(lambda b, i, c=convert: c(memoryview(b)), items)
        sizes = f", JPEG {np.mean([len(b) for b in items]) / 1024:.0f} KiB" if fmt == "MJPG" else ""
        print(
            f"   {fmt:<5} buffer -> av.VideoFrame     {med / 1000:6.2f} / {p95 / 1000:6.2f} ms{sizes}"
        )
    frames = [
        converter(Mode("NV12", W, H, Fraction(FPS)), W)(memoryview(b))[0] for b in inputs["NV12"]
    ]
    for preset in ("ultrafast", "veryfast"):
        enc = encoder(preset)
        med, p95 = per_frame_us(lambda f, i, e=enc: e.encode_frame(f, i * 3000, 0), frames)
        print(f"   libx264 {preset:<9} encode (from NV12) {med / 1000:6.2f} / {p95 / 1000:6.2f} ms")

    print("\n2. event-loop lateness of a 1 ms timer, 10 s each")
    print(f"   no capture thread:            {summary(await loop_lag(10))}")
    for fmt, preset in (("YUYV", "veryfast"), ("MJPG", "veryfast"), ("MJPG", "ultrafast")):
        stride = W * 2 if fmt == "YUYV" else 0
        convert = converter(Mode(fmt, W, H, Fraction(FPS)), stride)
        stop = threading.Event()
        thread = threading.Thread(target=pipeline, args=(stop, convert, inputs[fmt], preset))
        thread.start()
        try:
            lags = await loop_lag(10)
        finally:
            stop.set()
            thread.join()
        print(f"   {fmt} + libx264 {preset:<9}:  {summary(lags)}")


if __name__ == "__main__":
    asyncio.run(main())
