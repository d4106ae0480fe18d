"""Which video source and encoder run, and the supervisor that keeps them running.

Edge module (it knows every backend, and imports each one only when it is chosen). `video.source =
"auto"` is resolved once at start-up: a Pi camera module through picamera2 where libcamera finds
one, else the first V4L2 camera, else the test pattern. The choice is logged, and `appliance probe`
prints it without starting anything.

The supervisor restarts a failing source with backoff; the stream, the HTTP server and every
viewer stay up meanwhile, and camera controls set through the API are applied again to the new
instance, so an unplugged and replugged camera comes back as the user left it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from appliance.config import Config, VideoConfig
from appliance.core.controls import Control, ControlError
from appliance.core.errors import DeviceError
from appliance.core.media import EncodedFrame
from appliance.core.stream import Stream
from appliance.encoders import make_encoder

logger = logging.getLogger(__name__)

SOURCE_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER = 30.0  # seconds of running after which a failure restarts the backoff


class Source(Protocol):
    name: str

    async def run(self, publish: Callable[[EncodedFrame], None]) -> None: ...

    def force_keyframe(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def controls(self) -> list[Control]: ...

    def set_controls(self, values: dict[str, Any]) -> list[Control]: ...


def resolve(video: VideoConfig) -> tuple[str, str]:
    """("testsrc" | "v4l2" | "picamera2", device) for the configured source; "auto" decided here."""
    if video.source in ("testsrc", "picamera2"):
        return video.source, ""
    if video.source == "auto":
        from appliance.capture import picamera

        if picamera.cameras():
            return "picamera2", ""
    if video.device != "auto":
        return "v4l2", video.device
    from appliance.capture.camera import find_camera

    found = find_camera()
    if found is not None:
        return "v4l2", found
    if video.source == "v4l2":
        raise DeviceError("video.source is v4l2 but no V4L2 camera that can stream was found")
    return "testsrc", ""


def open_source(
    video: VideoConfig, kind: str, device: str, lenient: bool, controls: dict[str, Any]
) -> Source:
    """A source of `kind`; `controls` are set as soon as the camera is open."""
    if kind == "v4l2":
        from dataclasses import replace

        from appliance.capture.camera import CameraSource

        return CameraSource(replace(video, device=device), make_encoder, lenient, controls)
    if kind == "picamera2":
        from appliance.capture.picamera import PicameraSource

        return PicameraSource(video, controls)
    from appliance.capture.testsrc import TestSource
    from appliance.encoders.software import X264Encoder

    return TestSource(video.width, video.height, video.fps, X264Encoder(video))


class SourceSlot:
    """The source that runs now (None between restarts), and the control values users set.

    Those values are kept in `saved` (JSON in the state directory), so that a camera comes back as
    the user left it after a replug, a daemon restart or a reboot."""

    def __init__(self, saved: Path | None = None) -> None:
        self.current: Source | None = None
        self.kind = ""
        self.resolved = asyncio.Event()  # set once "auto" is decided (or could not be)
        self.device = ""
        self.restarts = 0
        self.last_error = ""
        self._saved = saved
        self._save_failed = False
        self.wanted_controls: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        if self._saved is None or not self._saved.exists():
            return {}
        try:
            values = json.loads(self._saved.read_text())
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            logger.warning("camera settings in %s ignored: %s", self._saved, e)
            return {}
        logger.info("camera settings from %s: %s", self._saved, values)
        return values

    def _save(self) -> None:
        if self._saved is None:
            return
        try:
            self._saved.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._saved.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.wanted_controls, indent=1) + "\n")
            tmp.replace(self._saved)
        except OSError as e:
            if not self._save_failed:  # said once: the settings still hold until the daemon stops
                self._save_failed = True
                logger.warning("cannot keep camera settings in %s: %s", self._saved, e)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "restarts": self.restarts}
        if self.current is not None:
            out.update(self.current.describe())
            out["running"] = True
        else:
            out["running"] = False
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    def controls(self) -> list[Control]:
        if self.current is None:
            raise ControlError("the camera is not running (restarting?)")
        return self.current.controls()

    def set_controls(self, values: dict[str, Any]) -> list[Control]:
        if self.current is None:
            raise ControlError("the camera is not running (restarting?)")
        result = self.current.set_controls(values)
        self.wanted_controls.update(values)
        self._save()
        return result


async def supervise(config: Config, stream: Stream, slot: SourceSlot) -> None:
    """Run the source; when it fails, log why and start it again after a backoff."""
    video = config.video
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        try:
            if not slot.kind:
                try:
                    slot.kind, slot.device = resolve(video)
                finally:
                    slot.resolved.set()
                logger.info("video source: %s %s", slot.kind, slot.device)
            source = open_source(
                video, slot.kind, slot.device, video.source == "auto", slot.wanted_controls
            )
        except DeviceError as e:
            source, reason = None, str(e)
        started = loop.time()
        if source is not None:
            reason = await _run_once(source, stream, slot)
        if loop.time() - started > STABLE_AFTER:
            failures = 0  # it ran for a while: this failure starts the backoff from the beginning
        slot.last_error = reason
        delay = SOURCE_BACKOFF[min(failures, len(SOURCE_BACKOFF) - 1)]
        failures += 1
        slot.restarts += 1
        logger.error("video source %s: %s; trying again in %.0f s", slot.kind, reason, delay)
        await asyncio.sleep(delay)


async def _run_once(source: Source, stream: Stream, slot: SourceSlot) -> str:
    stream.attach_encoder(source.force_keyframe)
    slot.current = source
    logger.info("source %s: starting", source.name)
    try:
        await source.run(stream.publish)
        return "ended"
    except asyncio.CancelledError:
        raise
    except DeviceError as e:
        return str(e)
    except Exception as e:
        logger.exception("source %s crashed", source.name)
        return f"failed: {e!r}"
    finally:
        slot.current = None
        stream.attach_encoder(None)
