"""WHIP ingest (RFC 9725): a publisher POSTs an offer to `/<stream>/whip` and feeds that stream.

WHEP viewers of the stream then watch it through the same packet ring and fan-out as the camera's,
with no transcoding: the publisher's access units are re-packetized once, and every viewer's
keyframe request (a join, a PLI) reaches the publisher as one PLI. Its Opus audio, if it sends
some, goes to the stream's audio track the same way (rtc.IngestAudio). One publisher per stream: a
second one gets 409, or replaces the first (`whip.on_conflict`). When the publisher leaves, the
stream and its viewers wait `whip.linger` seconds for another one (a relay reconnecting), then the
viewers' sessions are closed and the stream is gone.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from appliance import rtc
from appliance.config import Config
from appliance.core import sdp
from appliance.core.errors import Conflict, Forbidden
from appliance.core.stream import Stream
from appliance.core.streams import BadStreamName, Streams, name_problem
from appliance.http.ratelimit import RateLimiter
from appliance.http.resource import SessionResources
from appliance.http.sessions import Session, SessionRegistry, new_session_id

logger = logging.getLogger(__name__)


class WhipHandlers(SessionResources):
    kind = "whip"
    right = "publish"

    def __init__(
        self,
        config: Config,
        streams: Streams,
        publishers: SessionRegistry,
        viewers: SessionRegistry,
        rate: RateLimiter,
    ) -> None:
        super().__init__(config, publishers, rate)
        self._streams = streams
        self._viewers = viewers
        self._pending: set[str] = set()  # streams with a POST being answered
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/{stream}/whip", self.post),
            web.options("/{stream}/whip", self.options),
            *self.session_routes(),
        ]

    def _check_name(self, name: str) -> None:
        if not self._config.whip.ingest:
            raise Forbidden("WHIP ingest is turned off on this device (whip.ingest = false)")
        problem = name_problem(name)
        if problem is not None:
            raise BadStreamName(problem)
        if name in self._streams.cameras:
            raise Conflict(
                f"stream {name!r} is one of this device's cameras; publish to another name"
            )

    def publisher(self, stream: str) -> Session | None:
        sessions = self._sessions.of_stream(stream)
        return sessions[0] if sessions else None

    async def post(self, request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        self._check_name(name)
        offer = await self._offer(request)
        replace = self._config.whip.on_conflict == "replace"
        if name in self._pending or (self.publisher(name) is not None and not replace):
            raise Conflict(
                f"stream {name!r} has a publisher; it must DELETE its session first "
                '(or set whip.on_conflict = "replace")'
            )
        self._take_rate(request)
        stream = self._streams.find(name)
        created = stream is None
        if stream is None:
            stream = self._streams.create(name)
        self._pending.add(name)
        session_id = new_session_id()
        peer = request.remote or "?"
        servers = self._servers(name)
        try:
            with self._sessions.reserve(name, peer):
                pc, answer, media = await rtc.receive(offer, stream, servers, session_id[:8])
        except BaseException:
            if created and self.publisher(name) is None:
                self._streams.remove(stream)
            raise
        finally:
            self._pending.discard(name)
        old = self.publisher(name)
        if old is not None:
            await self._sessions.close(old, "replaced by a new publisher")
        self._cancel_expiry(name)
        media.on_close.append(lambda gone: self._publisher_left(stream, gone))
        stream.attach_encoder(media.request_keyframe)
        ufrag, _ = sdp.ice_credentials(offer)
        session = Session(session_id, pc, media, ufrag, peer, name, role="publisher")
        self._sessions.add(session)
        session.watch(self._sessions, self._config.webrtc.connect_timeout)
        logger.info("publisher %s: new session on %s from %s", session_id[:8], name, session.peer)
        return self._created(session, answer, servers)

    def _publisher_left(self, stream: Stream, media: rtc.IngestVideo) -> None:
        stream.detach_encoder(media.request_keyframe)
        if self._closing or stream.has_encoder or self._streams.find(stream.name) is not stream:
            return  # the daemon stops, or a new publisher feeds it
        linger = self._config.whip.linger
        logger.info("stream %s: its publisher left; kept %g s for another one", stream.name, linger)
        self._cancel_expiry(stream.name)
        loop = asyncio.get_running_loop()
        self._expiry[stream.name] = loop.call_later(linger, self._expire, stream)

    def _cancel_expiry(self, name: str) -> None:
        timer = self._expiry.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, stream: Stream) -> None:
        self._expiry.pop(stream.name, None)
        name = stream.name
        if stream.has_encoder or self.publisher(name) is not None or name in self._pending:
            return
        logger.info("stream %s: no publisher came back; closing it", name)
        self._streams.remove(stream)  # a publisher that comes now starts a new stream
        viewers = self._viewers.of_stream(name)
        task = asyncio.get_running_loop().create_task(
            self._viewers.close_many(viewers, "the stream's publisher left")
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Before the publishers are closed at shut-down: no stream waits for a new one."""
        self._closing = True
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
