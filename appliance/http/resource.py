"""What WHEP and WHIP share: the session resource a POST creates (RFC 9725 section 4).

Both protocols answer an SDP offer with 201, a `Location` for the session, an `ETag`, and `Link`
headers for the ICE servers; the session takes trickled candidates by PATCH
(`application/trickle-ice-sdpfrag`, `If-Match` checked) and ends on DELETE. Edge module (aiohttp);
errors are raised as core.errors.RequestError subclasses, which middleware.py maps to statuses.
"""

from __future__ import annotations

import logging
import math

from aiohttp import web

from appliance import rtc
from appliance.config import Config, IceServer
from appliance.core import sdp
from appliance.core.errors import (
    BadOffer,
    BadRequest,
    PreconditionFailed,
    SessionNotFound,
    TooManyRequests,
    Unprocessable,
    UnsupportedMedia,
)
from appliance.core.streams import name_problem
from appliance.http import ice
from appliance.http.auth import Authorizer
from appliance.http.ratelimit import RateLimiter
from appliance.http.sessions import Session, SessionRegistry

logger = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


async def body_text(request: web.Request, content_type: str) -> str:
    """The request's body as text of `content_type`, which SDP (RFC 8866 section 5) and JSON
    (RFC 8259) both write in UTF-8: another media type is 415, a charset other than UTF-8 is
    415, bytes that are not UTF-8 are 400."""
    if request.content_type != content_type:
        raise UnsupportedMedia(f"Content-Type must be {content_type}, got {request.content_type!r}")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8", "us-ascii"):
        raise UnsupportedMedia(f"{content_type} is UTF-8 text; charset={charset[:40]!r} is not")
    body = await request.read()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8 text (byte {e.start})") from None


class SessionResources:
    """POST/PATCH/DELETE/OPTIONS plumbing for one protocol (`kind` is "whep" or "whip")."""

    kind = ""
    right = ""  # what a token needs to create a session here ("read", "publish")

    def __init__(self, config: Config, sessions: SessionRegistry, rate: RateLimiter) -> None:
        self._config = config
        self._sessions = sessions
        self._rate = rate
        self._authorizer = Authorizer(config.auth)

    def _servers(self, stream: str) -> tuple[IceServer, ...]:
        """The ICE servers for one new session on `stream`, shared-secret credentials minted."""
        return ice.session_servers(self._config.webrtc.ice_servers, stream)

    def _stream_of(self, request: web.Request) -> str:
        return request.match_info["stream"]

    def session_routes(self) -> list[web.RouteDef]:
        return [
            web.patch(f"/{{stream}}/{self.kind}/{{session}}", self.patch),
            web.delete(f"/{{stream}}/{self.kind}/{{session}}", self.delete),
            web.options(f"/{{stream}}/{self.kind}/{{session}}", self.options_session),
        ]

    def _session(self, request: web.Request) -> Session:
        session = self._sessions.get(request.match_info["session"])
        if session.stream != request.match_info["stream"]:
            raise SessionNotFound(f"no session {request.match_info['session']!r} on this stream")
        return session

    def _take_rate(self, request: web.Request) -> None:
        """The per-client limits, checked before any await of the POST: sessions that have not
        connected yet (each holds sockets and a slot), then the session rate."""
        peer = request.remote or "?"
        limit = self._config.webrtc.half_open_per_client
        if self._sessions.half_open(peer) >= limit:
            raise TooManyRequests(
                f"{limit} sessions from this address are still connecting; try again when "
                "they have connected or timed out",
                math.ceil(self._config.webrtc.connect_timeout),
            )
        wait = self._rate.take(peer)
        if wait:
            raise TooManyRequests(
                "too many sessions from this address; try again later", math.ceil(wait)
            )

    async def _offer(self, request: web.Request) -> str:
        offer = await body_text(request, SDP)
        if not offer.strip():
            raise BadOffer("empty body: expected an SDP offer")
        return offer

    def _created(
        self, session: Session, answer: str, servers: tuple[IceServer, ...]
    ) -> web.Response:
        response = web.Response(status=201, body=answer.encode(), content_type=SDP)
        response.headers["Location"] = f"/{session.stream}/{self.kind}/{session.id}"
        response.headers["ETag"] = session.etag
        response.headers["Accept-Patch"] = SDPFRAG
        for link in ice.links(servers):
            response.headers.add("Link", link)
        return response

    async def patch(self, request: web.Request) -> web.Response:
        session = self._session(request)
        text = await body_text(request, SDPFRAG)
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match != "*" and if_match != session.etag:
            raise PreconditionFailed(f"If-Match {if_match} does not match the session's ETag")
        try:
            frag = sdp.SdpFrag.parse(text)
        except ValueError as e:
            raise BadOffer(f"malformed sdpfrag: {e}") from None
        if frag.ufrag is not None and frag.ufrag != session.remote_ufrag:
            raise Unprocessable("ICE restart is not supported; trickle candidates are")
        await rtc.add_candidates(session.pc, frag)
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        if self._sessions.ended_recently(session_id, request.match_info["stream"]):
            # Clients that close their peer connection first (medooze's whip-whep does) end the
            # session with DTLS close_notify a moment before their DELETE arrives: that DELETE
            # asked for what happened, and is not an error to them or a warning in our log.
            return web.Response(status=200)
        session = self._session(request)
        await self._sessions.close(session, f"DELETE from the {session.role}")
        return web.Response(status=200)

    async def options(self, request: web.Request) -> web.Response:
        """Always 204, for any stream: a CORS preflight that failed would hide the POST's own,
        precise answer (404, 409) from the page behind a network error.

        A client allowed to POST here (its token has the right, or none is needed) also gets the
        ICE servers as `Link` headers, credentials minted: it can then gather its relay
        candidates while its offer is on the way, instead of after the answer. A preflight
        carries no token, so it gets none."""
        response = web.Response(status=204)
        response.headers["Accept-Post"] = SDP
        response.headers["Allow"] = "OPTIONS, POST"
        stream = self._stream_of(request)
        if not stream or name_problem(stream) is not None:  # its name goes into the credential
            return response
        decision = self._authorizer.check(request.headers.get("Authorization"), self.right, stream)
        if decision.allowed:
            for link in ice.links(self._servers(stream)):
                response.headers.add("Link", link)
        return response

    async def options_session(self, request: web.Request) -> web.Response:
        self._session(request)
        response = web.Response(status=204)
        response.headers["Accept-Patch"] = SDPFRAG
        response.headers["Allow"] = "OPTIONS, PATCH, DELETE"
        return response
