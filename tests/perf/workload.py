"""The benchmark workloads, pre-encoded once and cached:

- "1080p" (the default): 1080p30 H.264 at about 4 Mbit/s. P-frames are ~15 KB (about 13 packets)
  and IDRs ~100 KB, as in shared/research/perf-anchors.md.
- "720p": 720p30 at about 600 kbit/s, what most cameras stream: one or two packets per P-frame,
  so what a viewer costs regardless of its packets dominates.

libx264 veryfast, zero latency, keyframe every 60 frames, Constrained Baseline; a moving test picture
with sensor-like noise.
"""

from __future__ import annotations

import pickle
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

WORKLOADS = {"1080p": (1920, 1080, 4_000_000), "720p": (1280, 720, 600_000)}


def cache_path(workload: str) -> Path:
    width, height, bitrate = WORKLOADS[workload]
    return Path(tempfile.gettempdir()) / f"appliance-bench-{height}p30-{bitrate // 1000}k.pickle"


def access_units(frames: int = 180, workload: str = "1080p") -> list[tuple[bytes, bool]]:
    """(Annex-B access unit, keyframe) for `frames` frames of the workload."""
    cache = cache_path(workload)
    if cache.exists():
        cached: list[tuple[bytes, bool]] = pickle.loads(cache.read_bytes())
        if len(cached) >= frames:
            return cached[:frames]
    import av

    from appliance.capture.testsrc import TestPattern

    width, height, bitrate = WORKLOADS[workload]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 90000), Fraction(30, 1)
    ctx.bit_rate, ctx.gop_size = bitrate, 60
    ctx.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "profile": "baseline",
        "x264-params": "keyint=60:min-keyint=60:scenecut=0",
        "maxrate": str(bitrate),
        "bufsize": str(bitrate // 2),
    }
    pattern = TestPattern(width, height)
    rng = np.random.default_rng(1)
    out = []
    for i in range(frames):
        picture = pattern.render(i, i * 33).copy()
        picture[:height] = np.clip(
            picture[:height].astype(np.int16)
            + rng.integers(-6, 7, (height, width), dtype=np.int16),
            0,
            255,
        ).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts, frame.time_base = i * 3000, Fraction(1, 90000)
        out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    cache.write_bytes(pickle.dumps(out))
    return out


if __name__ == "__main__":
    import sys

    aus = access_units(workload=sys.argv[1] if len(sys.argv) > 1 else "1080p")
    sizes = [len(a) for a, _ in aus]
    keys = [len(a) for a, k in aus if k]
    print(
        f"{len(aus)} AUs, {sum(sizes) * 8 * 30 / len(aus) / 1e6:.2f} Mbit/s, "
        f"IDR {min(keys)}-{max(keys)} B, median {sorted(sizes)[len(sizes) // 2]} B"
    )
