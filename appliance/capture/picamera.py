"""Raspberry Pi camera modules through libcamera and picamera2 (Raspberry Pi OS only).

Edge module. picamera2 is imported only inside functions, and only after checking that it can be
found, so this module imports anywhere, and nothing here touches libcamera on a machine without it.
On a Pi 4 the picamera2 `H264Encoder` drives the bcm2835 V4L2 M2M encoder; on a Pi 5 (no H.264
hardware) `LibavH264Encoder` runs libx264. Either way picamera2 calls our `Output` on its own
thread with each access unit, which reaches the event loop through `call_soon_threadsafe`.

Controls are libcamera's (`Brightness`, `ExposureTime`, `AwbEnable`, `AfMode`, ...), named as
`core/controls.py` names them (brightness, exposure_time, awb_enable, af_mode).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.config import VideoConfig
from appliance.core.controls import Control, ControlError, control_name, validate_all
from appliance.core.errors import DeviceError
from appliance.core.media import EncodedFrame, pts_from_ns

logger = logging.getLogger(__name__)

STALL_TIMEOUT = 5.0
PICAMERA_PROFILES = {
    "constrained-baseline": "baseline",
    "baseline": "baseline",
    "main": "main",
    "high": "high",
}


def available() -> bool:
    """picamera2 (and so libcamera's Python binding) is installed."""
    return importlib.util.find_spec("picamera2") is not None


def cameras() -> list[dict[str, Any]]:
    """libcamera's cameras ([] where picamera2 is missing or finds none)."""
    if not available():
        return []
    try:
        from picamera2 import Picamera2

        return list(Picamera2.global_camera_info())
    except Exception as e:  # a broken libcamera install must not stop the daemon choosing V4L2
        logger.warning("picamera2 is installed but cannot list cameras: %s", e)
        return []


def is_pi5() -> bool:
    try:
        with open("/proc/device-tree/model", encoding="ascii", errors="replace") as f:
            return "Raspberry Pi 5" in f.read()
    except OSError:
        return False


class PicameraSource:
    """A libcamera camera, encoded to H.264 by picamera2 (hardware on Pi 4, libx264 on Pi 5)."""

    def __init__(
        self, cfg: VideoConfig, controls: dict[str, Any] | None = None, number: int = 0
    ) -> None:
        self.cfg = cfg
        self.number = number  # libcamera's camera number (Pi 5: one per CSI port)
        self.name = f"picamera2 {number}"
        self.frames = 0
        self._camera: Any = None
        self._encoder: Any = None
        self._initial_controls = dict(controls or {})
        self._names: dict[str, str] = {}
        self.encoder_name = "none yet"

    def force_keyframe(self) -> None:
        if self._encoder is not None:
            self._encoder.force_key_frame()

    def describe(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "source": "picamera2",
            "mode": {"width": cfg.width, "height": cfg.height, "fps": cfg.fps},
            "encoder": self.encoder_name,
            "frames": self.frames,
        }

    def controls(self) -> list[Control]:
        camera = self._camera
        if camera is None:
            raise ControlError("the camera is not running (restarting?)")
        current = camera.capture_metadata() if camera.started else {}
        out = []
        for label, (low, high, default) in sorted(camera.camera_controls.items()):
            name = control_name(label)
            self._names[name] = label
            if isinstance(low, bool) or isinstance(default, bool):
                kind = "bool"
            elif isinstance(low, int) and isinstance(high, int):
                kind = "int"
            elif isinstance(low, float) or isinstance(high, float):
                kind = "float"
            else:
                continue  # rectangles and arrays (ScalerCrop, ColourGains): not a plain setting
            value = current.get(label, default)
            out.append(
                Control(
                    name=name,
                    type=kind,
                    minimum=float(low),
                    maximum=float(high),
                    step=1 if kind == "int" else 0,
                    default=float(default if default is not None else low),
                    value=float(value) if isinstance(value, (int, float)) else None,
                )
            )
        return out

    def set_controls(self, values: dict[str, Any]) -> list[Control]:
        valid = validate_all(self.controls(), values)
        self._camera.set_controls({self._names[name]: value for name, value in valid.items()})
        return self.controls()

    async def run(self, publish: Callable[[EncodedFrame], None]) -> None:
        if not available():
            raise DeviceError(
                "video.source is picamera2 but picamera2 is not installed "
                "(Raspberry Pi OS: apt install python3-picamera2)"
            )
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._start, loop, publish)
        try:
            seen, since = -1, time.monotonic()
            while True:  # picamera2 reports nothing when the camera stops: watch the frames
                await asyncio.sleep(1.0)
                if self.frames != seen:
                    seen, since = self.frames, time.monotonic()
                elif time.monotonic() - since > STALL_TIMEOUT:
                    raise DeviceError(f"picamera2: no frame for {STALL_TIMEOUT:g} s")
        finally:
            await asyncio.to_thread(self._stop)

    def _start(
        self, loop: asyncio.AbstractEventLoop, publish: Callable[[EncodedFrame], None]
    ) -> None:
        from picamera2 import Picamera2
        from picamera2.encoders import H264Encoder, LibavH264Encoder
        from picamera2.outputs import Output

        cfg = self.cfg
        source = self

        class ToStream(Output):  # type: ignore[misc]
            def outputframe(
                self,
                frame: bytes,
                keyframe: bool = True,
                timestamp: int | None = None,
                packet: Any = None,
                audio: bool = False,
            ) -> None:
                if audio:
                    return
                now_mono = time.monotonic_ns()
                source.frames += 1
                encoded = EncodedFrame(
                    bytes(frame), pts_from_ns(now_mono), keyframe, time.time_ns()
                )
                loop.call_soon_threadsafe(publish, encoded)

        found = len(Picamera2.global_camera_info())
        if not found:
            raise DeviceError("picamera2: libcamera finds no camera (is the ribbon cable seated?)")
        if self.number >= found:
            raise DeviceError(f"picamera2: no camera {self.number}; libcamera finds {found}")
        camera = Picamera2(self.number)
        frame_us = int(1_000_000 / cfg.fps)
        config = camera.create_video_configuration(
            main={"size": (cfg.width, cfg.height), "format": "YUV420"},
            controls={"FrameDurationLimits": (frame_us, frame_us)},
        )
        camera.configure(config)
        if is_pi5():
            encoder = LibavH264Encoder(bitrate=cfg.bitrate, repeat=True, iperiod=cfg.gop)
            encoder.profile = PICAMERA_PROFILES[cfg.profile]
            self.encoder_name = "libx264 (picamera2 LibavH264Encoder)"
        else:
            encoder = H264Encoder(
                bitrate=cfg.bitrate,
                repeat=True,
                iperiod=cfg.gop,
                profile=PICAMERA_PROFILES[cfg.profile],
            )
            self.encoder_name = "bcm2835 V4L2 M2M (picamera2 H264Encoder)"
        camera.start_encoder(encoder, ToStream())
        camera.start()
        self._camera, self._encoder = camera, encoder
        if self._initial_controls:
            try:
                self.set_controls(self._initial_controls)
            except ControlError as e:
                logger.warning("picamera2: cannot set controls: %s", e)

    def _stop(self) -> None:
        camera, self._camera, self._encoder = self._camera, None, None
        if camera is not None:
            camera.stop_encoder()
            camera.stop()
            camera.close()
