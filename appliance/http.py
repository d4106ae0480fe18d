"""The HTTP surface: viewer page, WHEP, JSON status, camera controls and health, with CORS and
error mapping.

This is the one place where RequestError subclasses become HTTP statuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance import __version__
from appliance.auth import Authorizer
from appliance.config import Config
from appliance.controls import ControlError
from appliance.errors import RequestError, SessionNotFound
from appliance.metrics import Exposition
from appliance.sessions import SessionRegistry
from appliance.snapshot import Snapshots
from appliance.source import SourceSlot
from appliance.stream import Stream
from appliance.whep import WhepHandlers

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 256 * 1024
EXPOSED_HEADERS = "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After, WWW-Authenticate"


def web_root(config: Config) -> Path:
    """The viewer's files: configured, else bundled in the wheel, else the checkout's web/."""
    if config.http.web_root:
        return Path(config.http.web_root)
    bundled = Path(__file__).with_name("web")
    return bundled if bundled.is_dir() else Path(__file__).parent.parent / "web"


class Status:
    """What /api/status and /healthz report. Holds references, computes on request."""

    def __init__(
        self, config: Config, stream: Stream, sessions: SessionRegistry, source: SourceSlot
    ) -> None:
        self.config = config
        self.stream = stream
        self.sessions = sessions
        self.source = source
        self.started = time.monotonic()

    def stalled_for(self) -> float | None:
        """Seconds since the last frame when that is longer than two frame intervals plus 1 s."""
        last = self.stream.last_frame_at
        since = time.monotonic() - (last if last is not None else self.started)
        limit = 1.0 + 2.0 / self.config.video.fps
        return since if since > limit else None

    def as_json(self) -> dict[str, Any]:
        s = self.stream
        fps, bps = s.rates()
        video = self.config.video
        source = self.source.describe()
        mode = source.get("mode") or {"width": video.width, "height": video.height}
        return {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "stream": {
                "name": s.name,
                "ready": s.ready,
                "codec": "H264",
                "profile_level_id": s.profile_level_id,
                "width": mode["width"],
                "height": mode["height"],
                "fps": round(fps, 2),
                "bitrate": round(bps),
                "frames": s.frames,
                "bytes": s.bytes,
                "keyframes": s.keyframes,
                "keyframes_forced": s.keyframes_forced,
                "keyframe_requests": s.keyframe_requests,
            },
            "source": source,
            "viewers": [session.describe() for session in self.sessions],
        }


STATUS_KEY = web.AppKey("status", Status)


async def status_handler(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS_KEY].as_json())


# (name, type, help, key in the sessions' totals): counters summed over every viewer, ever.
VIEWER_COUNTERS = (
    ("appliance_sent_bytes_total", "Bytes sent to viewers, SRTP included.", "bytes"),
    ("appliance_sent_packets_total", "RTP packets sent to viewers.", "packets"),
    ("appliance_retransmitted_packets_total", "Packets resent on NACK.", "retransmits"),
    ("appliance_nacks_received_total", "RTCP NACKs received from viewers.", "nacks"),
    ("appliance_plis_received_total", "RTCP PLIs received from viewers.", "plis"),
    ("appliance_firs_received_total", "RTCP FIRs received from viewers.", "firs"),
    ("appliance_viewer_dropped_total", "Sends the kernel refused, or frames a slow viewer lost.",
     "dropped"),
)  # fmt: skip


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text format: the stream, the source, the viewers, time to first frame."""
    st = request.app[STATUS_KEY]
    s, sessions = st.stream, st.sessions
    source = st.source.describe()
    fps, bps = s.rates()
    sessions.observe_first_frames()
    totals = sessions.totals()
    label = {"stream": s.name}
    samples: list[tuple[str, str, str, float]] = [
        ("appliance_viewers", "gauge", "Viewers connected now.", len(sessions)),
        ("appliance_viewer_sessions_total", "counter", "WHEP sessions created.",
         sessions.created_total),
        *((name, "counter", text, totals[key]) for name, text, key in VIEWER_COUNTERS),
        ("appliance_encoded_frames_total", "counter", "Access units encoded.", s.frames),
        ("appliance_encoded_bytes_total", "counter", "Bytes encoded.", s.bytes),
        ("appliance_keyframes_total", "counter", "Keyframes encoded.", s.keyframes),
        ("appliance_keyframes_forced_total", "counter", "Keyframes forced for viewers.",
         s.keyframes_forced),
        ("appliance_keyframe_requests_total", "counter", "Keyframe requests (joins, PLI, FIR).",
         s.keyframe_requests),
        ("appliance_encoder_fps", "gauge", "Frames encoded per second (last 2 s).", fps),
        ("appliance_encoder_bitrate_bps", "gauge", "Bits encoded per second (last 2 s).", bps),
        ("appliance_source_up", "gauge", "1 while the video source runs.",
         1 if source.get("running") else 0),
        ("appliance_source_restarts_total", "counter", "Video source restarts.",
         source["restarts"]),
        ("appliance_capture_drops_total", "counter",
         "Captured pictures dropped because the encoder was busy.", source.get("capture_drops", 0)),
        ("appliance_capture_corrupt_frames_total", "counter",
         "Captured frames that could not be used.", source.get("corrupt_frames", 0)),
    ]  # fmt: skip
    e = Exposition()
    e.family("appliance_info", "gauge", "The daemon's version.", [({"version": __version__}, 1)])
    e.family(
        "appliance_uptime_seconds", "gauge", "Seconds since start.",
        [(None, time.monotonic() - st.started)],
    )  # fmt: skip
    for name, kind, text, value in samples:
        e.family(name, kind, text, [(label, value)])
    e.histogram(
        "appliance_time_to_first_frame_seconds",
        "From a viewer's WHEP POST to the first access unit sent to it.",
        sessions.first_frame,
        label,
    )
    return web.Response(
        body=e.render().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


OPENAPI = Path(__file__).with_name("openapi.yaml")


SNAPSHOTS_KEY = web.AppKey("snapshots", Snapshots)


async def snapshot_handler(request: web.Request) -> web.Response:
    st = request.app[STATUS_KEY]
    name = request.match_info["stream"]
    if name != st.stream.name:
        raise SessionNotFound(f"no stream named {name!r}")
    jpeg = await request.app[SNAPSHOTS_KEY].latest()
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
            if request.content_type != "application/json":
                return _json_error(415, "send the controls as application/json")
            try:
                values = await request.json()
            except ValueError as e:
                return _json_error(400, f"not JSON: {e}")
            if not isinstance(values, dict) or not values:
                return _json_error(400, 'send an object of control values: {"brightness": 128}')
            controls = slot.set_controls(values)
            logger.info("controls set: %s", values)
        else:
            controls = slot.controls()
    except ControlError as e:
        if slot.current is None:
            return _json_error(503, str(e), retry_after=2)
        return _json_error(400, str(e))
    return web.json_response({"controls": [c.as_json() for c in controls]})


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
            request.method,
            request.path,
            decision.status,
            f"token {decision.who!r}" if decision.who else decision.error or "no token",
        )
        return web.Response(
            status=decision.status, text=text, headers={"WWW-Authenticate": challenge}
        )

    return auth


def make_error_middleware() -> Any:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as e:
            if e.status >= 500:
                logger.warning("%s %s: %d %s", request.method, request.path, e.status, e)
            response = web.Response(status=e.status, text=f"{e}\n")
            if e.retry_after is not None:
                response.headers["Retry-After"] = str(e.retry_after)
            return response

    return errors


def make_cors_middleware(origins: tuple[str, ...]) -> Any:
    allow_any = "*" in origins

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        try:
            response = await handler(request)
        except web.HTTPException as e:
            _add_cors(e, origin, allow_any, origins, preflight)
            raise
        _add_cors(response, origin, allow_any, origins, preflight)
        return response

    return cors


def _add_cors(
    response: web.StreamResponse,
    origin: str | None,
    allow_any: bool,
    origins: tuple[str, ...],
    preflight: bool,
) -> None:
    if not origin or not (allow_any or origin in origins):
        return
    response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if not allow_any:
        response.headers["Vary"] = "Origin"
    if preflight:
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, If-Match, Authorization"
        response.headers["Access-Control-Max-Age"] = "600"


def make_app(
    config: Config, stream: Stream, sessions: SessionRegistry, source: SourceSlot
) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[
            make_cors_middleware(config.http.cors_origins),
            make_auth_middleware(Authorizer(config.auth), stream.name),
            make_error_middleware(),
        ],
    )
    app[STATUS_KEY] = Status(config, stream, sessions, source)
    app[SNAPSHOTS_KEY] = Snapshots(stream)
    root = web_root(config)

    async def index(request: web.Request) -> web.FileResponse:
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
            *WhepHandlers(config, stream, sessions).routes(),
            web.get(f"/{stream.name}/", index),
            web.static("/web", root),
        ]
    )
    return app
