"""What the daemon reports of itself: `/api/status` (JSON) and `/healthz`, computed on request
from references to its parts (`Status`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from appliance import __version__
from appliance.capture.sources import AudioSlot, Camera, SourceSlot
from appliance.config import Config, state_dir
from appliance.core.errors import SessionNotFound
from appliance.core.stream import Stream
from appliance.core.streams import Streams
from appliance.devices.clock import ClockWatch
from appliance.devices.headroom import HeadroomWatch
from appliance.devices.health import RecentWarnings, health
from appliance.http.egress import EgressSet
from appliance.http.middleware import AUTHORIZER_KEY, refusal
from appliance.http.sessions import SessionRegistry
from appliance.send import native

logger = logging.getLogger(__name__)


class RtspReaders(Protocol):
    """What the status reads of the RTSP server (rtsp/server.py, which imports this room)."""

    @property
    def port(self) -> int: ...

    def by_transport(self, stream: str) -> dict[str, int]: ...

    def count(self, stream: str | None = None) -> int: ...

    def describe(self) -> list[dict[str, Any]]: ...


class Status:
    """What /api/status, /metrics and /healthz report. Holds references, computes on request."""

    def __init__(
        self,
        config: Config,
        streams: Streams,
        viewers: SessionRegistry,
        publishers: SessionRegistry,
        cameras: list[Camera],
        audio: AudioSlot,
        egress: EgressSet,
        clock: ClockWatch | None = None,
        startup: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.config = config
        self.audio = audio
        self.streams = streams
        self.viewers = viewers
        self.publishers = publishers
        self.cameras = {c.name: c for c in cameras}
        self.egress = egress
        self.clock = clock
        self.startup = startup
        self.started = time.monotonic()
        self.rtsp: RtspReaders | None = None  # set once it listens
        self.headroom: HeadroomWatch | None = None  # admission of viewers (the daemon sets it)
        self.warnings: RecentWarnings | None = None  # the daemon's last warnings (it sets them)

    @property
    def source(self) -> SourceSlot:
        """The first camera's source."""
        return next(iter(self.cameras.values())).slot

    def camera(self, name: str | None) -> Camera:
        """The camera called `name` (None: the first); SessionNotFound (404) if there is none."""
        if name is None:
            return next(iter(self.cameras.values()))
        camera = self.cameras.get(name)
        if camera is None:
            raise SessionNotFound(
                f"no camera named {name[:80]!r}; cameras: {', '.join(self.cameras)}"
            )
        return camera

    def stalled_for(self, camera: Camera) -> float | None:
        """Seconds since the camera's last frame when that is longer than two frame intervals
        plus 1 s."""
        last = camera.stream.last_frame_at
        since = time.monotonic() - (last if last is not None else self.started)
        limit = 1.0 + 2.0 / camera.config.fps
        return since if since > limit else None

    def camera_state(self, camera: Camera) -> tuple[str, str]:
        """("live" | "starting" | "down" | "stalled", why) for a camera."""
        slot = camera.slot
        if slot.current is None and slot.last_error:
            return "down", slot.last_error
        if camera.stream.last_frame_at is None:  # the daemon serves before it does
            return "starting", f"no frame yet ({time.monotonic() - self.started:.1f} s)"
        stalled = self.stalled_for(camera)
        if stalled is not None:
            return "stalled", f"no frame for {stalled:.1f} s"
        return "live", ""

    def stream_json(self, s: Stream) -> dict[str, Any]:
        fps, bps = s.rates()
        out: dict[str, Any] = {
            "name": s.name,
            "origin": "camera" if self.streams.is_camera(s) else "whip",
            "ready": s.ready,
            "codec": "H264",
            "profile_level_id": s.profile_level_id,
            "fps": round(fps, 2),
            "bitrate": round(bps),
            "frames": s.frames,
            "bytes": s.bytes,
            "keyframes": s.keyframes,
            "keyframes_forced": s.keyframes_forced,
            "keyframe_requests": s.keyframe_requests,
            "viewers": self.viewers.count(s.name),
            "rtsp_readers": self.rtsp.by_transport(s.name) if self.rtsp else {"tcp": 0, "udp": 0},
        }
        camera = self.cameras.get(s.name)
        if camera is not None and camera.stream is s:
            source = camera.slot.describe()
            mode = source.get("mode") or {
                "width": camera.config.width,
                "height": camera.config.height,
            }
            out["width"], out["height"] = mode["width"], mode["height"]
            out["state"], out["why"] = self.camera_state(camera)
            out["source"] = source
        else:
            publishers = self.publishers.of_stream(s.name)
            out["publisher"] = publishers[0].describe() if publishers else None
            out["state"], out["why"] = (
                ("live", "") if s.ready else ("down", "waiting for its publisher")
            )
        return out

    def audio_json(self) -> dict[str, Any]:
        """The audio source, and what the camera's stream sends of it."""
        out = self.audio.describe()
        camera = self.streams.camera
        track = camera.audio if camera is not None else None
        if track is not None:
            packets_per_s, bps = track.rates()
            out.update(
                {
                    "codec": "opus",
                    "sent_packets": track.packets,
                    "sent_bytes": track.bytes,
                    "packets_per_s": round(packets_per_s, 2),
                    "bitrate": round(bps),
                }
            )
        return out

    def as_json(self) -> dict[str, Any]:
        camera = self.streams.camera
        return {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            # Whether the wall clock has been set from a time server (None: unknown).
            "clock_synchronised": self.clock.synchronised if self.clock is not None else None,
            # The daemon's own start-up, seconds per phase (app.Startup.phases).
            "startup": self.startup() if self.startup is not None else None,
            "stream": self.stream_json(camera) if camera is not None else None,
            "streams": [self.stream_json(s) for s in self.streams],
            "source": self.source.describe(),
            "audio": self.audio_json(),
            "viewers": [session.describe() for session in self.viewers],
            # The last connections that failed or never connected, and why (rtc/diagnose.py).
            "connection_failures": {
                "viewers": list(self.viewers.recent_failures),
                "publishers": list(self.publishers.recent_failures),
            },
            "egress": self.egress.describe(),
            # Which loop sends viewers' packets: the C one (send/packetloop.c), or the Python one
            # and why.
            "packet_loop": {
                "loop": "c" if native.available() else "python",
                "why_python": native.WHY_NOT,
            },
            # Room for more viewers: the event loop's load, lag, its sockets' drops, refusals.
            "headroom": self.headroom.describe() if self.headroom is not None else None,
            "rtsp": {
                "port": self.rtsp.port,
                "readers": self.rtsp.describe(),
            }
            if self.rtsp
            else None,
        }


STATUS_KEY = web.AppKey("status", Status)


async def status_handler(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS_KEY].as_json())


# What a viewer of a stream may know of it: the status, less its source's details.
PUBLIC = ("name", "origin", "ready", "state", "why", "width", "height", "fps", "bitrate", "viewers")


async def streams_handler(request: web.Request) -> web.Response:
    """GET /api/streams: the streams the bearer may watch, each with its state and URLs, and
    whether the bearer administers the device (the pages show controls and health then). Lists
    nothing it would not let the bearer play: a refusal (401, 403) when that is every stream."""
    status = request.app[STATUS_KEY]
    authorizer = request.app[AUTHORIZER_KEY]
    header = request.headers.get("Authorization")
    streams = list(status.streams)
    readable = [s for s in streams if authorizer.check(header, "read", s.name).allowed]
    admin = authorizer.check(header, "admin", "*").allowed
    if streams and not readable and not admin:
        return refusal(authorizer.check(header, "read", streams[0].name), "read")
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    out = []
    for s in readable:
        entry = {k: v for k, v in status.stream_json(s).items() if k in PUBLIC}
        entry["urls"] = {
            "page": f"/{s.name}/",
            "whep": f"/{s.name}/whep",
            "snapshot": f"/{s.name}/snapshot.jpg",
            "rtsp": f"rtsp://{host}:{status.rtsp.port}/{s.name}" if status.rtsp else None,
        }
        out.append(entry)
    synchronised = status.clock.synchronised if status.clock is not None else None
    return web.json_response({"admin": admin, "clock_synchronised": synchronised, "streams": out})


async def health_handler(request: web.Request) -> web.Response:
    """The device's health (devices/health.py): uptime, load, temperature, throttling, memory,
    disk and the daemon's recent warnings."""
    status = request.app[STATUS_KEY]
    report = health(state_dir(status.config.http), status.started, status.warnings)
    return web.json_response(report)


async def healthz_handler(request: web.Request) -> web.Response:
    """200 while every camera sends pictures; else 503 with a line per camera that does not."""
    status = request.app[STATUS_KEY]
    problems = []
    for camera in status.cameras.values():
        state, why = status.camera_state(camera)
        if state != "live":
            prefix = f"camera {camera.name}: " if len(status.cameras) > 1 else ""
            problems.append(f"{prefix}source {state}: {why}\n")
    if problems:
        return web.Response(status=503, text="".join(problems))
    return web.Response(text="ok\n")
