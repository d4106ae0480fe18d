"""Which sources run, video and audio, and the supervisors that keep them running: the one place
where sources and encoders are composed.

Edge module (it knows every backend, and imports each one only when it is chosen). `video.source =
"auto"` is resolved once at start-up: a Pi camera module through picamera2 where libcamera finds
one, else the first V4L2 camera, else the test pattern. The choice is logged, and `appliance probe`
prints it without starting anything.

The supervisor restarts a failing source with backoff; the stream, the HTTP server and every
viewer stay up meanwhile, and camera controls set through the API are applied again to the new
instance, so an unplugged and replugged camera comes back as the user left it.

Audio: `audio.source = "auto"` is decided once the video source is known: the ALSA device
(`audio.device`) if it opens for capture, else the test tone when the video is the test pattern,
else no audio. A microphone that is missing or goes away is logged and tried again with the same
backoff as a camera; the video and every viewer carry on meanwhile (they hear silence).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from appliance.config import CameraConfig, Config, VideoConfig
from appliance.core.audio import AudioTrack
from appliance.core.controls import Control, ControlError
from appliance.core.errors import DeviceError
from appliance.core.media import EncodedAudio, EncodedFrame
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


def resolve(video: VideoConfig, taken: frozenset[str] = frozenset()) -> tuple[str, str]:
    """("testsrc" | "v4l2" | "picamera2" | "gstreamer", device) for the configured source;
    "auto" decided here, skipping what other cameras have `taken` (V4L2 nodes as /dev/videoN,
    libcamera cameras as "picamera2:N"). A V4L2 camera found by "auto" is named by its stable
    /dev/v4l/by-id name where it has one, so that a replug that renumbers it finds it again."""
    if video.source in ("testsrc", "gstreamer"):
        return video.source, ""
    if video.source == "picamera2" and video.device != "auto":
        return "picamera2", video.device
    if video.source in ("auto", "picamera2"):
        from appliance.capture import picamera

        for number in range(len(picamera.cameras())):
            if f"picamera2:{number}" not in taken:
                return "picamera2", str(number)
        if video.source == "picamera2":
            if taken and picamera.cameras():
                raise DeviceError("every libcamera camera is taken by another [[camera]]")
            return "picamera2", "0"  # the source says why it cannot open, and is retried
    if video.device != "auto":
        return "v4l2", video.device
    from appliance.capture.camera import find_camera
    from appliance.devices import v4l2

    found = find_camera(skip=taken)
    if found is not None:
        return "v4l2", v4l2.stable_names().get(found, found)
    if video.source == "v4l2":
        more = " not taken by another [[camera]]" if taken else ""
        raise DeviceError(
            f"video.source is v4l2 but no V4L2 camera{more} that can stream was found"
        )
    return "testsrc", ""


def claim(kind: str, device: str) -> str:
    """What a resolved source takes from the others' "auto": its node, or its libcamera number."""
    if kind == "v4l2":
        from appliance.devices import v4l2

        return v4l2.resolve(device)
    return f"picamera2:{device or 0}" if kind == "picamera2" else ""


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

        return PicameraSource(video, controls, int(device or 0))
    if kind == "gstreamer":
        from appliance.capture.gstreamer import GstSource

        return GstSource(video.pipeline)
    from appliance.capture.testsrc import TestSource
    from appliance.encoders.software import X264Encoder

    return TestSource(video.width, video.height, video.fps, X264Encoder(video), controls)


class SourceSlot:
    """The source that runs now (None between restarts), and the control values users set.

    Those values are kept in `saved` (JSON in the state directory), so that a camera comes back as
    the user left it after a replug, a daemon restart or a reboot."""

    def __init__(self, saved: Path | None = None, initial: dict[str, Any] | None = None) -> None:
        self.current: Source | None = None
        self.kind = ""
        self.resolved = asyncio.Event()  # set once "auto" is decided (or could not be)
        self.device = ""
        self.restarts = 0
        self.last_error = ""
        self._saved = saved
        self._save_failed = False
        self._initial = dict(initial or {})  # the config's
        self._set: dict[str, Any] = self._load()  # through the API, kept in `saved`

    @property
    def wanted_controls(self) -> dict[str, Any]:
        """What the camera is set to when it opens: the config's values, and those set through
        the API over them (only those are saved: a changed config is not masked by old state)."""
        return {**self._initial, **self._set}

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
            tmp.write_text(json.dumps(self._set, indent=1) + "\n")
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
        self._set.update(values)
        self._save()
        return result


@dataclass
class Camera:
    """One camera of the daemon: its config, its stream, and the source that feeds it."""

    config: CameraConfig
    stream: Stream
    slot: SourceSlot

    @property
    def name(self) -> str:
        return self.config.name


class Claims:
    """The devices cameras hold, so that several `source = "auto"` cameras take distinct ones.
    Cameras resolve one at a time, in config order; a device a camera names is never auto's."""

    def __init__(self, cameras: list[CameraConfig]) -> None:
        from appliance.devices import v4l2

        self.taken: set[str] = {v4l2.resolve(c.device) for c in cameras if c.device != "auto"}
        self.taken |= {
            f"picamera2:{c.device}"
            for c in cameras
            if c.source == "picamera2" and c.device.isdigit()
        }
        self.lock = asyncio.Lock()

    async def resolve(self, video: VideoConfig) -> tuple[str, str]:
        async with self.lock:
            kind, device = await asyncio.to_thread(resolve, video, frozenset(self.taken))
            self.taken.add(claim(kind, device))
            return kind, device


async def supervise(camera: Camera, claims: Claims | None = None) -> None:
    """Run the camera's source; when it fails, log why and start it again after a backoff."""
    video, stream, slot = camera.config, camera.stream, camera.slot
    claims = claims if claims is not None else Claims([camera.config])
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        try:
            # Probing and opening (imports, libcamera, the encoder) run in a thread: the event
            # loop keeps serving meanwhile.
            if not slot.kind:
                try:
                    slot.kind, slot.device = await claims.resolve(video)
                finally:
                    slot.resolved.set()
                logger.info("camera %s: video source %s %s", camera.name, slot.kind, slot.device)
            source = await asyncio.to_thread(
                open_source,
                video, slot.kind, slot.device, video.source == "auto", slot.wanted_controls,
            )  # fmt: skip
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
        logger.error(
            "camera %s: video source %s: %s; trying again in %.0f s",
            camera.name, slot.kind, reason, delay,
        )  # fmt: skip
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


# --- Audio ---------------------------------------------------------------------------------


class AudioSource(Protocol):
    name: str

    async def run(self, publish: Callable[[EncodedAudio], None]) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class AudioSlot:
    """The audio source that runs now (None between restarts), for the status API."""

    def __init__(self) -> None:
        self.current: AudioSource | None = None
        self.kind = ""
        self.restarts = 0
        self.last_error = ""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind or "none", "restarts": self.restarts}
        if self.current is not None:
            out.update(self.current.describe())
        out["running"] = self.current is not None
        if self.last_error:
            out["last_error"] = self.last_error
        return out


def resolve_audio(config: Config, video_kind: str) -> tuple[str, str]:
    """("alsa" | "testsrc" | "none", why) for the configured audio source."""
    audio = config.audio
    if audio.source != "auto":
        return audio.source, "configured"
    from appliance.capture.alsa import open_pcm

    try:
        open_pcm(audio, audio.rate * audio.period_ms // 1000).close()
        return "alsa", f"ALSA device {audio.device!r} captures"
    except DeviceError as e:
        problem = str(e)
    if video_kind == "testsrc":
        return "testsrc", f"the video is the test pattern; no microphone ({problem})"
    return "none", f"no microphone: {problem}"


def open_audio(config: Config, kind: str) -> AudioSource:
    from appliance.encoders.opus import OpusEncoder

    audio = config.audio
    if kind == "alsa":
        from appliance.capture.alsa import AlsaSource

        return AlsaSource(audio, OpusEncoder(audio))
    from appliance.capture.testsrc import ToneSource

    # The tone is made at 48 kHz, whatever audio.rate says.
    return ToneSource(audio.channels, audio.period_ms, OpusEncoder(replace(audio, rate=48_000)))


async def supervise_audio(
    config: Config,
    track: AudioTrack,
    slot: AudioSlot,
    video: SourceSlot,
    detach: Callable[[], None],
) -> None:
    """Run the audio source; when it fails, log why and start it again after a backoff.
    `detach()` takes the audio track off the stream when "auto" finds no audio at all."""
    if config.audio.source == "none":
        detach()
        return
    if config.audio.source == "auto":
        await video.resolved.wait()  # "auto" depends on which video source runs
    kind, why = await asyncio.to_thread(resolve_audio, config, video.kind)
    slot.kind = kind
    logger.info("audio source: %s (%s)", kind, why)
    if kind == "none":
        detach()
        return
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            source = open_audio(config, kind)
            slot.current = source
            logger.info("audio %s: starting", source.name)
            await source.run(track.publish)
            reason = "ended"
        except asyncio.CancelledError:
            raise
        except DeviceError as e:
            reason = str(e)
        except Exception as e:
            logger.exception("audio source %s crashed", kind)
            reason = f"failed: {e!r}"
        finally:
            slot.current = None
        if loop.time() - started > STABLE_AFTER:
            failures = 0
        slot.last_error = reason
        delay = SOURCE_BACKOFF[min(failures, len(SOURCE_BACKOFF) - 1)]
        failures += 1
        slot.restarts += 1
        logger.error(
            "audio source %s: %s; the video goes on; trying again in %.0f s", kind, reason, delay
        )
        await asyncio.sleep(delay)
