"""Any camera or encoder GStreamer knows: `video.source = "gstreamer"` with a `video.pipeline`.

Edge module. The pipeline is the owner's, up to where H.264 comes out (an encoder such as
`x264enc`, `nvv4l2h264enc`, `v4l2h264enc` or `vah264enc`, or a depayloader for an IP camera:
`rtspsrc location=… ! rtph264depay`); the daemon appends `h264parse` and an `appsink` that hands
whole access units over in Annex-B. GStreamer's streaming thread delivers each one to the event
loop with `call_soon_threadsafe`, stamped with its capture time on the daemon's clock: the
pipeline runs on GStreamer's monotonic system clock, so base time plus the buffer's running time
is CLOCK_MONOTONIC at capture, and glass-to-glass stays honest.

A keyframe request becomes GStreamer's upstream force-key-unit event, which the encoders above
honour. A pipeline without an encoder (a camera passed through) cannot honour it: the log says so
once. An error on the bus (it names the element), the end of the stream, or no access unit for
`STALL_S` seconds ends `run()` with a `DeviceError`, and the supervisor restarts the pipeline
with backoff, as it does any camera.

PyGObject and GStreamer come from the system (Debian's and JetPack's `python3-gi`,
`gir1.2-gstreamer-1.0`, `gir1.2-gst-plugins-base-1.0`); they are imported only when this source
is configured, from the system's `dist-packages` when the daemon's own environment lacks them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.core import h264
from appliance.core.controls import Control, ControlError
from appliance.core.errors import DeviceError
from appliance.core.media import EncodedFrame, pts_from_ns

logger = logging.getLogger(__name__)

SINK = "appliance_sink"
TAIL = (
    " ! h264parse config-interval=-1"
    " ! video/x-h264,stream-format=byte-stream,alignment=au"
    f" ! appsink name={SINK} emit-signals=true max-buffers=30 drop=false"
)
STALL_S = 5.0  # no access unit for this long (once the first came): the pipeline is restarted
FIRST_S = 20.0  # how long the first access unit may take (an IP camera's RTSP handshake)
_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]*@", re.IGNORECASE)
SYSTEM_PACKAGES = Path("/usr/lib/python3/dist-packages")
NEEDS = "python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 (and the plugins it names)"


def import_gst() -> tuple[Any, Any]:
    """(Gst, GstVideo), initialised. Raises DeviceError naming what to install."""
    try:
        if "gi" not in sys.modules and importlib.util.find_spec("gi") is None:
            _import_system_gi()
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstVideo", "1.0")
        with warnings.catch_warnings():
            # PyGObject 3.42's importer predates exec_module: an ImportWarning, nothing wrong.
            warnings.simplefilter("ignore", ImportWarning)
            from gi.repository import Gst, GstVideo
    except (ImportError, ValueError) as e:
        raise DeviceError(f"GStreamer is not available from Python ({e}): install {NEEDS}") from e
    Gst.init(None)
    return Gst, GstVideo


def _import_system_gi() -> None:
    """The system's PyGObject only (not the rest of dist-packages), for a venv made without
    --system-site-packages. Its compiled part is built for the system's Python 3 minor version."""
    package = SYSTEM_PACKAGES / "gi"
    if not (package / "__init__.py").exists():
        raise ImportError(f"no PyGObject in {SYSTEM_PACKAGES}")
    spec = importlib.util.spec_from_file_location(
        "gi", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gi"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["gi"]
        raise


def encoders_in(Gst: Any, pipeline: Any) -> list[str]:
    """Names of the pipeline's elements whose class is an encoder (those honour keyframe requests)."""
    found: list[str] = []
    it = pipeline.iterate_recurse()
    while True:
        result, element = it.next()
        if result == Gst.IteratorResult.RESYNC:
            it.resync()
            found.clear()
            continue
        if result != Gst.IteratorResult.OK:
            return found
        factory = element.get_factory()
        if factory is not None and "Encoder" in (factory.get_metadata("klass") or ""):
            found.append(factory.get_name())


def redacted(pipeline: str) -> str:
    """The pipeline with the passwords of its URLs replaced (an IP camera's rtsp://user:pw@)."""
    return _CREDENTIALS.sub(r"\1***@", pipeline)


def undecodable(keyframe: bytes) -> str:
    """Why browsers cannot decode this access unit's H.264 profile ("" when they can). An
    owner's pipeline can make any profile: x264enc, given 4:4:4 pictures, makes High 4:4:4."""
    sps = h264.find_nal(keyframe, h264.NAL_SPS)
    if sps is None:
        return ""
    try:
        h264.profile_level_id(sps)
    except ValueError as e:
        return (
            f"the pipeline's H.264 is not one browsers decode ({e}): put"
            " video/x-h264,profile=constrained-baseline (or main, or high) after the encoder"
        )
    return ""


def available_elements(names: tuple[str, ...]) -> dict[str, bool]:
    """Which of these GStreamer elements exist here ({} when GStreamer itself is missing)."""
    try:
        Gst, _ = import_gst()
    except DeviceError:
        return {}
    return {name: Gst.ElementFactory.find(name) is not None for name in names}


class GstSource:
    """`video.pipeline` + h264parse + appsink, run until cancelled or until it fails."""

    def __init__(self, pipeline: str) -> None:
        self.description = pipeline.strip()
        self.shown = redacted(self.description)  # what the log and the status may say
        self.name = f"gstreamer {self.shown.split('!')[0].strip()[:60]}"
        self.frames = 0
        self.keyframes = 0
        self.state = "stopped"
        self.encoders: list[str] = []
        self._pipeline: Any = None
        self._sink: Any = None
        self._GstVideo: Any = None
        self._Gst: Any = None
        self._said_passthrough = False

    def describe(self) -> dict[str, Any]:
        return {
            "source": "gstreamer",
            "pipeline": self.shown,
            "state": self.state,
            "encoder": ", ".join(self.encoders) or "none (passed through)",
            "frames": self.frames,
            "keyframes": self.keyframes,
        }

    def controls(self) -> list[Control]:
        return []

    def set_controls(self, values: dict[str, Any]) -> list[Control]:
        raise ControlError(
            f"a GStreamer pipeline has no controls here (set them in video.pipeline); got "
            f"{', '.join(values)}"
        )

    def force_keyframe(self) -> None:
        """The stream's merged keyframe request, as an upstream force-key-unit event."""
        if self._sink is None:
            return
        if not self.encoders:
            if not self._said_passthrough:
                self._said_passthrough = True
                logger.info(
                    "gstreamer: the pipeline has no encoder to ask for a keyframe: viewers start "
                    "at the camera's own keyframe interval"
                )
            return
        Gst, GstVideo = self._Gst, self._GstVideo
        event = GstVideo.video_event_new_upstream_force_key_unit(Gst.CLOCK_TIME_NONE, True, 0)
        self._sink.send_event(event)

    async def run(self, publish: Callable[[EncodedFrame], None]) -> None:
        loop = asyncio.get_running_loop()
        Gst, GstVideo = await asyncio.to_thread(import_gst)
        self._Gst, self._GstVideo = Gst, GstVideo
        try:
            pipeline = Gst.parse_launch(self.description + TAIL)
        except Exception as e:  # GLib.Error: a syntax error, or an element that does not exist
            raise DeviceError(f"video.pipeline: {getattr(e, 'message', e)}") from e
        sink = pipeline.get_by_name(SINK)
        # One clock for every source: GStreamer's system clock is CLOCK_MONOTONIC by default.
        pipeline.use_clock(Gst.SystemClock.obtain())
        self.encoders = encoders_in(Gst, pipeline)
        done: asyncio.Future[None] = loop.create_future()
        last = [time.monotonic()]
        stopping = threading.Event()

        def fail(error: BaseException) -> None:
            if not done.done():
                done.set_exception(error)

        def deliver(frame: EncodedFrame) -> None:
            last[0] = time.monotonic()
            self.frames += 1
            self.keyframes += frame.keyframe
            if frame.keyframe and (refusal := undecodable(frame.data)):
                fail(DeviceError(refusal))
            if not done.done():
                publish(frame)

        def on_sample(appsink: Any) -> Any:  # GStreamer's streaming thread
            sample = appsink.emit("pull-sample")
            if sample is None:
                return Gst.FlowReturn.EOS
            buffer = sample.get_buffer()
            running = sample.get_segment().to_running_time(Gst.Format.TIME, buffer.pts)
            now_mono = time.monotonic_ns()
            mono = pipeline.get_base_time() + running if buffer.pts != Gst.CLOCK_TIME_NONE else 0
            if not 0 < mono <= now_mono:  # no time stamp, or not on our clock: when it came
                mono = now_mono
            frame = EncodedFrame(
                buffer.extract_dup(0, buffer.get_size()),
                pts_from_ns(mono),
                not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT),
                mono + (time.time_ns() - now_mono),
            )
            if not stopping.is_set():
                loop.call_soon_threadsafe(deliver, frame)
            return Gst.FlowReturn.OK

        def watch_bus() -> None:  # its own thread: errors and the end of the stream
            bus = pipeline.get_bus()
            kinds = Gst.MessageType.ERROR | Gst.MessageType.EOS
            while not stopping.is_set():
                message = bus.timed_pop_filtered(200 * Gst.MSECOND, kinds)
                if message is None:
                    continue
                if message.type == Gst.MessageType.EOS:
                    error = DeviceError("the pipeline ended (end of stream)")
                else:
                    err, _debug = message.parse_error()
                    source = message.src.get_name() if message.src is not None else "?"
                    error = DeviceError(f"{source}: {err.message}")
                if not loop.is_closed():
                    loop.call_soon_threadsafe(fail, error)
                return

        sink.connect("new-sample", on_sample)
        watcher = threading.Thread(target=watch_bus, name="gstreamer bus", daemon=True)
        watcher.start()
        self._pipeline = pipeline
        try:
            result = await asyncio.to_thread(pipeline.set_state, Gst.State.PAUSED)
            live = result == Gst.StateChangeReturn.NO_PREROLL
            # A live source (a camera) is sent as it comes; any other is paced by the clock.
            sink.set_property("sync", not live)
            await asyncio.to_thread(pipeline.set_state, Gst.State.PLAYING)
            self._sink = sink
            self.state = "playing"
            logger.info(
                "gstreamer: playing %s (%s; keyframes on request: %s)",
                self.shown,
                "live" if live else "paced by the clock",
                ", ".join(self.encoders) or "no, no encoder in the pipeline",
            )
            started = time.monotonic()
            while not done.done():
                await asyncio.wait({done}, timeout=1.0)
                quiet = time.monotonic() - (last[0] if self.frames else started)
                limit = STALL_S if self.frames else FIRST_S
                if not done.done() and quiet > limit:
                    fail(DeviceError(f"no access unit from the pipeline for {quiet:.0f} s"))
            await done
        finally:
            self._sink = None
            self.state = "stopped"
            stopping.set()
            await asyncio.to_thread(self._stop, pipeline, Gst)
            await asyncio.to_thread(watcher.join, 1.0)
            self._pipeline = None

    @staticmethod
    def _stop(pipeline: Any, Gst: Any) -> None:
        pipeline.set_state(Gst.State.NULL)
