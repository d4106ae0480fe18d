"""A V4L2 camera (USB UVC, CSI bridges, loopback devices) as the stream's video source.

Edge module. The device is opened non-blocking and its descriptor watched with `loop.add_reader`:
buffers are dequeued on the event loop, which never waits. What happens next depends on the
negotiated pixel format:

- **H.264** from the camera (UVC H.264): passed through as it is, one access unit per buffer, no
  encoder at all. A keyframe request sets the camera's FORCE_KEY_FRAME control when it has one.
- **raw** pictures (YUYV, NV12, ...) and **MJPEG**: handed to one encoder thread through a one-slot
  mailbox. The newest picture wins: a picture that the encoder has not started on when the next one
  arrives goes back to the driver and counts as a capture drop, so a slow encoder costs frame rate,
  never latency. The thread copies the picture out (or decodes the JPEG), gives the buffer back,
  and encodes with libx264, or the V4L2 M2M hardware encoder when one is configured.

A device that vanishes (unplugged: ENODEV) or stops delivering frames ends `run()` with a
DeviceError; the supervisor in `app.py` opens it again with backoff while the stream and its
viewers stay up, and the new encoder starts with a keyframe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from appliance import h264
from appliance.capture import v4l2 as dev
from appliance.config import VideoConfig
from appliance.controls import Control, ControlError, validate_all
from appliance.errors import DeviceError
from appliance.media import EncodedFrame, pts_from_ns
from appliance.videomode import RAW_FORMATS, Mode, pick_mode, usable

logger = logging.getLogger(__name__)

BUFFERS = 4
FIRST_FRAME_TIMEOUT = 10.0
STALL_TIMEOUT = 5.0


class FrameEncoder(Protocol):
    name: str

    def encode_frame(self, frame: Any, pts: int, capture_ns: int) -> list[EncodedFrame]: ...

    def force_keyframe(self) -> None: ...

    def close(self) -> None: ...


def find_camera() -> str | None:
    """The first V4L2 node that captures video in a format we can stream, or None."""
    for node in dev.video_nodes():
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
        make_encoder: Callable[[VideoConfig], FrameEncoder],
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
        self._worker: _EncodeWorker | None = None
        self._stride = 0  # bytes per row the driver chose (set when the device opens)
        self._device: dev.Device | None = None
        self._encoder: FrameEncoder | None = None
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
        worker: _EncodeWorker | None = None
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
                worker = _EncodeWorker(
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
        worker: _EncodeWorker | None,
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


class _EncodeWorker:
    """The encoder thread with its one-slot mailbox (see the module docstring)."""

    def __init__(
        self,
        device: dev.Device,
        convert: Callable[[memoryview], list[Any]],
        encoder: FrameEncoder,
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
