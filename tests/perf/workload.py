"""The benchmark workload: 1080p30 H.264 at about 4 Mbit/s, pre-encoded once and cached.

libx264 veryfast, zero latency, keyframe every 60 frames, Constrained Baseline; a moving test picture
with sensor-like noise so that P-frames are ~15 KB (about 13 packets) and IDRs ~100 KB, as in
shared/research/perf-anchors.md.
"""

from __future__ import annotations

import pickle
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

CACHE = Path(tempfile.gettempdir()) / "appliance-bench-1080p30-4mbit.pickle"


def access_units(frames: int = 180) -> list[tuple[bytes, bool]]:
    """(Annex-B access unit, keyframe) for `frames` frames of the workload."""
    if CACHE.exists():
        cached: list[tuple[bytes, bool]] = pickle.loads(CACHE.read_bytes())
        if len(cached) >= frames:
            return cached[:frames]
    import av

    from appliance.capture.testsrc import TestPattern

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 1920, 1080, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 90000), Fraction(30, 1)
    ctx.bit_rate, ctx.gop_size = 4_000_000, 60
    ctx.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "profile": "baseline",
        "x264-params": "keyint=60:min-keyint=60:scenecut=0",
        "maxrate": "4000000",
        "bufsize": "2000000",
    }
    pattern = TestPattern(1920, 1080)
    rng = np.random.default_rng(1)
    out = []
    for i in range(frames):
        picture = pattern.render(i, i * 33).copy()
        picture[:1080] = np.clip(
            picture[:1080].astype(np.int16) + rng.integers(-6, 7, (1080, 1920), dtype=np.int16),
            0,
            255,
        ).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts, frame.time_base = i * 3000, Fraction(1, 90000)
        out += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame)]
    CACHE.write_bytes(pickle.dumps(out))
    return out


if __name__ == "__main__":
    aus = access_units()
    sizes = [len(a) for a, _ in aus]
    keys = [len(a) for a, k in aus if k]
    print(
        f"{len(aus)} AUs, {sum(sizes) * 8 * 30 / len(aus) / 1e6:.2f} Mbit/s, "
        f"IDR {min(keys)}-{max(keys)} B, median {sorted(sizes)[len(sizes) // 2]} B"
    )
