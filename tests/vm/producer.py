"""Feeds a v4l2loopback device with the test pattern as a camera would: MJPEG or H.264 frames.

Runs inside the test machine (`python -m tests.vm.producer /dev/video20 MJPG 640 360 15`). Every
frame carries the capture-time stamp of shared/LATENCY_STAMP.md, so a viewer on the host can tell
that the frames it decodes are the ones written here, passed through the kernel driver and the
daemon. One write() is one frame, as v4l2loopback's write path expects.
"""

from __future__ import annotations

import os
import sys
import time
from fractions import Fraction

import av

from appliance import config
from appliance.capture.testsrc import TestPattern
from appliance.devices import v4l2 as dev
from appliance.encoders.software import X264Encoder


def main(path: str, pixel_format: str, width: int, height: int, fps: int) -> None:
    device = dev.Device(path)
    device.set_format(dev.OUTPUT, pixel_format, width, height, sizeimage=1 << 20)
    pattern = TestPattern(width, height)
    if pixel_format == "H264":
        cfg = config.load(None, env={}, overrides={
            "video.width": width, "video.height": height, "video.fps": fps,
            "video.gop": fps, "video.preset": "ultrafast", "video.bitrate": 1_000_000,
        })  # fmt: skip
        x264 = X264Encoder(cfg.video)

        def encode(picture: object, index: int) -> list[bytes]:
            return [
                f.data
                for f in x264.encode_frame(
                    av.VideoFrame.from_ndarray(picture, format="yuv420p"), index * 90_000 // fps, 0
                )
            ]
    else:
        mjpeg = av.CodecContext.create("mjpeg", "w")
        mjpeg.width, mjpeg.height, mjpeg.pix_fmt = width, height, "yuvj420p"
        mjpeg.time_base = Fraction(1, fps)
        mjpeg.options = {"qscale": "4"}

        def encode(picture: object, index: int) -> list[bytes]:
            frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            frame = frame.reformat(format="yuvj420p")
            frame.pts = index
            return [bytes(p) for p in mjpeg.encode(frame)]

    print(f"producing {pixel_format} {width}x{height}@{fps} into {path}", flush=True)  # noqa: T201
    t0 = time.monotonic()
    index = 0
    while True:
        for data in encode(pattern.render(index, time.time_ns() // 1_000_000), index):
            os.write(device.fd, data)
        index += 1
        delay = t0 + index / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
