"""The HTTP surface: viewer page, WHEP, JSON status, camera controls and health, with CORS and
error mapping.

This is the one place where RequestError subclasses become HTTP statuses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance import __version__
from appliance.capture.audio_sources import AudioSlot
from appliance.capture.sources import SourceSlot
from appliance.config import Config
from appliance.core.controls import ControlError
from appliance.core.errors import BadRequest, RequestError, SessionNotFound, UriTooLong, printable
from appliance.core.stats import LogLimiter
from appliance.core.stream import Stream
from appliance.core.streams import Streams, name_problem
from appliance.http.auth import Authorizer
from appliance.http.egress import EgressSet
from appliance.http.metrics import Exposition
from appliance.http.ratelimit import RateLimiter
from appliance.http.resource import body_text
from appliance.http.sessions import SessionRegistry
from appliance.http.snapshot import Snapshots
from appliance.http.whep import WhepHandlers
from appliance.http.whip import WhipHandlers
from appliance.rtc.internals import STRAY

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 256 * 1024
EXPOSED_HEADERS = "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After, WWW-Authenticate"


PACKAGE = Path(__file__).resolve().parents[1]  # appliance/


def web_root(config: Config) -> Path:
    """The viewer's files: configured, else bundled in the wheel, else the checkout's web/."""
    if config.http.web_root:
        return Path(config.http.web_root)
    bundled = PACKAGE / "web"
    return bundled if bundled.is_dir() else PACKAGE.parent / "web"


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
    ) -> None:
        self.config = config
        self.audio = audio
        self.streams = streams
        self.viewers = viewers
        self.publishers = publishers
        self.source = source
        self.egress = egress
        self.started = time.monotonic()

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
            "stream": self.stream_json(camera) if camera is not None else None,
            "streams": [self.stream_json(s) for s in self.streams],
            "source": self.source.describe(),
            "audio": self.audio_json(),
            "viewers": [session.describe() for session in self.viewers],
            "egress": self.egress.describe(),
        }


STATUS_KEY = web.AppKey("status", Status)


async def status_handler(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS_KEY].as_json())


# (name, help, key in the sessions' totals): counters summed over every viewer of a stream, ever.
VIEWER_COUNTERS = (
    ("appliance_sent_bytes_total", "Bytes sent to viewers, SRTP included.", "bytes"),
    ("appliance_sent_packets_total", "RTP packets sent to viewers.", "packets"),
    ("appliance_retransmitted_packets_total", "Packets resent on NACK.", "retransmits"),
    ("appliance_retransmissions_refused_total",
     "NACKed packets not resent: over the viewer's retransmission budget.", "retransmits_refused"),
    ("appliance_nacks_received_total", "RTCP NACKs received from viewers.", "nacks"),
    ("appliance_plis_received_total", "RTCP PLIs received from viewers.", "plis"),
    ("appliance_firs_received_total", "RTCP FIRs received from viewers.", "firs"),
    ("appliance_viewer_dropped_total", "Sends the kernel refused, or frames a slow viewer lost.",
     "dropped"),
)  # fmt: skip

# (name, type, help, what of a stream): one sample per stream.
STREAM_FAMILIES = (
    ("appliance_encoded_frames_total", "counter", "Access units published.", "frames"),
    ("appliance_encoded_bytes_total", "counter", "Bytes published.", "bytes"),
    ("appliance_keyframes_total", "counter", "Keyframes published.", "keyframes"),
    ("appliance_keyframes_forced_total", "counter",
     "Keyframes asked of the encoder or publisher for viewers.", "keyframes_forced"),
    ("appliance_keyframe_requests_total", "counter", "Keyframe requests (joins, PLI, FIR).",
     "keyframe_requests"),
)  # fmt: skip


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text format: streams, the camera, viewers, publishers, egress."""
    st = request.app[STATUS_KEY]
    viewers = st.viewers
    streams = list(st.streams)
    names = sorted({s.name for s in streams} | viewers.streams())
    viewers.observe_first_frames()
    totals = {name: viewers.totals(name) for name in names}
    e = Exposition()
    e.family("appliance_info", "gauge", "The daemon's version.", [({"version": __version__}, 1)])
    e.family(
        "appliance_uptime_seconds", "gauge", "Seconds since start.",
        [(None, time.monotonic() - st.started)],
    )  # fmt: skip
    e.family("appliance_streams", "gauge", "Streams served now.", [(None, len(streams))])
    e.family(
        "appliance_ice_stray_datagrams_total", "counter",
        "Datagrams to ICE ports dropped: empty, or not STUN and from no validated peer.",
        [(None, STRAY.total)],
    )  # fmt: skip
    e.family(
        "appliance_viewers", "gauge", "Viewers connected now.",
        [({"stream": n}, viewers.count(n)) for n in names],
    )  # fmt: skip
    e.family(
        "appliance_viewer_sessions_total", "counter", "WHEP sessions created.",
        [({"stream": n}, viewers.created.get(n, 0)) for n in names],
    )  # fmt: skip
    for name, text, key in VIEWER_COUNTERS:
        e.family(name, "counter", text, [({"stream": n}, totals[n][key]) for n in names])
    for name, kind, text, attr in STREAM_FAMILIES:
        e.family(name, kind, text, [({"stream": s.name}, getattr(s, attr)) for s in streams])
    rates = [(s.name, *s.rates()) for s in streams]
    e.family(
        "appliance_encoder_fps", "gauge", "Frames published per second (last 2 s).",
        [({"stream": n}, fps) for n, fps, _ in rates],
    )  # fmt: skip
    e.family(
        "appliance_encoder_bitrate_bps", "gauge", "Bits published per second (last 2 s).",
        [({"stream": n}, bps) for n, _, bps in rates],
    )  # fmt: skip
    e.family(
        "appliance_publishers", "gauge", "WHIP publishers connected now.",
        [(None, st.publishers.count())],
    )  # fmt: skip
    e.family(
        "appliance_publisher_sessions_total", "counter", "WHIP sessions created.",
        [(None, sum(st.publishers.created.values()))],
    )  # fmt: skip
    camera = st.streams.camera
    if camera is not None:
        source = st.source.describe()
        label = {"stream": camera.name}
        for name, kind, text, value in (
            ("appliance_source_up", "gauge", "1 while the video source runs.",
             1 if source.get("running") else 0),
            ("appliance_source_restarts_total", "counter", "Video source restarts.",
             source["restarts"]),
            ("appliance_capture_drops_total", "counter",
             "Captured pictures dropped because the encoder was busy.",
             source.get("capture_drops", 0)),
            ("appliance_capture_corrupt_frames_total", "counter",
             "Captured frames that could not be used.", source.get("corrupt_frames", 0)),
        ):  # fmt: skip
            e.family(name, kind, text, [(label, value)])
    audio = st.audio.describe()
    track = camera.audio if camera is not None else None
    e.family(
        "appliance_audio_source_up", "gauge", "1 while the audio source runs.",
        [(None, 1 if audio["running"] else 0)],
    )  # fmt: skip
    e.family(
        "appliance_audio_source_restarts_total", "counter", "Audio source restarts.",
        [(None, audio["restarts"])],
    )  # fmt: skip
    e.family(
        "appliance_audio_packets_total", "counter", "Opus packets encoded.",
        [(None, track.packets if track is not None else 0)],
    )  # fmt: skip
    targets = st.egress.targets
    if targets:
        e.family(
            "appliance_egress_up", "gauge", "1 while publishing to the WHIP endpoint.",
            [({"url": t.url}, 1 if t.state == "connected" else 0) for t in targets],
        )  # fmt: skip
        e.family(
            "appliance_egress_failures_total", "counter",
            "Egress sessions that failed or could not be set up.",
            [({"url": t.url}, t.failures) for t in targets],
        )  # fmt: skip
    for n in names:
        e.histogram(
            "appliance_time_to_first_frame_seconds",
            "From a viewer's WHEP POST to the first access unit sent to it.",
            viewers.histogram(n),
            {"stream": n},
        )
    return web.Response(
        body=e.render().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


WHIP_KEY = web.AppKey("whip", WhipHandlers)

OPENAPI = PACKAGE / "openapi.yaml"


SNAPSHOTS_KEY = web.AppKey("snapshots", dict[str, Snapshots])


async def snapshot_handler(request: web.Request) -> web.Response:
    streams = request.app[STATUS_KEY].streams
    stream = streams.get(request.match_info["stream"])
    cache = request.app[SNAPSHOTS_KEY]
    for gone in [name for name, snaps in cache.items() if streams.find(name) is not snaps.stream]:
        del cache[gone]  # a stream that ended, or was started again under its name
    if stream.name not in cache:
        cache[stream.name] = Snapshots(stream)
    jpeg = await cache[stream.name].latest()
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/yaml")


async def healthz_handler(request: web.Request) -> web.Response:
    status = request.app[STATUS_KEY]
    slot = status.source
    if slot.current is None and slot.last_error:
        return web.Response(status=503, text=f"source down: {slot.last_error}\n")
    stalled = status.stalled_for()
    if stalled is not None:
        return web.Response(status=503, text=f"source stalled: no frame for {stalled:.1f} s\n")
    return web.Response(text="ok\n")


async def controls_handler(request: web.Request) -> web.Response:
    """GET: the camera's controls. PATCH: set some ({"name": value, ...}), all or none."""
    slot = request.app[STATUS_KEY].source
    try:
        if request.method == "PATCH":
            try:
                values = parse_json(await body_text(request, "application/json"))
            except RequestError as e:
                return _json_error(e.status, str(e))
            if not isinstance(values, dict) or not values:
                return _json_error(400, 'send an object of control values: {"brightness": 128}')
            controls = slot.set_controls(values)
            logger.info("controls set: %s", printable(json.dumps(values)))
        else:
            controls = slot.controls()
    except ControlError as e:
        if slot.current is None:
            return _json_error(503, str(e), retry_after=2)
        return _json_error(400, str(e))
    return web.json_response({"controls": [c.as_json() for c in controls]})


MAX_JSON_DEPTH = 32


def parse_json(text: str) -> Any:
    """A JSON document (RFC 8259) as the API takes it: nested at most MAX_JSON_DEPTH deep, and no
    NaN or Infinity (not JSON, though Python's parser takes them); BadRequest says why not."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:  # the nesting, counted before the parser recurses into it
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif char in "]}":
            depth -= 1

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=constant)
    except ValueError as e:
        raise BadRequest(f"not JSON: {e}") from None


def _json_error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def required_right(method: str, path: str, default_stream: str) -> tuple[str, str] | None:
    """(right, stream) a request needs, or None for what anyone may fetch: the viewer page and its
    files (so that it can ask for a token), /healthz (for monitors), and CORS preflights."""
    if (
        method == "OPTIONS"
        or path in ("/", "/healthz", "/openapi.yaml")
        or path.startswith("/web/")
    ):
        return None
    parts = [p for p in path.split("/") if p]
    if path.startswith("/api/") or path == "/metrics":
        return ("admin", "*")
    if parts == ["whep"]:
        return ("read", default_stream)
    if len(parts) == 1 and path.endswith("/"):  # /<stream>/: the viewer page
        return None
    if len(parts) >= 2 and parts[1] in ("whep", "snapshot.jpg"):
        return ("read", parts[0])
    if len(parts) >= 2 and parts[1] == "whip":
        return ("publish", parts[0])
    return ("admin", "*")


def make_auth_middleware(authorizer: Authorizer, default_stream: str) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        need = required_right(request.method, request.path, default_stream)
        if need is None:
            return await handler(request)
        right, stream = need
        decision = authorizer.check(request.headers.get("Authorization"), right, stream)
        if decision.allowed:
            return await handler(request)
        challenge = 'Bearer realm="appliance"'
        if decision.error:
            challenge += f', error="{decision.error}"'
        if decision.status == 403:
            text = f"this token does not give the {right} right here\n"
        else:
            text = f"a bearer token with the {right} right is needed\n"
        logger.info(
            "%s %s: %d (%s)",
            printable(request.method),
            printable(request.path),
            decision.status,
            f"token {decision.who!r}" if decision.who else decision.error or "no token",
        )
        return web.Response(
            status=decision.status, text=text, headers={"WWW-Authenticate": challenge}
        )

    return auth


def make_error_middleware() -> Any:
    """RequestError to its status with its one-line reason. Anything else a handler raises is a
    bug of ours: 500, one log line (the traceback at debug level), and the daemon goes on."""

    refusals = LogLimiter(logger)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        what = f"{printable(request.method)} {printable(request.path)}"
        try:
            return await handler(request)
        except RequestError as e:
            if e.status >= 500:  # overload and unready streams: worth a line, never a flood
                refusals.log(logging.WARNING, "%s: %d %s", what, e.status, e)
            response = web.Response(status=e.status, text=f"{e}\n")
            if e.retry_after is not None:
                response.headers["Retry-After"] = str(e.retry_after)
            return response
        except (web.HTTPException, asyncio.CancelledError, ConnectionError):
            raise
        except Exception as e:
            logger.error("%s: 500: %s: %s", what, type(e).__name__, printable(str(e)))
            logger.debug("%s: 500", what, exc_info=True)
            return web.Response(status=500, text="internal error; the daemon's log says more\n")

    return errors


def cors_restricted(path: str) -> bool:
    """What answers other origins' pages only when `http.cors_origins` lists them: the picture
    (snapshots), the daemon's state and controls (/api/*) and /metrics. A page someone on the LAN
    opens must not read those through their browser. WHEP and WHIP answer any origin: that is what
    WHEP players on other sites need, and the read and publish tokens guard them."""
    return path.startswith("/api/") or path == "/metrics" or path.endswith("/snapshot.jpg")


def make_cors_middleware(origins: tuple[str, ...]) -> Any:
    listed_any = "*" in origins

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        allow: str | None = "*"
        if cors_restricted(request.path):
            allow = "*" if listed_any else origin if origin in origins else None
        try:
            response = await handler(request)
        except web.HTTPException as e:
            _add_cors(e, origin, allow, preflight)
            raise
        _add_cors(response, origin, allow, preflight)
        return response

    return cors


def _add_cors(
    response: web.StreamResponse, origin: str | None, allow: str | None, preflight: bool
) -> None:
    if not origin or allow is None:
        return
    response.headers["Access-Control-Allow-Origin"] = allow
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if allow != "*":
        response.headers["Vary"] = "Origin"
    if preflight:
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, If-Match, Authorization"
        response.headers["Access-Control-Max-Age"] = "600"


MAX_PATH = 1024


def make_limits_middleware() -> Any:
    """Request targets no route of ours can have: a path over MAX_PATH characters (a long /web/
    name was a 500 from the file system), or one that is not a path at all (`*`)."""

    @web.middleware
    async def limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(request.raw_path) > MAX_PATH:
            raise UriTooLong(f"the request target is longer than {MAX_PATH} characters")
        if not request.path.startswith("/"):
            raise BadRequest("the request target must be a path")
        return await handler(request)

    return limits


def make_app(status: Status) -> web.Application:
    """The HTTP application over the daemon's parts, which `status` holds."""
    config, streams = status.config, status.streams
    camera = streams.camera.name if streams.camera is not None else ""
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[
            make_cors_middleware(config.http.cors_origins),
            make_error_middleware(),
            make_limits_middleware(),
            make_auth_middleware(Authorizer(config.auth), camera),
        ],
    )
    app[STATUS_KEY] = status
    app[SNAPSHOTS_KEY] = {}
    root = web_root(config)
    rate = RateLimiter(config.http.sessions_per_minute, config.http.sessions_burst)
    whip = WhipHandlers(config, streams, status.publishers, status.viewers, rate)
    app[WHIP_KEY] = whip

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(root / "index.html")

    async def stream_page(request: web.Request) -> web.FileResponse:
        problem = name_problem(request.match_info["stream"])
        if problem is not None:
            raise SessionNotFound(problem)
        return web.FileResponse(root / "index.html")

    app.add_routes(
        [
            web.get("/", index),
            web.get("/api/status", status_handler),
            web.get("/api/controls", controls_handler),
            web.patch("/api/controls", controls_handler),
            web.get("/healthz", healthz_handler),
            web.get("/metrics", metrics_handler),
            web.get("/openapi.yaml", openapi_handler),
            web.get("/{stream}/snapshot.jpg", snapshot_handler),
            *WhepHandlers(config, streams, status.viewers, rate).routes(),
            *whip.routes(),
            web.get("/{stream}/", stream_page),
            web.static("/web", root),
        ]
    )
    return app
