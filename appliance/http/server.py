"""The HTTP server: the application over the daemon's parts, its routes and the files it serves
(the viewer page, `web/`, `/openapi.yaml`, snapshots). Requests pass through middleware.py; WHEP,
WHIP, the status, metrics and controls have modules of their own.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from appliance.config import Config
from appliance.core.errors import SessionNotFound
from appliance.core.streams import name_problem
from appliance.http.api import controls_handler
from appliance.http.auth import Authorizer
from appliance.http.metrics import metrics_handler
from appliance.http.middleware import (
    AUTHORIZER_KEY,
    make_auth_middleware,
    make_cors_middleware,
    make_error_middleware,
    make_limits_middleware,
)
from appliance.http.ratelimit import RateLimiter
from appliance.http.snapshot import Snapshots
from appliance.http.status import (
    STATUS_KEY,
    Status,
    health_handler,
    healthz_handler,
    status_handler,
    streams_handler,
)
from appliance.http.whep import WhepHandlers
from appliance.http.whip import WhipHandlers

logger = logging.getLogger(__name__)


MAX_BODY = 256 * 1024

PACKAGE = Path(__file__).resolve().parents[1]  # appliance/


def web_root(config: Config) -> Path:
    """The viewer's files: configured, else bundled in the wheel, else the checkout's web/."""
    if config.http.web_root:
        return Path(config.http.web_root)
    bundled = PACKAGE / "web"
    return bundled if bundled.is_dir() else PACKAGE.parent / "web"


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


async def preflight_handler(request: web.Request) -> web.Response:
    """A CORS preflight (OPTIONS) for the API, snapshots and metrics: the CORS middleware says what
    an origin may do; a page on another site sends one before any request with a token."""
    return web.Response(status=204)


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/yaml")


def make_app(status: Status) -> web.Application:
    """The HTTP application over the daemon's parts, which `status` holds."""
    config, streams = status.config, status.streams
    camera = streams.camera.name if streams.camera is not None else ""
    authorizer = Authorizer(config.auth)
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[
            make_cors_middleware(config.http.cors_origins),
            make_error_middleware(),
            make_limits_middleware(),
            make_auth_middleware(authorizer, camera),
        ],
    )
    app[STATUS_KEY] = status
    app[AUTHORIZER_KEY] = authorizer
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
            web.get("/api/health", health_handler),
            web.get("/api/streams", streams_handler),
            web.get("/api/controls", controls_handler),
            web.patch("/api/controls", controls_handler),
            web.get("/healthz", healthz_handler),
            web.get("/metrics", metrics_handler),
            web.get("/openapi.yaml", openapi_handler),
            web.get("/{stream}/snapshot.jpg", snapshot_handler),
            web.options("/api/{tail:.*}", preflight_handler),
            web.options("/metrics", preflight_handler),
            web.options("/{stream}/snapshot.jpg", preflight_handler),
            *WhepHandlers(config, streams, status.viewers, rate).routes(),
            *whip.routes(),
            web.get("/{stream}/", stream_page),
            web.static("/web", root),
        ]
    )
    return app
