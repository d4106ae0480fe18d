"""RTSP out, measured: run it, read the figures.

    .venv/bin/python -m tests.perf.bench_rtsp [--readers 50] [--seconds 20]

Inside a private network namespace (tests/netns.py), against a daemon started as its own process
(`python -m appliance serve`, the test source at 1280x720, 30 fps, libx264 veryfast, 2 Mbit/s):

1. The daemon's CPU per packet per reader: its CPU seconds per second (/proc/<pid>/stat) with no
   reader, then with `--readers` light RTSP readers over TCP, over UDP (tests/perf/light_rtsp.py,
   one process: SETUP and PLAY, packets counted, nothing decoded), and with as many light WebRTC
   viewers (tests/perf/light_viewers.py) for comparison; the slope over the readers' packets.
2. Glass-to-glass for one ffmpeg reader (Debian's, TCP, low-delay flags, decoding to grey
   pictures): the capture-time stamp (shared/LATENCY_STAMP.md) of each picture against the wall
   clock when ffmpeg hands it over; median and p95.

Nothing here asserts a time; it prints figures (and JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

from appliance.capture.testsrc import read_stamp
from tests import netns
from tests.e2e.test_browser import free_port
from tests.perf.bench_join import cpu_seconds, percentile, start_daemon

WIDTH, HEIGHT = 1280, 720


def load(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def latest(proc: subprocess.Popen[str]) -> tuple[float, int, int]:
    """(when read, packets so far in all, readers) from the load process's newest line."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    while select.select([proc.stdout], [], [], 0)[0]:
        line = proc.stdout.readline()
    data = json.loads(line)
    packets = data["packets"]
    if isinstance(packets, list):  # light_rtsp: per reader
        return time.monotonic(), sum(packets), len(packets)
    return time.monotonic(), int(packets), len(data["frames"])  # light_viewers: the sum


def measure(pid: int, proc: subprocess.Popen[str] | None, seconds: float) -> dict[str, float]:
    """The daemon's CPU (cores) and, with a load process, packets per second per reader."""
    first = latest(proc) if proc else None
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    out = {"cpu": (c1 - c0) / (t1 - t0)}
    if proc is not None and first is not None:
        last = latest(proc)
        readers = last[2]
        out["per_reader_per_s"] = (last[1] - first[1]) / readers / (last[0] - first[0])
        out["readers"] = float(readers)
    return out


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def glass_to_glass(url: str, seconds: float) -> list[float]:
    """Latency (ms) of each picture one ffmpeg reader decodes, from its stamp."""
    proc = subprocess.Popen(
        [
            "ffmpeg", "-v", "error", "-fflags", "nobuffer", "-flags", "low_delay",
            "-rtsp_transport", "tcp", "-i", url, "-an",
            "-f", "rawvideo", "-pix_fmt", "gray", "-",
        ],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    size = WIDTH * HEIGHT
    out: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            raw = proc.stdout.read(size)
            now_ms = time.time_ns() // 1_000_000
            if len(raw) < size:
                break
            stamp = read_stamp(np.frombuffer(raw, np.uint8).reshape(HEIGHT, WIDTH), WIDTH)
            if stamp is not None:
                out.append(float((now_ms - stamp) % (1 << 32)))
    finally:
        proc.kill()
        proc.wait()
    return out[30:]  # after ffmpeg's start-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    problem = netns.enter()
    if problem:
        sys.exit(f"bench_rtsp: no private network namespace: {problem}")
    port, rtsp_port = free_port(), free_port()
    daemon = start_daemon(
        port, 60,
        APPLIANCE_VIDEO_WIDTH=str(WIDTH), APPLIANCE_VIDEO_HEIGHT=str(HEIGHT),
        APPLIANCE_RTSP_PORT=str(rtsp_port), APPLIANCE_HTTP_MAX_CONNECTIONS_PER_CLIENT="1000",
        APPLIANCE_STREAM_MAX_VIEWERS="1000", APPLIANCE_STREAM_MAX_VIEWERS_TOTAL="1000",
        APPLIANCE_AUDIO_SOURCE="none",
    )  # fmt: skip
    results: dict[str, Any] = {}
    try:
        time.sleep(3)
        idle = measure(daemon.pid, None, args.seconds)["cpu"]
        results["idle_cpu"] = idle
        rtsp_url = f"rtsp://127.0.0.1:{rtsp_port}/cam"
        for name, argv in (
            ("rtsp tcp", ["tests.perf.light_rtsp", rtsp_url, str(args.readers), "tcp"]),
            ("rtsp udp", ["tests.perf.light_rtsp", rtsp_url, str(args.readers), "udp"]),
            ("webrtc", ["tests.perf.light_viewers", f"http://127.0.0.1:{port}/cam/whep",
                        str(args.readers)]),
        ):  # fmt: skip
            proc = load(argv)
            try:
                latest(proc)  # all connected
                time.sleep(3)
                m = measure(daemon.pid, proc, args.seconds)
            finally:
                stop(proc)
            time.sleep(3)
            pps = m.get("per_reader_per_s", 0.0)
            extra = m["cpu"] - idle
            results[name] = {
                "readers": m.get("readers", 0),
                "cpu": m["cpu"],
                "packets_per_s_per_reader": pps,
                "us_per_packet_per_reader": extra * 1e6 / (args.readers * pps) if pps else None,
                "ms_per_s_per_reader": extra * 1e3 / args.readers,
            }
        latency = glass_to_glass(rtsp_url, 15)
        results["ffmpeg glass-to-glass ms"] = {
            "frames": len(latency),
            "median": statistics.median(latency) if latency else None,
            "p95": percentile(latency, 95) if latency else None,
        }
    finally:
        daemon.terminate()
        daemon.wait()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"daemon idle (camera, no reader): {results['idle_cpu'] * 100:.1f} % of a core")
    for name in ("rtsp tcp", "rtsp udp", "webrtc"):
        r = results[name]
        us = r["us_per_packet_per_reader"]
        print(
            f"{name:>8}: {int(r['readers'])} readers, daemon {r['cpu'] * 100:.1f} % of a core, "
            f"{r['packets_per_s_per_reader']:.0f} packets/s each, "
            f"{us:.1f} µs per packet per reader, {r['ms_per_s_per_reader']:.2f} ms/s per reader"
            if us is not None
            else f"{name}: no packets"
        )
    g = results["ffmpeg glass-to-glass ms"]
    print(
        f"ffmpeg over TCP, glass-to-glass: median {g['median']} ms, p95 {g['p95']} ms "
        f"({g['frames']} pictures)"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
