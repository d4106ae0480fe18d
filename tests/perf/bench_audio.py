"""Audio: lip sync as Chromium plays it, and what audio costs.

    .venv/bin/python -m tests.perf.bench_audio [--seconds 60] [--viewers 8]

Inside a private network namespace (tests/netns.py), against a daemon started as its own process
(test source, 1280x720 at 30 fps, and the test tone: a 100 ms 1 kHz burst on every wall-clock
second, when the picture's flash square turns white):

1. A/V offset: one headless Chromium viewer; after `--warmup` seconds (Chromium's lip sync
   converges over some 20 s), for `--seconds`. The page detects each flash in the frames it
   presents (requestVideoFrameCallback, the square's brightness read back through a canvas) with
   its presentation time and capture-time stamp, and each tone onset in the audio it renders (an
   AudioWorklet on the stream, timed with AudioContext.getOutputTimestamp()). The offset of a
   pair is (onset heard - flash shown) - (second boundary - flash's capture time): positive when
   the sound comes late. Median and spread over every second.
   The measuring path itself delays the sound: a MediaStream into WebAudio is buffered. The page
   calibrates that first (an oscillator through a MediaStream back into the same kind of node,
   onset against its scheduled start) and the figure is reported raw and less that delay.
2. Opus encoding: microseconds per 20 ms frame (libopus through PyAV, in this process).
3. CPU of audio per viewer: the daemon's CPU seconds per second with `--viewers` aiortc viewers
   taking video only, then video and audio; the difference per viewer.

Nothing here asserts a time; it prints figures (and JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time
from typing import Any

from tests import netns
from tests.e2e.test_browser import free_port
from tests.perf.bench_join import cpu_per_viewer, percentile, start_daemon

PAGE_PROBE = """
async ([seconds, warmup]) => {
  const { readStamp } = await import("/web/stamp.js");
  const video = document.getElementById("video");
  while (!video.srcObject || video.srcObject.getAudioTracks().length === 0) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const ctx = new AudioContext();
  const code = `class Onset extends AudioWorkletProcessor {
    constructor() { super(); this.on = false; this.quiet = 0; }
    process(inputs) {
      const ch = inputs[0] && inputs[0][0];
      if (!ch) return true;
      for (let i = 0; i < ch.length; i++) {
        const a = Math.abs(ch[i]);
        if (!this.on && a > 0.1) { this.on = true; this.quiet = 0; this.port.postMessage(currentFrame + i); }
        else if (this.on) { if (a < 0.02) { if (++this.quiet > 4800) this.on = false; } else this.quiet = 0; }
      }
      return true;
    }
  }
  registerProcessor("onset", Onset);`;
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], { type: "application/javascript" })));
  await ctx.resume();
  // Calibration: how late a MediaStream's sound reaches the detector, in context time.
  const osc = ctx.createOscillator();
  const gain = ctx.createGain();
  gain.gain.value = 0;
  const loop = ctx.createMediaStreamDestination();
  osc.connect(gain).connect(loop);
  osc.start();
  const probe = new AudioWorkletNode(ctx, "onset");
  ctx.createMediaStreamSource(loop.stream).connect(probe);
  probe.connect(ctx.destination);
  const bridge = [];
  for (let k = 0; k < 5; k++) {
    const t0 = ctx.currentTime + 0.3;
    gain.gain.setValueAtTime(0.5, t0);
    gain.gain.setValueAtTime(0, t0 + 0.1);
    const frame = await new Promise((r) => { probe.port.onmessage = (e) => r(e.data); });
    bridge.push((frame / ctx.sampleRate - t0) * 1000);
    await new Promise((r) => setTimeout(r, 400));
  }
  osc.stop();
  await new Promise((r) => setTimeout(r, warmup * 1000));
  const node = new AudioWorkletNode(ctx, "onset");
  ctx.createMediaStreamSource(video.srcObject).connect(node);
  node.connect(ctx.destination);
  const tones = [];
  node.port.onmessage = (e) => {
    const t = ctx.getOutputTimestamp();
    tones.push(performance.timeOrigin + t.performanceTime + (e.data / ctx.sampleRate - t.contextTime) * 1000);
  };
  const flashes = [];
  const canvas = document.createElement("canvas");
  const g = canvas.getContext("2d", { willReadFrequently: true });
  let lit = false;
  const onFrame = (now, meta) => {
    const w = meta.width, h = meta.height;
    const size = Math.floor(h / 6) & ~1;
    const top = (h - size - 2 * Math.max(2, Math.floor(h / 90))) & ~1;
    const left = (w - size - 8) & ~1;
    if (canvas.width !== w) { canvas.width = w; canvas.height = h; }
    g.drawImage(video, 0, 0, w, h);
    const px = g.getImageData(left + size / 4, top + size / 4, size / 2, size / 2).data;
    let sum = 0;
    for (let i = 0; i < px.length; i += 4) sum += px[i + 1];
    const bright = sum / (px.length / 4) > 128;
    if (bright && !lit) {
      const stamp = readStamp(video, canvas);
      if (stamp !== null) {
        const full = stamp + 2 ** 32 * Math.round((Date.now() - stamp) / 2 ** 32);
        flashes.push({ shown: performance.timeOrigin + meta.expectedDisplayTime, capture: full });
      }
    }
    lit = bright;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  return { tones, flashes, bridge, sampleRate: ctx.sampleRate, outputLatency: ctx.outputLatency };
}
"""


def pair_offsets(tones: list[float], flashes: list[dict[str, float]]) -> list[float]:
    """Offsets (ms) of each tone onset against the flash of the same second."""
    offsets = []
    for flash in flashes:
        second = flash["capture"] // 1000 * 1000  # the tone burst starts on this boundary
        expected = second - flash["capture"]  # where the onset is, relative to the flash
        heard = [t for t in tones if abs(t - flash["shown"]) < 400]
        if len(heard) == 1:
            offsets.append((heard[0] - flash["shown"]) - expected)
    return offsets


async def av_offsets(url: str, seconds: float, warmup: float) -> tuple[list[float], dict[str, Any]]:
    from tests.e2e.peers import chromium

    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{url}/")
        await page.wait_for_function(
            "window.viewer && window.viewer.framesPresented > 30", polling=100
        )
        result = await page.evaluate(PAGE_PROBE, [seconds, warmup])
    return pair_offsets(result["tones"], result["flashes"]), result


def opus_us_per_frame(frames: int = 2000) -> float:
    import numpy as np

    from appliance.config import AudioConfig
    from appliance.encoders.opus import OpusEncoder

    encoder = OpusEncoder(AudioConfig())
    t = np.arange(960) / 48000
    pcm = (np.sin(2 * np.pi * 1000 * t) * 16000).astype("<i2").tobytes()
    start = time.perf_counter()
    for i in range(frames):
        encoder.encode(pcm, i * 960)
    return (time.perf_counter() - start) / frames * 1e6


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=30.0)
    p.add_argument("--viewers", type=int, default=8)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    problem = netns.enter()
    if problem:
        raise SystemExit(f"cannot make a private network namespace: {problem}")
    encode_us = opus_us_per_frame()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon = start_daemon(
        port,
        60,
        APPLIANCE_AUDIO_SOURCE="testsrc",
    )
    try:
        print(f"A/V offset: one Chromium viewer, {args.warmup:g} s, then {args.seconds:g} s")
        offsets, raw = await av_offsets(url, args.seconds, args.warmup)
        print(f"daemon CPU: {args.viewers} aiortc viewers, video only, then video and audio")
        n = args.viewers
        video_only = (await cpu_per_viewer(url, daemon.pid, [n], 10))[n]
        with_audio = (await cpu_per_viewer(url, daemon.pid, [n], 10, audio=True))[n]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)

    bridge = statistics.median(raw["bridge"])
    corrected = [o - bridge for o in offsets]
    report: dict[str, Any] = {
        "av_offset_ms": {
            "median": statistics.median(corrected) if corrected else None,
            "p5": percentile(corrected, 5) if corrected else None,
            "p95": percentile(corrected, 95) if corrected else None,
            "stdev": statistics.pstdev(corrected) if corrected else None,
            "measuring_path_ms": bridge,
        },
        "av_offset_raw_ms": {
            "median": statistics.median(offsets) if offsets else None,
            "p5": percentile(offsets, 5) if offsets else None,
            "p95": percentile(offsets, 95) if offsets else None,
            "stdev": statistics.pstdev(offsets) if offsets else None,
            "n": len(offsets),
            "flashes": len(raw["flashes"]),
            "onsets": len(raw["tones"]),
            "output_latency_ms": raw["outputLatency"] * 1000,
        },
        "opus_encode_us_per_20ms": round(encode_us, 1),
        "daemon_cpu_s_per_s": {"video": round(video_only, 4), "video_audio": round(with_audio, 4)},
        "audio_cpu_per_viewer_s_per_s": round((with_audio - video_only) / args.viewers, 5),
    }
    a, r = report["av_offset_ms"], report["av_offset_raw_ms"]
    print()
    if offsets:
        print(
            f"A/V offset (audio later when positive)  median {a['median']:+.1f} ms, "
            f"p5 {a['p5']:+.1f}, p95 {a['p95']:+.1f}, stdev {a['stdev']:.1f} ms "
            f"(n={r['n']} of {r['flashes']} flashes, {r['onsets']} onsets)"
        )
        print(
            f"  as measured, with the page's own {bridge:.1f} ms of MediaStream-to-WebAudio "
            f"buffering: median {r['median']:+.1f} ms, p5 {r['p5']:+.1f}, p95 {r['p95']:+.1f}"
        )
    else:
        print(f"A/V offset: no pairs ({a['flashes']} flashes, {a['onsets']} onsets)")
    print(f"Opus encode: {encode_us:.0f} us per 20 ms frame ({encode_us / 200:.2f} % of a core)")
    print(
        f"daemon CPU with {args.viewers} viewers: video {video_only * 100:.1f} %, "
        f"video and audio {with_audio * 100:.1f} % of a core: audio costs "
        f"{report['audio_cpu_per_viewer_s_per_s'] * 100:.2f} % per viewer"
    )
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
