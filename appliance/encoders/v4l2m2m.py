"""Hardware H.264 through the V4L2 memory-to-memory stateful encoder interface.

Edge module. This is the kernel's documented stateful encoder API ("Memory-to-Memory Stateful Video
Encoder Interface"), which the Raspberry Pi 4's `bcm2835-codec` (`/dev/video11`) implements, with
single-planar or multi-planar queues:

1. S_FMT on the CAPTURE queue (coded: H264, size), then on the OUTPUT queue (raw: YU12 or NV12);
2. S_PARM on OUTPUT for the frame rate; controls for bitrate, GOP (`H264_I_PERIOD` and
   `GOP_SIZE`), profile, level and `REPEAT_SEQ_HEADER` (SPS/PPS before every IDR, so a viewer can
   join at any keyframe);
3. REQBUFS and mmap on both queues, every CAPTURE buffer queued, STREAMON on both;
4. per picture: copy into a free OUTPUT buffer, QBUF it with the capture timestamp, wait for the
   CAPTURE buffer, copy the access unit out, QBUF it back. `FORCE_KEY_FRAME` makes the next one an
   IDR: that is how a viewer's keyframe request reaches the hardware.

`encode_frame` runs on the camera's encoder thread (never the event loop) and waits for the
encoder with `select()`, at most ENCODE_TIMEOUT per picture. Jetson's encoder is reached through
libv4l2's plugin rather than plain ioctls; that path waits for hardware (see the note in README).
"""

from __future__ import annotations

import logging
import os
import select
import time
from fractions import Fraction
from typing import Any

import v4l2 as V4L2

from appliance.config import VideoConfig
from appliance.core import h264
from appliance.core.errors import DeviceError
from appliance.core.media import EncodedFrame
from appliance.devices import v4l2 as dev

logger = logging.getLogger(__name__)

OUTPUT_BUFFERS = 2
CAPTURE_BUFFERS = 4
ENCODE_TIMEOUT = 1.0
CODED_BUFFER_SIZE = 1 << 20  # 1 MiB: an IDR at level 4 and 10 Mbit/s fits many times over

# V4L2_MPEG_VIDEO_H264_LEVEL_* enum values by level_idc.
LEVELS = {
    10: 0,
    11: 2,
    12: 3,
    13: 4,
    20: 5,
    21: 6,
    22: 7,
    30: 8,
    31: 9,
    32: 10,
    40: 11,
    41: 12,
    42: 13,
    50: 14,
    51: 15,
}
PROFILES = {"constrained-baseline": 1, "baseline": 0, "main": 2, "high": 4}  # V4L2_..._PROFILE_*


def v4l2_level(level_idc: int) -> int:
    """The V4L2 level enum for a level_idc (the smallest V4L2 level at or above it)."""
    for idc in sorted(LEVELS):
        if idc >= level_idc:
            return LEVELS[idc]
    raise ValueError(f"H.264 level_idc {level_idc} is above 5.1")


def is_h264_encoder(path: str) -> bool:
    """`path` exists and is a V4L2 M2M device that produces H.264."""
    if not os.path.exists(path):
        return False
    try:
        with dev.Device(path) as d:
            if not d.caps.is_m2m:
                return False
            coded = dev.CAPTURE_MPLANE if d.caps.multiplanar else dev.CAPTURE
            return any(o.pixel_format == "H264" for o in d.formats(coded))
    except DeviceError:
        return False


class M2MEncoder:
    """One stateful V4L2 M2M encoder session, fed I420 (or NV12) pictures.

    `coded_format` is H264 in the product; the tests also run it with FWHT against the kernel's
    vicodec driver, the one stateful M2M encoder a stock kernel can offer without hardware."""

    def __init__(self, cfg: VideoConfig, coded_format: str = "H264") -> None:
        self.level_idc = h264.min_level(cfg.width, cfg.height, cfg.fps, cfg.bitrate)
        self._dev = dev.Device(cfg.m2m_device)
        d = self._dev
        try:
            if not d.caps.is_m2m:
                raise DeviceError(f"{cfg.m2m_device} ({d.caps.card}) is not a mem-to-mem device")
            mp = self.multiplanar = d.caps.multiplanar
            self._coded = dev.CAPTURE_MPLANE if mp else dev.CAPTURE
            self._raw = dev.OUTPUT_MPLANE if mp else dev.OUTPUT
            raw_formats = [o.pixel_format for o in d.formats(self._raw)]
            self._raw_format = next((f for f in ("YU12", "NV12") if f in raw_formats), None)
            if self._raw_format is None:
                raise DeviceError(
                    f"{cfg.m2m_device}: takes none of YU12, NV12 (offers {', '.join(raw_formats)})"
                )
            coded = [o.pixel_format for o in d.formats(self._coded)]
            if coded_format not in coded:
                raise DeviceError(
                    f"{cfg.m2m_device} ({d.caps.card}) does not encode {coded_format} "
                    f"(it produces {', '.join(coded) or 'nothing'})"
                )
            d.set_format(self._coded, coded_format, cfg.width, cfg.height, CODED_BUFFER_SIZE)
            w, h, self._stride, self._size = d.set_format(
                self._raw, self._raw_format, cfg.width, cfg.height
            )
            if w < cfg.width or h < cfg.height:
                raise DeviceError(
                    f"{cfg.m2m_device}: cannot encode {cfg.width}x{cfg.height} "
                    f"(the driver offers {w}x{h})"
                )
            if (w, h) != (cfg.width, cfg.height):  # aligned (Pi 4: 1080 → 1088): crop to visible
                d.set_crop(self._raw, cfg.width, cfg.height)
            self._rows = h
            d.set_rate(self._raw, Fraction(cfg.fps))
            self._set(V4L2.V4L2_CID_MPEG_VIDEO_GOP_SIZE, cfg.gop, "GOP size")
            if coded_format == "H264":
                self._set(V4L2.V4L2_CID_MPEG_VIDEO_BITRATE, cfg.bitrate, "bitrate")
                self._set(V4L2.V4L2_CID_MPEG_VIDEO_H264_I_PERIOD, cfg.gop, "H.264 I period")
                self._set(V4L2.V4L2_CID_MPEG_VIDEO_H264_PROFILE, PROFILES[cfg.profile], "profile")
                self._set(V4L2.V4L2_CID_MPEG_VIDEO_H264_LEVEL, v4l2_level(self.level_idc), "level")
                self._set(V4L2.V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1, "inline SPS/PPS")
            d.start(self._coded, CAPTURE_BUFFERS, queue_all=True)
            count = d.start(self._raw, OUTPUT_BUFFERS, queue_all=False)
        except BaseException:
            d.close()
            raise
        self._free = list(range(count))
        self._width, self._height = cfg.width, cfg.height
        self.name = f"V4L2 M2M {d.caps.card} ({cfg.m2m_device})"
        self._coded_format = coded_format
        self._can_force = d.has_control(V4L2.V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)
        self.forced = 0

    def _set(self, ctrl_id: int, value: int, what: str) -> None:
        """Set a control the encoder has; one it lacks is logged, not fatal (drivers differ)."""
        if not self._dev.has_control(ctrl_id):
            logger.info("%s has no %s control; leaving its default", self._dev.path, what)
            return
        self._dev.set_control_id(ctrl_id, value, what)

    def force_keyframe(self) -> None:
        """The next picture becomes an IDR. Thread-safe (one ioctl)."""
        if not self._can_force:
            logger.warning("%s cannot force a keyframe; viewers wait for the next one", self.name)
            return
        try:
            self._dev.set_control_id(V4L2.V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1, "force key frame")
            self.forced += 1
        except DeviceError as e:
            logger.warning("%s", e)

    def encode_frame(self, frame: Any, pts: int, capture_ns: int) -> list[EncodedFrame]:
        """Encode one av.VideoFrame; returns the access unit(s) the hardware has finished."""
        d = self._dev
        self._reclaim()
        if not self._free:
            raise DeviceError(f"{d.path}: the encoder has not returned an input buffer")
        index = self._free.pop()
        fmt = "yuv420p" if self._raw_format == "YU12" else "nv12"
        if frame.format.name != fmt or (frame.width, frame.height) != (self._width, self._height):
            frame = frame.reformat(width=self._width, height=self._height, format=fmt)
        used = self._copy_in(frame, memoryview(d.plane(index, 0, self._raw)))
        d.queue(index, used, pts * 100_000 // 9, buf_type=self._raw)
        return self._collect(pts, capture_ns)

    def _copy_in(self, frame: Any, out: memoryview) -> int:
        """Planes of `frame` into the driver's buffer, at the driver's stride and (aligned) plane
        height; returns the bytes used."""
        h, stride, aligned = self._height, self._stride, self._rows
        if self._raw_format == "YU12":
            layout = [(h, stride, aligned), (h // 2, stride // 2, aligned // 2)] + [
                (h // 2, stride // 2, aligned // 2)
            ]
        else:  # NV12: luma, then interleaved chroma at the luma stride
            layout = [(h, stride, aligned), (h // 2, stride, aligned // 2)]
        offset = 0
        for plane, (n, dst_stride, plane_rows) in zip(frame.planes, layout, strict=True):
            src = memoryview(plane)
            src_stride = plane.line_size
            width = min(src_stride, dst_stride)
            if src_stride == dst_stride:
                out[offset : offset + n * dst_stride] = src[: n * dst_stride]
            else:
                for r in range(n):
                    dst = offset + r * dst_stride
                    out[dst : dst + width] = src[r * src_stride : r * src_stride + width]
            offset += plane_rows * dst_stride
        return offset

    def _reclaim(self) -> None:
        while (buf := self._dev.dequeue(self._raw)) is not None:
            self._free.append(buf.index)

    def _collect(self, pts: int, capture_ns: int) -> list[EncodedFrame]:
        d = self._dev
        deadline = time.monotonic() + ENCODE_TIMEOUT
        while True:
            buf = d.dequeue(self._coded)
            if buf is not None:
                data = bytes(memoryview(d.plane(buf.index, 0, self._coded))[: buf.bytesused])
                d.queue(buf.index, buf_type=self._coded)
                if not data:
                    return []
                keyframe = bool(buf.flags & dev.BUF_FLAG_KEYFRAME) or (
                    self._coded_format == "H264" and h264.is_keyframe(data)
                )
                return [EncodedFrame(data, pts, keyframe, capture_ns)]
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceError(f"{d.path}: no encoded frame within {ENCODE_TIMEOUT:g} s")
            select.select([d.fd], [], [], left)

    def close(self) -> None:
        self._dev.close()
