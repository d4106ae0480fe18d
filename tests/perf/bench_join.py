"""Join and steady-state benchmark of the walking skeleton: run it, read the figures.

    .venv/bin/python -m tests.perf.bench_join [--joins 20] [--gop 60] [--viewers 1,2,4,8]

What it does, inside a private network namespace (tests/netns.py), against a daemon started as its
own process (`python -m appliance serve`, 1280x720 at 30 fps, libx264 veryfast, 2 Mbit/s):

1. Time to first frame: `--joins` cold joins in headless Chromium, each a fresh page, started at a
   random phase of the GOP; the figure is the page's own measure, from the start of the WHEP
   connection (createOffer) to the first presented frame (requestVideoFrameCallback).
2. Glass-to-glass latency: one Chromium viewer for `--seconds`; every frame's capture-time stamp
   (shared/LATENCY_STAMP.md) against its presentation time.
3. Daemon CPU per viewer: the daemon's CPU seconds per second (/proc/<pid>/stat) with 0 viewers
   and with N aiortc viewers (each decoding in this process, not the daemon's), and the slope.

Nothing here asserts a time; it prints figures (and JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

import aiohttp

from tests import netns


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_cpu(pid: int, seconds: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def start_daemon(port: int, gop: int, **settings: str) -> subprocess.Popen[bytes]:
    """The daemon on the test source, in its own process, once its stream is ready. `settings`
    are more APPLIANCE_* variables. Every viewer of a benchmark comes from this machine's one
    address, many at once: the per-client limits on sessions are lifted."""
    env = {
        **os.environ,
        "APPLIANCE_VIDEO_GOP": str(gop),
        "APPLIANCE_LOG_LEVEL": "warning",
        "APPLIANCE_HTTP_SESSIONS_BURST": "1000",
        "APPLIANCE_HTTP_SESSIONS_PER_MINUTE": "100000",
        "APPLIANCE_WEBRTC_HALF_OPEN_PER_CLIENT": "1000",
        **settings,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "serve",
            "--source",
            "testsrc",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
    )
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=1) as r:
                if json.load(r)["stream"]["ready"]:
                    return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the daemon did not become ready")


async def joins(url: str, count: int, gop_seconds: float) -> list[float]:
    from tests.e2e.peers import chromium

    results = []
    async with chromium() as browser:
        warm = await browser.new_page()  # start the browser's processes before measuring
        await warm.goto("about:blank")
        for i in range(count):
            await asyncio.sleep(random.uniform(0, gop_seconds))
            page = await browser.new_page()
            await page.goto(f"{url}/")
            await page.wait_for_function(
                "window.viewer && window.viewer.firstFrameMs !== null", timeout=15000, polling=20
            )
            results.append(await page.evaluate("window.viewer.firstFrameMs"))
            await page.close(run_before_unload=True)
            print(f"  join {i + 1:2d}: first frame after {results[-1]:6.1f} ms", flush=True)
        await warm.close()
    return results


async def latency(url: str, seconds: float, query: str = "") -> list[float]:
    from tests.e2e.peers import chromium

    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{url}/{query}")
        await page.wait_for_function(
            "window.viewer && window.viewer.framesPresented > 30", polling=100
        )
        await page.evaluate("window.viewer.latencies = []")
        await asyncio.sleep(seconds)
        return list(await page.evaluate("window.viewer.latencies"))


async def cpu_per_viewer(
    url: str, pid: int, counts: list[int], seconds: float, audio: bool = False
) -> dict[int, float]:
    """The daemon's CPU seconds per second with 0 and each of `counts` aiortc viewers (taking
    the sound too with `audio`), each decoding in this process."""
    from tests.e2e.peers import AiortcViewer

    results = {0: await measure_cpu(pid, seconds)}
    async with aiohttp.ClientSession() as http:
        for n in counts:
            viewers = [AiortcViewer(http, f"{url}/cam/whep", audio=audio) for _ in range(n)]
            await asyncio.gather(*(v.connect() for v in viewers))
            await asyncio.gather(*(v.frames(3) for v in viewers))
            drains = [asyncio.create_task(v.frames(10**6, timeout=3600)) for v in viewers]
            if audio:
                drains += [asyncio.create_task(v.audio_frames(3600, 3600)) for v in viewers]
            results[n] = await measure_cpu(pid, seconds)
            for task in drains:
                task.cancel()
            for v in viewers:
                await v.delete()
                await v.close()
            await asyncio.sleep(1)
    return results


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--joins", type=int, default=20)
    p.add_argument("--gop", type=int, default=60, help="frames between periodic keyframes")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--viewers", default="1,2,4,8")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    problem = netns.enter()
    if problem:
        raise SystemExit(f"cannot make a private network namespace: {problem}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    daemon = start_daemon(port, args.gop)
    try:
        print(f"time to first frame: {args.joins} cold Chromium joins, GOP {args.gop} frames")
        ttff = await joins(url, args.joins, args.gop / 30)
        print(f"glass-to-glass latency: one Chromium viewer for {args.seconds:g} s")
        lat = await latency(url, args.seconds)
        counts = [int(x) for x in args.viewers.split(",")]
        print(f"daemon CPU: 0 and {counts} aiortc viewers, {args.seconds:g} s each")
        cpu = await cpu_per_viewer(url, daemon.pid, counts, args.seconds)
        async with aiohttp.ClientSession() as http, http.get(f"{url}/api/status") as r:
            stream = (await r.json())["stream"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)

    top = max(cpu)
    slope = (cpu[top] - cpu[0]) / top if top else 0.0
    report: dict[str, Any] = {
        "ttff_ms": {
            "median": statistics.median(ttff),
            "p95": percentile(ttff, 95),
            "min": min(ttff),
            "max": max(ttff),
            "n": len(ttff),
        },
        "glass_to_glass_ms": {
            "median": statistics.median(lat),
            "p95": percentile(lat, 95),
            "n": len(lat),
        },
        "daemon_cpu_s_per_s": {str(k): round(v, 4) for k, v in cpu.items()},
        "daemon_cpu_per_viewer_s_per_s": round(slope, 4),
        "stream": {k: stream[k] for k in ("width", "height", "fps", "bitrate", "profile_level_id")},
    }
    print()
    print(
        f"time to first frame   median {report['ttff_ms']['median']:.0f} ms, "
        f"p95 {report['ttff_ms']['p95']:.0f} ms (min {min(ttff):.0f}, max {max(ttff):.0f}, n={len(ttff)})"
    )
    print(
        f"glass-to-glass        median {report['glass_to_glass_ms']['median']:.0f} ms, "
        f"p95 {report['glass_to_glass_ms']['p95']:.0f} ms (n={len(lat)} frames)"
    )
    for n, v in cpu.items():
        print(f"daemon CPU, {n:2d} viewers  {v * 100:5.1f} % of a core")
    print(f"daemon CPU per viewer {slope * 100:5.2f} % of a core")
    print(
        f"stream                {stream['width']}x{stream['height']} {stream['fps']:.1f} fps, "
        f"{stream['bitrate'] / 1e6:.2f} Mbit/s measured, H.264 {stream['profile_level_id']}"
    )
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
