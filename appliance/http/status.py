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
from appliance.capture.sources import AudioSlot, SourceSlot
from appliance.config import Config
from appliance.core.stream import Stream
from appliance.core.streams import Streams
from appliance.devices.clock import ClockWatch
from appliance.devices.headroom import HeadroomWatch
from appliance.http.egress import EgressSet
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
        source: SourceSlot,
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
        self.source = source
        self.egress = egress
        self.clock = clock
        self.startup = startup
        self.started = time.monotonic()
        self.rtsp: RtspReaders | None = None  # set once it listens
        self.headroom: HeadroomWatch | None = None  # admission of viewers (the daemon sets it)

    def stalled_for(self) -> float | None:
        """Seconds since the camera's last frame when that is longer than two frame intervals
        plus 1 s."""
        camera = self.streams.camera
        if camera is None:
            return None
        last = camera.last_frame_at
        since = time.monotonic() - (last if last is not None else self.started)
        limit = 1.0 + 2.0 / self.config.video.fps
        return since if since > limit else None

    def stream_json(self, s: Stream) -> dict[str, Any]:
        fps, bps = s.rates()
        out: dict[str, Any] = {
            "name": s.name,
            "origin": "camera" if s is self.streams.camera else "whip",
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
        if s is self.streams.camera:
            video = self.config.video
            mode = self.source.describe().get("mode") or {
                "width": video.width,
                "height": video.height,
            }
            out["width"], out["height"] = mode["width"], mode["height"]
        else:
            publishers = self.publishers.of_stream(s.name)
            out["publisher"] = publishers[0].describe() if publishers else None
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


async def healthz_handler(request: web.Request) -> web.Response:
    status = request.app[STATUS_KEY]
    slot = status.source
    if slot.current is None and slot.last_error:
        return web.Response(status=503, text=f"source down: {slot.last_error}\n")
    camera = status.streams.camera
    if camera is not None and camera.last_frame_at is None:  # the daemon serves before it does
        since = time.monotonic() - status.started
        return web.Response(status=503, text=f"source starting: no frame yet ({since:.1f} s)\n")
    stalled = status.stalled_for()
    if stalled is not None:
        return web.Response(status=503, text=f"source stalled: no frame for {stalled:.1f} s\n")
    return web.Response(text="ok\n")
