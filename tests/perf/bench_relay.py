"""What a WHIP relay costs: one daemon publishes its camera to a second over WHIP egress.

    .venv/bin/python -m tests.perf.bench_relay [--joins 10] [--gop 60] [--seconds 20]

Inside a private network namespace (tests/netns.py), two daemons run as their own processes: the
camera (test source, 1280x720 at 30 fps, libx264 veryfast, 2 Mbit/s, GOP `--gop`) with an
`[[egress]]` to the hub's `/relay/whip`, and the hub, which takes it in (WHIP ingest) and serves
it at `/relay/`. The figures, each measured directly on the camera and through the hub:

1. Time to first frame: `--joins` cold Chromium joins (viewers with sound), at a random phase
   of the GOP, from the start of the WHEP connection to the first presented frame. Through the
   hub, the join's keyframe request travels hub -> camera as a PLI, and the keyframe comes back
   the same way.
2. Glass-to-glass latency: one Chromium viewer on each for `--seconds`, from the capture-time
   stamp in every frame to its presentation; and on the camera once more with `?audio=0`, the
   picture alone, which the browser need not hold back for lip sync.
3. CPU: the hub's CPU seconds per second while it ingests the stream with no viewer (aiortc's
   receive path, jitter buffer and depacketizer, then our packetizer once), per frame; and the
   camera's, which encodes and sends to the hub.
4. Lip sync through the relay: the test tone against the picture's flash, as Chromium plays the
   relayed stream (tests/perf/bench_audio.py measures the same on the camera directly). The hub
   places the publisher's audio and video on its clock each at its first packet's arrival, not
   through the publisher's sender reports: this says what that costs.

Nothing here asserts a time; it prints figures (and JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests import netns
from tests.perf.bench_audio import av_offsets
from tests.perf.bench_join import joins, latency, measure_cpu, percentile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(port: int, config: Path, ready: str) -> subprocess.Popen[bytes]:
    """A daemon on `port`; returns once the stream `ready` has had its first keyframe."""
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "APPLIANCE_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], env=env)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=1) as r:
                streams = {s["name"]: s for s in json.load(r)["streams"]}
                if streams.get(ready, {}).get("ready"):
                    return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"stream {ready} did not become ready on port {port}")


def write_configs(tmp: Path, hub_url: str, gop: int) -> tuple[Path, Path]:
    """The hub's config (its own camera small and slow, so that the ingest cost stands out) and
    the camera's, with its egress to the hub."""
    hub, camera = tmp / "hub.toml", tmp / "camera.toml"
    hub.write_text(
        '[video]\nsource = "testsrc"\nwidth = 320\nheight = 180\nfps = 5\n'
        f'[http]\nstate_dir = "{tmp}/hub"\n'
    )
    camera.write_text(
        f'[[egress]]\nurl = "{hub_url}/relay/whip"\n'
        f'[video]\nsource = "testsrc"\ngop = {gop}\n[http]\nstate_dir = "{tmp}/cam"\n'
    )
    return hub, camera


def status(port: int) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
        return json.load(r)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--joins", type=int, default=10)
    p.add_argument("--gop", type=int, default=60, help="frames between periodic keyframes")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    problem = netns.enter()
    if problem:
        raise SystemExit(f"cannot make a private network namespace: {problem}")
    camera_port, hub_port = free_port(), free_port()
    camera_url = f"http://127.0.0.1:{camera_port}"
    hub_url = f"http://127.0.0.1:{hub_port}"
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        hub_config, camera_config = write_configs(Path(tmp), hub_url, args.gop)
        hub = start(hub_port, hub_config, "cam")
        camera = start(camera_port, camera_config, "cam")
        try:
            for _ in range(600):
                if any(s["name"] == "relay" and s["ready"] for s in status(hub_port)["streams"]):
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the relayed stream never arrived at the hub")
            # The hub's own test source encodes too: its CPU with and without the relay in.
            print("CPU: hub with the relayed stream, no viewers")
            hub_cpu = await measure_cpu(hub.pid, args.seconds / 2)
            camera_cpu = await measure_cpu(camera.pid, args.seconds / 2)
            relay_fps = next(s for s in status(hub_port)["streams"] if s["name"] == "relay")["fps"]
            camera.send_signal(signal.SIGSTOP)  # no relay input: the hub's baseline
            await asyncio.sleep(1)
            hub_idle = await measure_cpu(hub.pid, args.seconds / 2)
            camera.send_signal(signal.SIGCONT)
            for _ in range(600):
                if status(camera_port)["egress"][0]["state"] == "connected" and any(
                    s["name"] == "relay" and s["fps"] > 25 for s in status(hub_port)["streams"]
                ):
                    break
                await asyncio.sleep(0.1)
            result: dict[str, Any] = {}
            for where, url in (("direct", f"{camera_url}/cam"), ("relayed", f"{hub_url}/relay")):
                print(f"time to first frame, {where}: {args.joins} cold Chromium joins")
                ttff = await joins(url, args.joins, args.gop / 30)
                print(f"glass-to-glass, {where}: one Chromium viewer for {args.seconds:g} s")
                lat = await latency(url, args.seconds)
                result[where] = {"ttff_ms": summary(ttff), "glass_to_glass_ms": summary(lat)}
            print(f"glass-to-glass, direct, picture only (?audio=0): {args.seconds:g} s")
            quiet = await latency(f"{camera_url}/cam", args.seconds, "?audio=0")
            result["direct_picture_only_glass_to_glass_ms"] = summary(quiet)
            print(
                f"A/V offset through the relay: one Chromium viewer, 20 s, then {args.seconds:g} s"
            )
            offsets, raw = await av_offsets(f"{hub_url}/relay", args.seconds, 20.0)
            bridge = statistics.median(raw["bridge"])
            result["relayed_av_offset_ms"] = summary([o - bridge for o in offsets])
            egress = status(camera_port)["egress"][0]
        finally:
            for proc in (camera, hub):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)

    ingest = hub_cpu - hub_idle
    result["cpu"] = {
        "hub_s_per_s": round(hub_cpu, 4),
        "hub_without_relay_s_per_s": round(hub_idle, 4),
        "ingest_s_per_s": round(ingest, 4),
        "ingest_us_per_frame": round(ingest / relay_fps * 1e6, 1) if relay_fps else None,
        "camera_s_per_s": round(camera_cpu, 4),
    }
    result["egress"] = {k: egress[k] for k in ("state", "connects", "failures", "frames")}
    print()
    for where in ("direct", "relayed"):
        t, g = result[where]["ttff_ms"], result[where]["glass_to_glass_ms"]
        print(
            f"{where:8s} time to first frame median {t['median']:4.0f} ms, p95 {t['p95']:4.0f} ms"
            f" (n={t['n']});  glass-to-glass median {g['median']:4.0f} ms,"
            f" p95 {g['p95']:4.0f} ms (n={g['n']})"
        )
    added = (
        result["relayed"]["glass_to_glass_ms"]["median"]
        - result["direct"]["glass_to_glass_ms"]["median"]
    )
    print(f"the relay adds {added:.0f} ms of glass-to-glass latency (medians)")
    q = result["direct_picture_only_glass_to_glass_ms"]
    print(
        f"direct, picture only (?audio=0, playout-delay 0/0): glass-to-glass median "
        f"{q['median']:.0f} ms, p95 {q['p95']:.0f} ms (n={q['n']}): lip sync costs "
        f"{result['direct']['glass_to_glass_ms']['median'] - q['median']:.0f} ms of picture latency"
    )
    c = result["cpu"]
    print(
        f"hub CPU: {c['hub_s_per_s'] * 100:.1f} % of a core with the relay in, "
        f"{c['hub_without_relay_s_per_s'] * 100:.1f} % without: ingest "
        f"{c['ingest_s_per_s'] * 100:.1f} % at {relay_fps:.1f} fps = "
        f"{c['ingest_us_per_frame']} us per frame"
    )
    print(f"camera CPU (encode + egress): {c['camera_s_per_s'] * 100:.1f} % of a core")
    av = result["relayed_av_offset_ms"]
    print(
        f"A/V offset through the relay (audio later when positive, the page's own buffering "
        f"taken off): median {av['median']:+.1f} ms, p5 {percentile(offsets, 5) - bridge:+.1f}, "
        f"p95 {av['p95']:+.1f} (n={av['n']})"
    )
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
