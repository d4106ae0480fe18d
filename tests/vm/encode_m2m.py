"""Runs appliance/encoders/v4l2m2m.py against vicodec, a real stateful V4L2 M2M encoder (FWHT),
inside the test machine; prints what came out as JSON for the host test to check.

    python -m tests.vm.encode_m2m
"""

from __future__ import annotations

import json
import sys

import av

from appliance import config
from appliance.capture.testsrc import TestPattern
from appliance.devices import v4l2 as dev
from appliance.encoders.v4l2m2m import M2MEncoder


def vicodec_encoder() -> str:
    for node in dev.video_nodes():
        with dev.Device(node) as d:
            if d.caps.driver == "vicodec" and d.caps.is_m2m:
                coded = dev.CAPTURE_MPLANE if d.caps.multiplanar else dev.CAPTURE
                if "FWHT" in [o.pixel_format for o in d.formats(coded)]:
                    return node
    raise SystemExit("no vicodec encoder node")


def main() -> None:
    node = vicodec_encoder()
    cfg = config.load(None, env={}, overrides={
        "video.width": 320, "video.height": 240, "video.fps": 30, "video.gop": 10,
        "video.m2m_device": node,
    }).video  # fmt: skip
    encoder = M2MEncoder(cfg, coded_format="FWHT")
    pattern = TestPattern(cfg.width, cfg.height)
    out = []
    try:
        for i in range(30):
            if i == 15:
                encoder.force_keyframe()
            frame = av.VideoFrame.from_ndarray(pattern.render(i, i), format="yuv420p")
            out += [
                {
                    "pts": f.pts,
                    "keyframe": f.keyframe,
                    "size": len(f.data),
                    "head": f.data[:28].hex(),
                }
                for f in encoder.encode_frame(frame, i * 3000, i)
            ]
    finally:
        encoder.close()
    report = {"node": node, "name": encoder.name, "multiplanar": encoder.multiplanar, "frames": out}
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
