"""A V4L2 camera (USB UVC, CSI bridges, loopback devices) as the stream's video source.

Edge module. The device is opened non-blocking and its descriptor watched with `loop.add_reader`:
buffers are dequeued on the event loop, which never waits. What happens next depends on the
negotiated pixel format:

- **H.264** from the camera (UVC H.264): passed through as it is, one access unit per buffer, no
  encoder at all. A keyframe request sets the camera's FORCE_KEY_FRAME control when it has one.
- **raw** pictures (YUYV, NV12, ...) and **MJPEG**: handed to one encoder thread
  (encoders/worker.py) through a one-slot mailbox, so a slow encoder costs frame rate, never
  latency; encoded with libx264, or the V4L2 M2M hardware encoder when one is configured.

A device that vanishes (unplugged: ENODEV) or stops delivering frames ends `run()` with a
DeviceError; the supervisor (capture/sources.py) opens it again with backoff while the stream and its
viewers stay up, and the new encoder starts with a keyframe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from appliance.config import VideoConfig
from appliance.core import h264
from appliance.core.controls import Control, ControlError, validate_all
from appliance.core.errors import DeviceError
from appliance.core.media import EncodedFrame, pts_from_ns
from appliance.core.videomode import Mode, pick_mode, usable
from appliance.devices import v4l2 as dev
from appliance.encoders import VideoEncoder
from appliance.encoders.worker import EncodeWorker, converter

logger = logging.getLogger(__name__)

BUFFERS = 4
FIRST_FRAME_TIMEOUT = 10.0
STALL_TIMEOUT = 5.0


def find_camera(skip: Collection[str] = ()) -> str | None:
    """The first V4L2 node that captures video in a format we can stream, or None; nodes in
    `skip` (/dev/videoN) are other cameras'."""
    for node in dev.video_nodes():
        if node in skip:
            continue
        try:
            with dev.Device(node) as d:
                if d.caps.is_capture and not d.caps.is_m2m and d.caps.streaming:
                    if any(usable(o.pixel_format) for o in d.formats()):
                        return node
        except DeviceError:
            continue
    return None


class CameraSource:
    """Frames from a V4L2 capture device, published as H.264 access units."""

    def __init__(
        self,
        cfg: VideoConfig,
        make_encoder: Callable[[VideoConfig], VideoEncoder],
        lenient: bool = False,
        controls: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device_path = cfg.device
        self.name = f"v4l2 {cfg.device}"
        self._make_encoder = make_encoder
        self._lenient = lenient  # "auto" source: take the nearest mode rather than refuse
        self.mode: Mode | None = None
        self.encoder_name = "none yet"
        self.frames = 0
        self.drops = 0
        self.corrupt = 0
        self._worker: EncodeWorker | None = None
        self._stride = 0  # bytes per row the driver chose (set when the device opens)
        self._device: dev.Device | None = None
        self._encoder: VideoEncoder | None = None
        self._warned_keyframe = False
        self._initial_controls = dict(controls or {})

    # -- what the rest of the daemon calls -----------------------------------------------------

    def force_keyframe(self) -> None:
        """Thread-safe: the next picture is encoded as an IDR (or the camera is asked for one)."""
        if self._encoder is not None:
            self._encoder.force_keyframe()
            return
        device = self._device
        if device is None:
            return
        if device.has_control(dev.CID_FORCE_KEY_FRAME):
            try:
                device.set_control_id(dev.CID_FORCE_KEY_FRAME, 1, "force key frame")
                return
            except DeviceError as e:
                logger.warning("%s: %s", self.name, e)
        if not self._warned_keyframe:
            self._warned_keyframe = True
            logger.warning(
                "%s: this camera's H.264 cannot be asked for a keyframe; new viewers wait for "
                "its next one (set video.pixel_format to a raw format to encode here instead)",
                self.name,
            )

    def describe(self) -> dict[str, Any]:
        mode = self.mode
        return {
            "source": "v4l2",
            "device": self.device_path,
            "mode": None
            if mode is None
            else {
                "pixel_format": mode.pixel_format,
                "width": mode.width,
                "height": mode.height,
                "fps": float(mode.fps),
            },
            "encoder": self.encoder_name,
            "frames": self.frames,
            # The encoder thread counts its own; the loop counts passthrough's corrupt buffers.
            "capture_drops": self.drops + (worker.drops if (worker := self._worker) else 0),
            "corrupt_frames": self.corrupt + (worker.corrupt if worker else 0),
        }

    def controls(self) -> list[Control]:
        if self._device is None:
            raise ControlError(f"{self.name} is not open (the camera is restarting)")
        return self._device.controls()

    def set_controls(self, values: dict[str, Any]) -> list[Control]:
        """Validate every value, then set them; returns the controls as they now are."""
        device = self._device
        if device is None:
            raise ControlError(f"{self.name} is not open (the camera is restarting)")
        device.set_controls(validate_all(device.controls(), values))
        return device.controls()

    # -- running -------------------------------------------------------------------------------

    def open(self) -> dev.Device:
        """Open the device and set the mode (split from run() so tests and probe can use it)."""
        device = dev.Device(self.device_path)
        try:
            if not device.caps.is_capture or device.caps.is_m2m:
                raise DeviceError(
                    f"{self.device_path} ({device.caps.card}) is not a capture device"
                )
            if device.caps.multiplanar:
                raise DeviceError(
                    f"{self.device_path} ({device.caps.card}) has a multi-planar capture queue; "
                    'for CSI cameras behind an ISP use video.source = "picamera2"'
                )
            if not device.caps.streaming:
                raise DeviceError(f"{self.device_path} cannot stream (no VIDIOC_STREAMON)")
            self.mode = self._negotiate(device)
            _, _, self._stride, _ = device.set_mode(self.mode)
            if self._initial_controls:
                self._apply_initial(device)
        except BaseException:
            device.close()
            raise
        return device

    def _apply_initial(self, device: dev.Device) -> None:
        try:
            device.set_controls(validate_all(device.controls(), self._initial_controls))
            logger.info("%s: controls set: %s", self.device_path, self._initial_controls)
        except ControlError as e:
            logger.warning(
                "%s: cannot set controls %s: %s", self.device_path, self._initial_controls, e
            )

    def _negotiate(self, device: dev.Device) -> Mode:
        cfg = self.cfg
        where = f"{self.device_path} ({device.caps.card})"
        mode, note = pick_mode(
            device.formats(),
            cfg.width,
            cfg.height,
            cfg.fps,
            cfg.pixel_format,
            where,
            self._lenient,
        )
        if note:
            logger.warning("%s", note)
        return mode

    async def run(self, publish: Callable[[EncodedFrame], None]) -> None:
        """Capture until cancelled; raises DeviceError when the camera fails or goes away."""
        loop = asyncio.get_running_loop()
        device = self.open()
        self._device = device
        mode = self.mode
        assert mode is not None
        worker: EncodeWorker | None = None
        done: asyncio.Future[None] = loop.create_future()

        def fail(error: BaseException) -> None:
            if not done.done():
                done.set_exception(error)

        try:
            if mode.kind == "passthrough":
                self.encoder_name = "camera H.264 (passthrough)"
            else:
                enc_cfg = dataclasses.replace(
                    self.cfg, width=mode.width, height=mode.height, fps=round(mode.fps)
                )
                self._encoder = self._make_encoder(enc_cfg)
                self.encoder_name = self._encoder.name
                convert = converter(mode, self._stride)
                worker = EncodeWorker(
                    device, convert, self._encoder, loop, publish, fail, self.name
                )
                worker.start()
                self._worker = worker
            device.start(dev.CAPTURE, BUFFERS)
            logger.info(
                "%s (%s): %s %dx%d@%g, %s",
                self.device_path,
                device.caps.card,
                mode.pixel_format,
                mode.width,
                mode.height,
                float(mode.fps),
                self.encoder_name,
            )
            last = [time.monotonic()]

            def readable() -> None:
                try:
                    while (buf := device.dequeue()) is not None:
                        last[0] = time.monotonic()
                        self._take(device, buf, worker, publish)
                except DeviceError as e:
                    loop.remove_reader(device.fd)
                    fail(e)
                    return
                # Drained to EAGAIN: re-arm. v4l2loopback 0.12 (Debian 12) joins the wait queue
                # in poll() only when no frame is ready, so epoll, which polls once when the
                # descriptor is added, would never hear of another frame. Two epoll_ctl calls
                # per wake-up make every driver work.
                loop.remove_reader(device.fd)
                loop.add_reader(device.fd, readable)

            loop.add_reader(device.fd, readable)
            await self._watch(done, last)
        finally:
            if device.fd >= 0:
                loop.remove_reader(device.fd)
            if worker is not None:
                await asyncio.to_thread(worker.stop)
                self._worker = None
                self.drops += worker.drops
                self.corrupt += worker.corrupt
            self._device = None
            device.close()
            if self._encoder is not None:
                self._encoder.close()
                self._encoder = None

    async def _watch(self, done: asyncio.Future[None], last: list[float]) -> None:
        """Wait for a failure; raise one when frames stop coming."""
        started = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(done), 1.0)
                return
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if self.frames == 0 and now - started > FIRST_FRAME_TIMEOUT:
                raise DeviceError(f"{self.device_path}: no frame in {FIRST_FRAME_TIMEOUT:g} s")
            if self.frames and now - last[0] > STALL_TIMEOUT:
                raise DeviceError(f"{self.device_path}: no frame for {STALL_TIMEOUT:g} s")

    def _take(
        self,
        device: dev.Device,
        buf: dev.Dequeued,
        worker: EncodeWorker | None,
        publish: Callable[[EncodedFrame], None],
    ) -> None:
        self.frames += 1
        capture_ns, pts = _times(buf)
        if worker is not None:
            worker.offer(buf, pts, capture_ns)
            return
        data = bytes(memoryview(device.plane(buf.index))[: buf.bytesused])
        device.queue(buf.index)
        if buf.flags & dev.BUF_FLAG_ERROR or not data.startswith((b"\0\0\1", b"\0\0\0\1")):
            self.corrupt += 1  # an error flag, or not Annex-B (v4l2loopback's first buffer)
            return
        publish(EncodedFrame(data, pts, h264.is_keyframe(data), capture_ns))


def _times(buf: dev.Dequeued) -> tuple[int, int]:
    """(wall-clock capture time, 90 kHz pts on the monotonic clock) of a dequeued buffer."""
    now_mono = time.monotonic_ns()
    mono = buf.timestamp_ns
    if not buf.monotonic or not 0 <= now_mono - mono < 2_000_000_000:
        mono = now_mono  # a driver without usable timestamps: the time we saw it
    return time.time_ns() - (now_mono - mono), pts_from_ns(mono)
