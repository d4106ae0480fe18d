"""The encoder thread: a camera's pictures, one at a time, through a one-slot mailbox.

Edge module (threads, PyAV, numpy). The capture side (capture/camera.py) dequeues a driver buffer on
the event loop and `offer()`s it. The newest picture wins: a buffer that the thread has not started
on when the next one arrives goes back to the driver and counts as a capture drop, so a slow
encoder costs frame rate, never latency. The thread converts the buffer (copied out, or the JPEG
decoded: `converter`), gives it back to the driver, encodes it with the stream's VideoEncoder, and
hands the access units to the event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from appliance.core.errors import DeviceError
from appliance.core.media import EncodedFrame
from appliance.core.videomode import RAW_FORMATS, Mode
from appliance.devices import v4l2 as dev
from appliance.encoders import VideoEncoder

logger = logging.getLogger(__name__)


def converter(mode: Mode, stride: int) -> Callable[[memoryview], list[Any]]:
    """A function from one buffer's bytes to the av.VideoFrames in it (copied out of the buffer)."""
    import av
    import numpy as np

    w, h = mode.width, mode.height
    if mode.kind == "compressed":
        decoder: Any = av.CodecContext.create("mjpeg", "r")

        def decode(data: memoryview) -> list[Any]:
            return list(decoder.decode(av.Packet(bytes(data))))

        return decode
    name = RAW_FORMATS.get(mode.pixel_format)
    if name is None:
        raise DeviceError(f"no converter for pixel format {mode.pixel_format}")
    packed = {"yuyv422": 2, "uyvy422": 2, "yvyu422": 2, "rgb24": 3, "bgr24": 3, "gray": 1}
    stride = stride or w * packed.get(name, 1)

    def convert(data: memoryview) -> list[Any]:
        raw = np.frombuffer(data, np.uint8)
        if name in packed:
            bpp = packed[name]
            rows = raw[: stride * h].reshape(h, stride)[:, : w * bpp]
            shaped = rows.reshape(h, w, bpp) if bpp > 1 else rows
            if name in ("uyvy422", "yvyu422"):  # PyAV reads these through a plane copy
                frame = av.VideoFrame(w, h, name)
                frame.planes[0].update(np.ascontiguousarray(rows).tobytes())
                return [frame]
            return [av.VideoFrame.from_ndarray(np.ascontiguousarray(shaped), format=name)]
        luma = raw[: stride * h].reshape(h, stride)[:, :w]
        if name == "yuv420p":
            cs = stride // 2
            u = raw[stride * h : stride * h + cs * h // 2].reshape(h // 2, cs)[:, : w // 2]
            v = raw[stride * h + cs * h // 2 : stride * h + cs * h].reshape(h // 2, cs)[:, : w // 2]
            planes = np.concatenate([luma.reshape(-1), u.reshape(-1), v.reshape(-1)])
            return [av.VideoFrame.from_ndarray(planes.reshape(h * 3 // 2, w), format=name)]
        chroma = raw[stride * h : stride * h + stride * h // 2].reshape(h // 2, stride)[:, :w]
        planes = np.concatenate([luma, chroma])
        return [av.VideoFrame.from_ndarray(planes, format=name)]

    return convert


class EncodeWorker:
    """The encoder thread with its one-slot mailbox (see the module docstring)."""

    def __init__(
        self,
        device: dev.Device,
        convert: Callable[[memoryview], list[Any]],
        encoder: VideoEncoder,
        loop: asyncio.AbstractEventLoop,
        publish: Callable[[EncodedFrame], None],
        fail: Callable[[BaseException], None],
        name: str,
    ) -> None:
        self._device, self._convert, self._encoder = device, convert, encoder
        self._loop, self._publish, self._fail = loop, publish, fail
        self._cv = threading.Condition()
        self._pending: tuple[dev.Dequeued, int, int] | None = None
        self._stopped = False
        self.drops = 0
        self.corrupt = 0
        self._thread = threading.Thread(target=self._main, name=f"encode {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, buf: dev.Dequeued, pts: int, capture_ns: int) -> None:
        """On the loop: hand a filled buffer over; the one waiting, if any, goes back unused."""
        with self._cv:
            stale, self._pending = self._pending, (buf, pts, capture_ns)
            self._cv.notify()
        if stale is not None:
            self.drops += 1
            self._device.queue(stale[0].index)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join()

    def _main(self) -> None:
        try:
            while True:
                with self._cv:
                    while self._pending is None and not self._stopped:
                        self._cv.wait()
                    if self._stopped:
                        return
                    item, self._pending = self._pending, None
                assert item is not None
                buf, pts, capture_ns = item
                try:
                    frames = self._picture(buf)
                finally:
                    self._device.queue(buf.index)
                out: list[EncodedFrame] = []
                for frame in frames:
                    out += self._encoder.encode_frame(frame, pts, capture_ns)
                if out:
                    self._loop.call_soon_threadsafe(self._deliver, out)
        except BaseException as e:  # handed to the loop: run() raises it
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._fail, e)

    def _picture(self, buf: dev.Dequeued) -> list[Any]:
        import av

        if buf.flags & dev.BUF_FLAG_ERROR or buf.bytesused == 0:
            self.corrupt += 1
            return []
        data = memoryview(self._device.plane(buf.index))[: buf.bytesused]
        try:
            return self._convert(data)
        except (av.error.InvalidDataError, ValueError) as e:  # a torn JPEG from a USB camera
            self.corrupt += 1
            if self.corrupt in (1, 10, 100) or self.corrupt % 1000 == 0:
                logger.warning("corrupt frame %d from the camera: %s", self.corrupt, e)
            return []
        finally:
            data.release()

    def _deliver(self, frames: list[EncodedFrame]) -> None:
        if not self._stopped:
            for frame in frames:
                self._publish(frame)
