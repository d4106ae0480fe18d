"""WHEP (draft-ietf-wish-whep): a viewer POSTs an offer and watches a stream; PATCH trickles
candidates, DELETE leaves. The session plumbing WHEP shares with WHIP is in resource.py.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from appliance import rtc
from appliance.config import Config
from appliance.core import sdp
from appliance.core.errors import Overloaded, SourceNotReady
from appliance.core.streams import Streams
from appliance.http.ratelimit import RateLimiter
from appliance.http.resource import SessionResources
from appliance.http.sessions import Session, SessionRegistry, new_session_id
from appliance.http.status import STATUS_KEY

logger = logging.getLogger(__name__)

# How long an offer waits for a starting stream's first keyframe before 503 (Retry-After: 1).
FIRST_KEYFRAME_WAIT_S = 5.0


class WhepHandlers(SessionResources):
    kind = "whep"
    right = "read"

    def __init__(
        self, config: Config, streams: Streams, viewers: SessionRegistry, rate: RateLimiter
    ) -> None:
        super().__init__(config, viewers, rate)
        self._streams = streams

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whep", self.post),
            web.options("/whep", self.options),
            web.post("/{stream}/whep", self.post),
            web.options("/{stream}/whep", self.options),
            *self.session_routes(),
        ]

    def _stream_of(self, request: web.Request) -> str:
        camera = self._streams.camera
        return request.match_info.get("stream") or (camera.name if camera else "")

    async def post(self, request: web.Request) -> web.Response:
        stream = self._streams.get(self._stream_of(request))
        offer = await self._offer(request)
        if stream.profile_level_id is None:
            # A camera still starting (the daemon serves before it is open), or a publisher
            # connecting: wait a little for its first keyframe rather than send the viewer away.
            try:
                await asyncio.wait_for(stream.keyframed.wait(), FIRST_KEYFRAME_WAIT_S)
            except asyncio.TimeoutError:
                raise SourceNotReady("the stream has not had its first keyframe yet") from None
        limits = self._config.stream
        rtsp = request.app[STATUS_KEY].rtsp  # RTSP readers count against the same limits
        here = self._sessions.count(stream.name) + (rtsp.count(stream.name) if rtsp else 0)
        if here >= limits.max_viewers:
            raise Overloaded(f"viewer limit of this stream reached ({limits.max_viewers})")
        if self._sessions.count() + (rtsp.count() if rtsp else 0) >= limits.max_viewers_total:
            raise Overloaded(f"viewer limit reached ({limits.max_viewers_total})")
        headroom = request.app[STATUS_KEY].headroom
        refusal = headroom.check() if headroom is not None else None
        if refusal is not None:
            raise Overloaded(refusal)
        self._take_rate(request)
        session_id = new_session_id()
        peer = request.remote or "?"
        servers = self._servers(stream.name)
        with self._sessions.reserve(stream.name, peer):  # the limits hold across the await
            pc, answer, media = await rtc.answer(
                offer,
                stream,
                servers,
                self._config.webrtc.sender,
                session_id[:8],
            )
            ufrag, _ = sdp.ice_credentials(offer)
            session = Session(session_id, pc, media, ufrag, peer, stream.name)
            self._sessions.add(session)
        # The viewer's join: once its connection is up (ICE, DTLS, SRTP keyed), its sender is a
        # sink of this stream's fan-out, and every access unit published reaches its socket.
        media.join_when_connected(stream)
        session.watch(self._sessions, self._config.webrtc.connect_timeout)
        logger.info(
            "viewer %s: new session on %s from %s", session.id[:8], stream.name, session.peer
        )
        return self._created(session, answer, servers)
