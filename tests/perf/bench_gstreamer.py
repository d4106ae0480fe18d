"""The GStreamer pipeline source against the built-in libx264 path, same settings: run it, read
the figures.

    .venv/bin/python -m tests.perf.bench_gstreamer [--seconds 20] [--width 1280 --height 720]

Each source runs alone in this process for `--seconds` at 30 fps, libx264 veryfast, 2 Mbit/s,
keyframe every 60 pictures, Constrained Baseline, zero latency:

- built-in: the test pattern (numpy drawing, with the latency stamp) into `X264Encoder` (PyAV);
- gstreamer: `videotestsrc is-live=true pattern=ball ! x264enc ...` through `GstSource`.

Figures: the process's CPU (user + system, all threads) as % of a core; the built-in pattern's
drawing cost alone (rendered without encoding), so the encode paths can be compared; and capture
to access unit on the event loop (`capture_ns` against the wall clock when it is published),
median and p95. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from appliance import config
from appliance.capture.gstreamer import GstSource
from appliance.capture.testsrc import TestPattern, TestSource
from appliance.core.media import EncodedFrame
from appliance.encoders.software import X264Encoder


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run(source: Any, seconds: float) -> dict[str, float]:
    delays: list[float] = []
    frames = 0

    def publish(frame: EncodedFrame) -> None:
        nonlocal frames
        frames += 1
        delays.append((time.time_ns() - frame.capture_ns) / 1e6)

    task = asyncio.create_task(source.run(publish))
    await asyncio.sleep(2.0)  # started, first keyframe out
    delays.clear()
    frames = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
    fps = frames / (time.monotonic() - t0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return {
        "cpu_percent": round(100 * cpu, 1),
        "fps": round(fps, 1),
        "capture_to_au_median_ms": round(statistics.median(delays), 1),
        "capture_to_au_p95_ms": round(percentile(delays, 95), 1),
    }


def drawing_cost(width: int, height: int, frames: int = 150) -> float:
    """% of a core the built-in pattern's drawing alone takes at 30 fps."""
    pattern = TestPattern(width, height)
    started = time.process_time()
    for i in range(frames):
        pattern.render(i, time.time_ns() // 1_000_000)
    return round(100 * (time.process_time() - started) / frames * 30, 1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    w, h = args.width, args.height
    video = config.load(
        None,
        env={},
        overrides={
            "video.width": w, "video.height": h, "video.fps": 30, "video.bitrate": 2_000_000,
            "video.gop": 60, "video.preset": "veryfast",
        },
    ).video  # fmt: skip
    pipeline = (
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},"
        "framerate=30/1,format=I420 ! x264enc tune=zerolatency speed-preset=veryfast bitrate=2000"
        " key-int-max=60 ! video/x-h264,profile=constrained-baseline"
    )
    results = {
        "built-in": await run(TestSource(w, h, 30, X264Encoder(video)), args.seconds),
        "gstreamer": await run(GstSource(pipeline), args.seconds),
        "built-in drawing alone (cpu_percent)": drawing_cost(w, h),
    }
    if args.json:
        print(json.dumps(results))
        return
    for name, figures in results.items():
        print(f"{name}: {figures}")


if __name__ == "__main__":
    asyncio.run(main())
