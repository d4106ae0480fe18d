"""Fan-out to many real WebRTC viewers: ours against aiortc's path, the same stream, one process.

    .venv/bin/python -m tests.perf.bench_fanout [--fast 10,50,100,200] [--aiortc 10,25,50] [--seconds 10]
        [--janus 10,50,100,200] [--pin] [--workload 1080p|720p] [--max-load 0.8] [--profile FILE]

Inside a private network namespace (tests/netns.py). This process is the daemon: the real Stream,
sessions, WHEP over aiohttp, and `webrtc.sender` set to "fast" or "aiortc"; its camera is the
workload of tests/perf/workload.py (1080p30 at ~4 Mbit/s, or 720p30 at ~600 kbit/s; GOP 2 s)
replayed at 30 fps (pre-encoded, so it cannot honour keyframe requests: viewers start at the next
IDR). The viewers are
tests/perf/light_viewers.py in another process: real ICE, DTLS and RTCP, RTP only counted.

Per case, over `--seconds` once every viewer receives video:
- daemon CPU (getrusage of this process) and, after subtracting the same replay with no viewers,
  µs of CPU per packet per viewer;
- fan-out skew: access unit published → its last packet handed to the kernel for the last viewer
  (fast: measured around Stream.publish; aiortc: publish → the last viewer's marker packet in
  RTCDtlsTransport._send_rtp), p50 and p99; on the fast path also P-frames' p99 and keyframes' max;
- the slowest viewer's received frame rate;
- RSS, and its slope per viewer between the first and the last case; for our daemon also what
  malloc holds (glibc's mallinfo2, after a collection): C libraries' memory and Python's larger
  objects, not Python's small objects (their arenas come from mmap, outside malloc).

`--janus N,...`: the same workload (plain RTP, packetized as ours) and the same viewers through
Debian's Janus, its streaming plugin on one event loop (tests/perf/janus_fanout.py): its CPU (all
its threads) and RSS from /proc. `--pin`: the server (this process, or Janus) on core 0, the
viewers (and Janus's feed) on core 1.
`--max-load 0.8`: the fast path's viewers are admitted as the daemon admits them (stream.max_load,
devices/headroom.py): those past its room get 503, and the figures are those of the admitted.
The fast path's packets go through the C packet loop (send/packetloop.c) where it was built;
`APPLIANCE_PACKET_LOOP=python` in the environment measures the Python loop instead. Lines say
which: `fast/c` or `fast/py`.
`--profile FILE`: cProfile of the daemon over the measurement window of the largest fast-path case
(pstats format; cProfile's own overhead inflates Python-heavy code, so read it for shares only).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import gc
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance import config, rtc
from appliance.core.media import EncodedFrame
from appliance.core.stream import Stream
from appliance.devices.headroom import HeadroomWatch
from appliance.http.sessions import SessionRegistry
from appliance.http.status import STATUS_KEY
from appliance.send import native
from tests import netns
from tests.apps import app_for
from tests.perf.janus_fanout import RtpFeeder, janus_streaming
from tests.perf.workload import WORKLOADS, access_units


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def malloc_mb() -> float:
    """Bytes malloc holds for this process now (glibc's mallinfo2: in use, mmapped included),
    in MB: what C libraries (OpenSSL, libsrtp) and Python's objects over 512 bytes hold, not
    Python's small objects (pymalloc's arenas are mmapped apart). NaN without glibc 2.33+."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return float("nan")
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return float(info.uordblks + info.hblkhd) / 2**20


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def kernel_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round((len(ordered) - 1) * p / 100)))]


class Replay:
    """The camera: the workload's access units at 30 fps, with capture times."""

    def __init__(self, stream: Stream, aus: list[tuple[bytes, bool]]) -> None:
        self.stream, self.aus = stream, aus
        self.published: list[float] = []
        self.markers: list[float] = []  # aiortc path: marker-packet send times
        self.skews: list[float] = []
        self.key_skews_ms: list[float] = []  # fast path: fan-out time of keyframes, P-frames
        self.p_skews_ms: list[float] = []
        self.expected = 0

    async def run(self) -> None:
        t0 = time.monotonic()
        i = 0
        while True:
            await asyncio.sleep(max(0.0, t0 + i / 30 - time.monotonic()))
            self._close_frame()
            au, key = self.aus[i % len(self.aus)]
            now = time.perf_counter()
            self.published.append(now)
            self.markers = []
            done = len(self.stream.fanout_ns)
            self.stream.publish(EncodedFrame(au, i * 3000, key, time.time_ns()))
            if len(self.stream.fanout_ns) > done or done == self.stream.fanout_ns.maxlen:
                (self.key_skews_ms if key else self.p_skews_ms).append(
                    self.stream.fanout_ns[-1] / 1e6
                )
            i += 1

    def _close_frame(self) -> None:
        # aiortc path: a frame's skew is known when the next one is due
        if self.expected and self.published:
            if len(self.markers) >= self.expected:
                self.skews.append(max(self.markers[: self.expected]) - self.published[-1])
            else:
                self.skews.append(float("inf"))  # some viewer had not finished this frame


def hook_aiortc_sends(replay: Replay) -> Any:
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    original = RTCDtlsTransport._send_rtp

    async def send_rtp(self: Any, data: bytes) -> None:
        await original(self, data)
        if data[1] & 0x80 and not 192 <= data[1] <= 223:  # an RTP marker, not RTCP
            replay.markers.append(time.perf_counter())

    RTCDtlsTransport._send_rtp = send_rtp  # type: ignore[method-assign]
    return lambda: setattr(RTCDtlsTransport, "_send_rtp", original)


class Viewers:
    """tests/perf/light_viewers.py in another process (on the other core with --pin)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.admitted: list[int] = []  # which of them the server let in
        self.frames0: list[int] = []  # their frames when the measurement starts

    @classmethod
    async def start(cls, url: str, count: int, janus: bool = False) -> Viewers:
        """Until every viewer is answered (admitted and receiving, or refused)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.perf.light_viewers", url, str(count),
            *(["--janus"] if janus else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_pin_load,
        )  # fmt: skip
        self = cls(process)
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            report = json.loads(line)
            refused = report["refused"]
            self.admitted = [i for i, no in enumerate(refused) if not no]
            if (
                report["connected"] + sum(refused) == count
                and self.admitted
                and min(report["frames"][i] for i in self.admitted) > 0
            ):
                break
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"viewers did not all start: {report['connected']} connected")
        while True:  # skip what queued up while the viewers were joining
            line = await asyncio.wait_for(process.stdout.readline(), 10)
            if (
                json.loads(line)["connected"] == len(self.admitted)
                and time.monotonic() - deadline > -119.5
            ):
                break
        self.frames0 = json.loads(line)["frames"]
        return self

    async def min_fps(self, since: float) -> float:
        """The slowest admitted viewer's frame rate since `since` (time.monotonic())."""
        assert self.process.stdout is not None
        # the load process reports every second: take its newest line, stamped by arrival
        before = time.monotonic()
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), 10)
            if time.monotonic() - before > 0.5:
                break
        report = json.loads(line)
        span = time.monotonic() - since
        return min(report["frames"][i] - self.frames0[i] for i in self.admitted) / span

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except asyncio.TimeoutError:
            self.process.kill()


PIN: dict[str, set[int]] = {}  # --pin: "server" and "load" cores


def _pin_load() -> None:
    if PIN:
        os.sched_setaffinity(0, PIN["load"])


def _pin_server() -> None:
    if PIN:
        os.sched_setaffinity(0, PIN["server"])


def proc_cpu_s(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU seconds of process `pid`, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    user, system = int(fields[11]) / tick, int(fields[12]) / tick
    return user + system, system


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def janus_case(viewers: int, seconds: float, aus: list[tuple[bytes, bool]]) -> dict[str, Any]:
    """The same workload and viewers through Debian's Janus (tests/perf/janus_fanout.py)."""
    with tempfile.TemporaryDirectory() as folder:
        async with janus_streaming(Path(folder), preexec_fn=_pin_server) as janus:
            feeder = RtpFeeder(janus.video_port)

            async def feed() -> None:
                t0 = time.monotonic()
                for i in itertools.count():
                    await asyncio.sleep(max(0.0, t0 + i / 30 - time.monotonic()))
                    au, key = aus[i % len(aus)]
                    feeder.send(au, i * 3000, key)

            task = asyncio.create_task(feed())
            load = None
            try:
                await asyncio.sleep(1.0)
                if viewers:
                    load = await Viewers.start(janus.api, viewers, janus=True)
                (c0, k0), t0 = proc_cpu_s(janus.pid), time.monotonic()
                await asyncio.sleep(seconds)
                (c1, k1), elapsed = proc_cpu_s(janus.pid), time.monotonic() - t0
                return {
                    "path": "janus",
                    "viewers": viewers,
                    "admitted": len(load.admitted) if load else 0,
                    "cpu": (c1 - c0) / elapsed,
                    "kernel": (k1 - k0) / elapsed,
                    "rss_mb": proc_rss_mb(janus.pid),
                    "min_fps": await load.min_fps(t0) if load is not None else 0.0,
                    "seconds": elapsed,
                }
            finally:
                if load is not None:
                    await load.stop()
                task.cancel()
                feeder.close()


async def case(
    path: str,
    viewers: int,
    seconds: float,
    aus: list[tuple[bytes, bool]],
    profile: str | None = None,
    max_load: float | None = None,
) -> dict[str, Any]:
    cfg = config.load(
        None,
        env={},
        overrides={
            "http.host": "127.0.0.1",
            "http.port": 0,
            "webrtc.sender": path,
            "stream.max_viewers": 1000,
            "stream.ring_packets": 4096,
            "webrtc.connect_timeout": 120.0,
            "http.sessions_per_minute": 100_000,  # every viewer comes from 127.0.0.1
            "http.sessions_burst": 10_000,
            "webrtc.half_open_per_client": 10_000,  # ... and connects ten at a time
            "stream.max_viewers_total": 1000,
            "stream.max_load": max_load or 1.0,
        },
    )
    stream = Stream("cam", mtu=cfg.stream.mtu, ring_packets=cfg.stream.ring_packets)
    sessions = SessionRegistry()
    app = app_for(cfg, stream, sessions)
    watch = None
    if max_load is not None:  # admission by headroom, as the daemon does (devices/headroom.py)
        watch = app[STATUS_KEY].headroom = HeadroomWatch(max_load, sessions.count)
        watching = asyncio.create_task(watch.run())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    replay = Replay(stream, aus)
    unhook = hook_aiortc_sends(replay) if path == "aiortc" else (lambda: None)
    task = asyncio.create_task(replay.run())
    load: Viewers | None = None
    try:
        await asyncio.sleep(0.5)
        admitted: list[int] = []
        if viewers:
            load = await Viewers.start(f"http://127.0.0.1:{port}/cam/whep", viewers)
            admitted = load.admitted
            replay.expected = len(admitted) if path == "aiortc" else 0
        replay.skews.clear()
        replay.key_skews_ms.clear()
        replay.p_skews_ms.clear()
        stream.fanout_ns.clear()
        sent0 = sum(s.media.describe().get("packets", 0) for s in sessions)
        profiler = cProfile.Profile() if profile else None
        c0, k0, t0 = cpu_s(), kernel_s(), time.monotonic()
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(seconds)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        cpu = (cpu_s() - c0) / (time.monotonic() - t0)
        kernel = (kernel_s() - k0) / (time.monotonic() - t0)
        elapsed = time.monotonic() - t0
        rss = rss_mb()
        gc.collect()
        malloced = malloc_mb()
        sent = sum(s.media.describe().get("packets", 0) for s in sessions) - sent0
        min_fps = await load.min_fps(t0) if load is not None else 0.0
        skews = (
            [ns / 1e6 for ns in stream.fanout_ns]
            if path == "fast"
            else [s * 1e3 for s in replay.skews]
        )
        return {
            "path": path,
            "viewers": viewers,
            "cpu": cpu,
            "kernel": kernel,
            "rss_mb": rss,
            "malloc_mb": malloced,
            "packets_sent": sent,
            "skew_p50_ms": pct(skews, 50),
            "skew_p99_ms": pct(skews, 99),
            "min_fps": min_fps,
            "admitted": len(admitted) if viewers else 0,
            "p_frame_skew_p99_ms": pct(replay.p_skews_ms, 99),
            "keyframe_skew_max_ms": max(replay.key_skews_ms, default=float("nan")),
            "seconds": elapsed,
        }
    finally:
        if load is not None:
            await load.stop()
        task.cancel()
        if watch is not None:
            watching.cancel()
        await sessions.close_all("benchmark done")
        await runner.cleanup()
        stream.close()
        unhook()


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fast", default="10,50,100,200")
    p.add_argument("--aiortc", default="10,25,50")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="1080p")
    p.add_argument("--profile", metavar="FILE")
    p.add_argument(
        "--max-load",
        type=float,
        help="admit fast-path viewers by the daemon's headroom (stream.max_load), as it does; "
        "by default every viewer is admitted, to find where the daemon breaks",
    )
    p.add_argument(
        "--janus", default="", help="viewer counts for Debian's Janus (streaming plugin) too"
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="the server (this process, or Janus) on core 0, the viewers (and Janus's feed) on 1",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.pin:
        PIN.update(server={0}, load={1})
    problem = netns.enter()
    if problem:
        raise SystemExit(f"cannot make a private network namespace: {problem}")
    rtc.install()  # as the daemon does at start-up (app.py)
    aus = access_units(workload=args.workload)
    pkts_per_s = sum(-(-len(au) // 1290) for au, _ in aus) * 30 / len(aus)
    results = []
    fast_label = "fast/c" if native.available() else "fast/py"
    for path, counts in (("fast", args.fast), ("aiortc", args.aiortc), ("janus", args.janus)):
        if not counts:
            continue
        if path == "janus":
            _pin_load()  # Janus alone on the server's core; its feed with the viewers
            base = await janus_case(0, args.seconds, aus)
        else:
            _pin_server()
            base = await case(path, 0, args.seconds, aus)
        results.append(base)
        what = "its RTP input" if path == "janus" else "replay and packetizing"
        label = fast_label if path == "fast" else path
        print(
            f"{label:7}    0 viewers: server CPU {base['cpu'] * 100:5.1f} % ({what}), "
            f"RSS {base['rss_mb']:6.1f} MB",
            flush=True,
        )
        ramp = []
        ns = [int(x) for x in counts.split(",") if x and int(x) > 0]  # 0: the base, always run
        for n in ns:
            profile = args.profile if path == "fast" and n == max(ns) else None
            max_load = args.max_load if path == "fast" else None
            if path == "janus":
                r = await janus_case(n, args.seconds, aus)
            else:
                r = await case(path, n, args.seconds, aus, profile, max_load)
            watching = r["admitted"]
            r["us_per_packet_viewer"] = (r["cpu"] - base["cpu"]) / (pkts_per_s * watching) * 1e6
            r["ms_per_viewer_s"] = (r["cpu"] - base["cpu"]) / watching * 1e3
            results.append(r)
            ramp.append(r)
            skew = (
                f"skew p50 {r['skew_p50_ms']:6.2f} p99 {r['skew_p99_ms']:6.2f} ms, "
                if "skew_p50_ms" in r
                else ""
            )
            print(
                f"{label:7} {n:4d} viewers: server CPU {r['cpu'] * 100:5.1f} % "
                f"(kernel {r['kernel'] * 100:4.1f}) "
                f"({r['us_per_packet_viewer']:5.2f} µs/pkt/viewer, {r['ms_per_viewer_s']:4.2f} ms/s "
                f"per viewer), {skew}slowest viewer {r['min_fps']:4.1f} fps, "
                f"RSS {r['rss_mb']:6.1f} MB",
                flush=True,
            )
            if watching < n:
                print(
                    f"{'':6} {'':4}          admitted {watching} of {n} (stream.max_load "
                    f"{args.max_load}): the others got 503",
                    flush=True,
                )
            if path == "fast":
                print(
                    f"{'':6} {'':4}          fan-out of P-frames p99 {r['p_frame_skew_p99_ms']:6.2f} ms, "
                    f"of keyframes max {r['keyframe_skew_max_ms']:6.2f} ms",
                    flush=True,
                )
        if len(ramp) >= 2:
            first, last = ramp[0], ramp[-1]
            added = last["viewers"] - first["viewers"]
            slope = (last["rss_mb"] - first["rss_mb"]) * 1024 / added
            malloced = (last.get("malloc_mb", float("nan")) - first.get("malloc_mb", 0)) * 1024
            held = "" if malloced != malloced else f", malloc'd {malloced / added:.0f} KB"
            print(
                f"{label:7} memory per viewer (RSS slope {first['viewers']}→{last['viewers']} viewers): "
                f"{slope:.0f} KB{held}",
                flush=True,
            )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
