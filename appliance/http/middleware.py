"""What every request goes through: CORS, the mapping of errors to statuses (the one place where
RequestError subclasses become HTTP statuses), limits on the request target, and bearer tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from appliance.core.errors import BadRequest, RequestError, UriTooLong, printable
from appliance.core.stats import LogLimiter
from appliance.http.auth import Authorizer, Decision

logger = logging.getLogger(__name__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# ETag as a request header is not WHIP's (that is If-Match), but Eyevinn's WHIP client sends it
# with every trickle PATCH: a preflight that did not allow it failed the PATCH.
ALLOWED_HEADERS = "Content-Type, If-Match, Authorization, ETag"
# Access-Control-Allow-Methods too: Eyevinn's WHIP client reads it from its OPTIONS to learn
# whether PATCH (trickle) is allowed, and a page can read only the headers listed here.
EXPOSED_HEADERS = (
    "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After, WWW-Authenticate, "
    "Access-Control-Allow-Methods"
)


def required_right(method: str, path: str, default_stream: str) -> tuple[str, str] | None:
    """(right, stream) a request needs, or None for what anyone may fetch: the pages and their
    files (so that they can ask for a token), /healthz (for monitors), CORS preflights, and
    /api/streams (which lists what the bearer may read, and refuses itself)."""
    if (
        method == "OPTIONS"
        or path in ("/", "/healthz", "/openapi.yaml", "/api/streams")  # streams: per stream
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
    refusals = LogLimiter(logger)  # a guesser cannot flood the log

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        need = required_right(request.method, request.path, default_stream)
        if need is None:
            return await handler(request)
        right, stream = need
        decision = authorizer.check(request.headers.get("Authorization"), right, stream)
        if decision.allowed:
            return await handler(request)
        refusals.log(
            logging.INFO,
            "%s %s: %d (%s)",
            printable(request.method),
            printable(request.path),
            decision.status,
            f"token {decision.who!r}" if decision.who else decision.error or "no token",
        )
        return refusal(decision, right)

    return auth


def refusal(decision: Decision, right: str) -> web.Response:
    """401 or 403 for a refused `decision`, with its RFC 6750 challenge."""
    challenge = 'Bearer realm="appliance"'
    if decision.error:
        challenge += f', error="{decision.error}"'
    if decision.status == 403:
        text = f"this token does not give the {right} right here\n"
    else:
        text = f"a bearer token with the {right} right is needed\n"
    return web.Response(status=decision.status, text=text, headers={"WWW-Authenticate": challenge})


AUTHORIZER_KEY = web.AppKey("authorizer", Authorizer)


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
        # Every OPTIONS, not only preflights, says what other origins may send: Eyevinn's WHIP
        # client reads Access-Control-Allow-Methods from its own OPTIONS to decide on trickle.
        options = request.method == "OPTIONS"
        allow: str | None = "*"
        if cors_restricted(request.path):
            allow = "*" if listed_any else origin if origin in origins else None
        try:
            response = await handler(request)
        except web.HTTPException as e:
            _add_cors(e, origin, allow, options)
            raise
        _add_cors(response, origin, allow, options)
        return response

    return cors


def _add_cors(
    response: web.StreamResponse, origin: str | None, allow: str | None, options: bool
) -> None:
    if not origin or allow is None:
        return
    response.headers["Access-Control-Allow-Origin"] = allow
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    if allow != "*":
        response.headers["Vary"] = "Origin"
    if options:
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
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
