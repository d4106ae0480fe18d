"""WHEP (draft-ietf-wish-whep) handlers: POST an offer, PATCH trickle candidates, DELETE, OPTIONS.

Errors are raised as appliance.errors.RequestError subclasses; http.py maps them to statuses.
"""

from __future__ import annotations

import logging
import math

from aiohttp import web

from appliance import rtc, sdp
from appliance.config import Config
from appliance.errors import (
    BadOffer,
    Overloaded,
    PreconditionFailed,
    SessionNotFound,
    SourceNotReady,
    TooManyRequests,
    Unprocessable,
    UnsupportedMedia,
)
from appliance.ratelimit import RateLimiter
from appliance.sessions import Session, SessionRegistry, new_session_id
from appliance.stream import Stream

logger = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


def ice_server_links(config: Config) -> list[str]:
    """`Link` header values for the configured ICE servers (RFC 9725 section 4.6)."""
    links = []
    for server in config.webrtc.ice_servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username:
                link += (
                    f'; username="{server.username}"; credential="{server.credential}"'
                    '; credential-type="password"'
                )
            links.append(link)
    return links


class WhepHandlers:
    def __init__(self, config: Config, stream: Stream, sessions: SessionRegistry) -> None:
        self._config = config
        self._stream = stream
        self._sessions = sessions
        self._rate = RateLimiter(config.http.sessions_per_minute, config.http.sessions_burst)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whep", self.post),
            web.options("/whep", self.options),
            web.post("/{stream}/whep", self.post),
            web.options("/{stream}/whep", self.options),
            web.patch("/{stream}/whep/{session}", self.patch),
            web.delete("/{stream}/whep/{session}", self.delete),
            web.options("/{stream}/whep/{session}", self.options_session),
        ]

    def _check_stream(self, request: web.Request) -> None:
        name = request.match_info.get("stream", self._stream.name)
        if name != self._stream.name:
            raise SessionNotFound(f"no stream named {name!r}")

    def _session(self, request: web.Request) -> Session:
        self._check_stream(request)
        return self._sessions.get(request.match_info["session"])

    async def post(self, request: web.Request) -> web.Response:
        self._check_stream(request)
        if request.content_type != SDP:
            raise UnsupportedMedia(f"Content-Type must be {SDP}, got {request.content_type!r}")
        stream = self._stream
        if stream.profile_level_id is None:
            raise SourceNotReady("the video source has not produced its first keyframe yet")
        if len(self._sessions) >= self._config.stream.max_viewers:
            raise Overloaded(f"viewer limit reached ({self._config.stream.max_viewers})")
        wait = self._rate.take(request.remote or "?")
        if wait:
            raise TooManyRequests(
                "too many sessions from this address; try again later", math.ceil(wait)
            )
        offer = await request.text()
        if not offer.strip():
            raise BadOffer("empty body: expected an SDP offer")
        session_id = new_session_id()
        pc, answer, media = await rtc.answer(
            offer,
            stream,
            self._config.webrtc.ice_servers,
            self._config.webrtc.sender,
            session_id[:8],
        )
        ufrag, _ = sdp.ice_credentials(offer)
        session = Session(session_id, pc, media, ufrag, request.remote or "?")
        self._sessions.add(session)
        session.watch(self._sessions, self._config.webrtc.connect_timeout)
        location = f"/{stream.name}/whep/{session.id}"
        logger.info("viewer %s: new session from %s", session.id[:8], session.peer)
        response = web.Response(status=201, body=answer.encode(), content_type=SDP)
        response.headers["Location"] = location
        response.headers["ETag"] = session.etag
        response.headers["Accept-Patch"] = SDPFRAG
        for link in ice_server_links(self._config):
            response.headers.add("Link", link)
        return response

    async def patch(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if request.content_type != SDPFRAG:
            raise UnsupportedMedia(f"Content-Type must be {SDPFRAG}, got {request.content_type!r}")
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match != "*" and if_match != session.etag:
            raise PreconditionFailed(f"If-Match {if_match} does not match the session's ETag")
        try:
            frag = sdp.SdpFrag.parse(await request.text())
        except ValueError as e:
            raise BadOffer(f"malformed sdpfrag: {e}") from None
        if frag.ufrag is not None and frag.ufrag != session.remote_ufrag:
            raise Unprocessable("ICE restart is not supported; trickle candidates are")
        await rtc.add_candidates(session.pc, frag)
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        session = self._session(request)
        await self._sessions.close(session, "DELETE from the viewer")
        return web.Response(status=200)

    async def options(self, request: web.Request) -> web.Response:
        self._check_stream(request)
        response = web.Response(status=204)
        response.headers["Accept-Post"] = SDP
        response.headers["Allow"] = "OPTIONS, POST"
        return response

    async def options_session(self, request: web.Request) -> web.Response:
        self._session(request)
        response = web.Response(status=204)
        response.headers["Accept-Patch"] = SDPFRAG
        response.headers["Allow"] = "OPTIONS, PATCH, DELETE"
        return response
