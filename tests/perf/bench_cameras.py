"""What each extra camera costs the daemon, and what the home page costs it when left open.

    .venv/bin/python -m tests.perf.bench_cameras [--seconds 20] [--cameras 1,2,3]

Part 1: `appliance serve` with 1, 2, 3 `[[camera]]` tables of the built-in test source at
640x360 and at 1280x720, 30 fps, libx264 veryfast (the default preset), no viewer. The daemon's
CPU (utime + stime from /proc/<pid>/stat, as a share of one core) and RSS over `--seconds` after a
warm-up; the cost of an extra camera is the slope of a least-squares line through the points.
The test source draws its picture in numpy, where a real camera's driver would hand a buffer over:
the figure includes that and the encode, all of a camera's work before the packetizer.

Part 2: the daemon with three 640x360 cameras, its CPU with no page open, then with the home page
open in headless Chromium (its /api/streams every 5 s and a snapshot per stream every 5 s). The
difference is what the page costs the device; Chromium's own CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.e2e.peers import chromium
from tests.perf.bench_join import cpu_seconds

CAMERA = """
[[camera]]
name = "cam{i}"
source = "testsrc"
width = {width}
height = {height}
fps = 30
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Daemon:
    def __init__(self, cameras: int, width: int, height: int) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="bench-cameras-")
        path = Path(self.dir.name) / "appliance.toml"
        text = 'log_level = "warning"\n'
        text += "".join(CAMERA.format(i=i, width=width, height=height) for i in range(cameras))
        text += f'[http]\nhost = "127.0.0.1"\nport = {self.port}\nstate_dir = "{self.dir.name}"\n'
        text += '[audio]\nsource = "none"\n[rtsp]\nenabled = false\n'
        path.write_text(text)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(path)],
            stderr=subprocess.DEVNULL,
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the daemon never became healthy")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.dir.cleanup()


def busy(pid: int, seconds: float) -> float:
    """The process's CPU, as a share of one core, over `seconds`."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start) / (time.monotonic() - t0)


def slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def per_camera(sizes: list[tuple[int, int]], counts: list[int], seconds: float) -> None:
    print(
        f"Part 1: the daemon with N test-source cameras, 30 fps, libx264 veryfast ({seconds:g} s)"
    )
    print(f"{'size':>10} {'cameras':>8} {'CPU % core':>11} {'RSS MB':>8}")
    for width, height in sizes:
        cpu_points, rss_points = [], []
        for n in counts:
            daemon = Daemon(n, width, height)
            try:
                daemon.wait_healthy()
                time.sleep(3)  # warm-up: imports done, encoders settled
                cpu = busy(daemon.proc.pid, seconds)
                rss = rss_mb(daemon.proc.pid)
            finally:
                daemon.close()
            cpu_points.append((n, cpu))
            rss_points.append((n, rss))
            print(f"{width}x{height:<5} {n:>8} {100 * cpu:>10.1f} {rss:>8.1f}")
        if len(counts) > 1:
            print(
                f"{width}x{height:<5} per extra camera: {100 * slope(cpu_points):.1f} % of a core, "
                f"{slope(rss_points):.1f} MB"
            )


async def home_page_cost(seconds: float) -> None:
    print("\nPart 2: three 640x360 cameras, the daemon's CPU with and without the home page open")
    daemon = Daemon(3, 640, 360)
    try:
        daemon.wait_healthy()
        await asyncio.sleep(3)
        without = await asyncio.to_thread(busy, daemon.proc.pid, seconds)
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{daemon.url}/")
            await page.wait_for_function("window.page && window.page.snapshots >= 3", timeout=30000)
            start = await page.evaluate("() => window.page.snapshots")
            with_page = await asyncio.to_thread(busy, daemon.proc.pid, seconds)
            snapshots = await page.evaluate("() => window.page.snapshots") - start
    finally:
        daemon.close()
    print(f"  no page:        {100 * without:.1f} % of a core")
    print(
        f"  home page open: {100 * with_page:.1f} % of a core ({snapshots} snapshots in {seconds:g} s)"
    )
    print(f"  the page costs: {100 * (with_page - without):+.1f} % of a core")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--cameras", default="1,2,3")
    args = parser.parse_args()
    counts = [int(n) for n in args.cameras.split(",")]
    per_camera([(640, 360), (1280, 720)], counts, args.seconds)
    asyncio.run(home_page_cost(args.seconds))


if __name__ == "__main__":
    main()
