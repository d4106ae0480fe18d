"""RTSP 1.0 out (RFC 2326): `rtsp://<host>:8554/<stream>` for ffmpeg, GStreamer, VLC and NVRs
(Frigate, Home Assistant, Blue Iris), from the same encode and the same packetized ring as the
WebRTC viewers.

Edge module (asyncio). Each reader is one more sink of its stream's fan-out: a
`send.plain.PlainRtpSender` per track, with its own SSRC, sequence numbers and timestamp offset,
no SRTP. Transports: RTP over the RTSP connection (interleaved, TCP) or over UDP unicast to the
reader's ports. A reader starts at a keyframe, asked for when it plays. A TCP reader that cannot
keep up is dropped to the next keyframe, never queued without bound. A session is freed on
TEARDOWN, when its TCP connection closes, or after `rtsp.session_timeout` seconds without a
request or an RTCP report (`GET_PARAMETER` keeps it alive).

Access: with tokens configured, DESCRIBE, SETUP and PLAY need a token with the `read` right on
the stream, as the password of Basic or Digest authentication (any user name), so
`rtsp://viewer:<token>@host:8554/door` works in an NVR's config. Without tokens RTSP is open, as
WHEP is. Requests are handled as they arrive, without awaiting: nothing a reader sends makes
another wait.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from appliance.config import Config
from appliance.core import h264, rtsp
from appliance.core.errors import Overloaded
from appliance.core.rtsp import Interleaved, Request, RtspError, Transport
from appliance.core.stats import LogLimiter
from appliance.core.stream import Stream
from appliance.core.streams import Streams
from appliance.devices.headroom import HeadroomWatch
from appliance.http.auth import Authorizer
from appliance.send.plain import PlainRtpSender

logger = logging.getLogger(__name__)

REALM = "appliance"
PUBLIC = ", ".join(rtsp.METHODS)
SR_INTERVAL = 1.0  # seconds between sender reports, and between checks for quiet readers
SEND_BUFFER = 512 * 1024  # bytes; the kernel doubles it (socket(7))


@dataclass
class Reader:
    """One RTSP session: a reader of one stream, with one sender per track it set up."""

    id: str
    stream: Stream
    peer: str
    transport: str  # "tcp" or "udp"
    connection: Connection
    senders: dict[str, PlainRtpSender] = field(default_factory=dict)
    sockets: list[socket.socket] = field(default_factory=list)
    playing: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)

    def describe(self) -> dict[str, Any]:
        video = self.senders.get("video")
        return {
            "id": self.id,
            "stream": self.stream.name,
            "peer": self.peer,
            "transport": self.transport,
            "playing": self.playing,
            "tracks": sorted(self.senders),
            "frames": video.frames if video else 0,
            "bytes": sum(s.bytes for s in self.senders.values()),
            "dropped": video.drops.total if video else 0,
            "connected_s": round(time.monotonic() - self.started, 3),
        }


class RtspServer:
    """The RTSP listener and its sessions."""

    def __init__(
        self, config: Config, streams: Streams, webrtc_viewers: Callable[[str | None], int]
    ) -> None:
        self.config = config
        self.streams = streams
        self.webrtc_viewers = webrtc_viewers  # WebRTC viewers of a stream (None: of all)
        self.authorizer = Authorizer(config.auth)
        self.readers: dict[str, Reader] = {}
        self.connections: set[Connection] = set()
        self.refusals = LogLimiter(logger)
        self.headroom: HeadroomWatch | None = None  # admission by the daemon's headroom
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str | None, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host or None, port)
        self._sweeper = loop.create_task(self._sweep(), name="rtsp-sweep")
        if not self.authorizer.enforced:
            logger.warning(
                "RTSP is open: no auth tokens configured, anyone who reaches port %d can watch",
                self.port,
            )
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def count(self, stream: str | None = None) -> int:
        return sum(1 for r in self.readers.values() if stream is None or r.stream.name == stream)

    def describe(self) -> list[dict[str, Any]]:
        return [reader.describe() for reader in self.readers.values()]

    def by_transport(self, stream: str) -> dict[str, int]:
        out = {"tcp": 0, "udp": 0}
        for r in self.readers.values():
            if r.stream.name == stream:
                out[r.transport] += 1
        return out

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for reader in list(self.readers.values()):
            self.teardown(reader, "the daemon stops")
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def teardown(self, reader: Reader, why: str) -> None:
        if self.readers.pop(reader.id, None) is None:
            return
        for control, sender in reader.senders.items():
            sender.close()
            if control == "video":
                reader.stream.remove_sink(sender)
            elif reader.stream.audio is not None:
                reader.stream.audio.remove_sink(sender)
        loop = asyncio.get_running_loop()
        for sock in reader.sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        reader.connection.sessions.discard(reader.id)
        video = reader.senders.get("video")
        logger.info(
            "rtsp reader %s: closed: %s (after %.1f s, %d frames over %s)",
            reader.id[:8], why, time.monotonic() - reader.started,
            video.frames if video else 0, reader.transport,
        )  # fmt: skip

    async def _sweep(self) -> None:
        """Once a second: sender reports (RTP time against the capture clock, which readers need
        to line up sound and picture), and free what went quiet (a killed client, a pulled
        cable, a connection that never set anything up)."""
        timeout = self.config.rtsp.session_timeout
        while True:
            await asyncio.sleep(SR_INTERVAL)
            now = time.monotonic()
            for reader in list(self.readers.values()):
                if now - reader.last_seen > timeout:
                    self.teardown(reader, f"nothing from the reader for {timeout:g} s")
                elif reader.playing:
                    for sender in reader.senders.values():
                        report = sender.sender_report()
                        if report is not None:
                            sender.send_rtcp(report)
            for connection in list(self.connections):
                if not connection.sessions and now - connection.last_seen > timeout:
                    connection.close()


class Connection(asyncio.Protocol):
    """One client's TCP connection: its requests, and interleaved media when it plays over it."""

    def __init__(self, server: RtspServer) -> None:
        self.server = server
        self.reader = rtsp.MessageReader()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.local = "0.0.0.0"
        self.sessions: set[str] = set()
        self.nonce = secrets.token_hex(16)
        self.last_seen = time.monotonic()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.peer = str(peer[0]) if peer else "?"
        self.local = str(local[0]) if local else "0.0.0.0"
        limit = self.server.config.rtsp.max_connections
        per_client = self.server.config.http.max_connections_per_client
        mine = sum(1 for c in self.server.connections if c.peer == self.peer)
        if len(self.server.connections) >= limit or mine >= per_client:
            self.server.refusals.log(
                logging.WARNING,
                "rtsp: refused a connection from %s (%d of %d in all, %d of %d from it)",
                self.peer, len(self.server.connections), limit, mine, per_client,
            )  # fmt: skip
            transport.write(rtsp.response(503, "", {"Retry-After": "5"}))
            transport.close()
            return
        self.server.connections.add(self)
        # What a reader that falls behind may hold: the kernel's buffer is bounded (no autotuning
        # to megabytes), and past `max_backlog` in ours the sender skips to the next keyframe.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        transport.set_write_buffer_limits(high=4 << 20)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for session_id in list(self.sessions):
            reader = self.server.readers.get(session_id)
            if reader is not None and reader.transport == "tcp":
                self.server.teardown(reader, "the connection closed")

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        try:
            messages = self.reader.feed(data)
        except RtspError as e:  # unreadable: answer once, and end the connection
            self._refuse(e, "")
            self.close()
            return
        for message in messages:
            if isinstance(message, Interleaved):
                self._touch()  # an RTCP receiver report over TCP: the reader is alive
                continue
            try:
                self._handle(message)
            except RtspError as e:
                self._refuse(e, message.cseq)
            except Exception as e:  # a bug of ours: one line, a 500, and the daemon goes on
                logger.error(
                    "rtsp %s %s: 500: %s: %s", self.peer, message.method[:20], type(e).__name__, e
                )
                logger.debug("rtsp: 500", exc_info=True)
                self._send(rtsp.response(500, message.cseq))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- requests -----------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _refuse(self, e: RtspError, cseq: str) -> None:
        headers: list[tuple[str, str]] = []
        if e.status == 401:
            headers += [
                (
                    "WWW-Authenticate",
                    f'Digest realm="{REALM}", nonce="{self.nonce}", algorithm=MD5',
                ),
                ("WWW-Authenticate", f'Basic realm="{REALM}"'),
            ]
        elif e.status == 405:
            headers.append(("Allow", PUBLIC))
        if e.retry_after is not None:
            headers.append(("Retry-After", str(e.retry_after)))
        self._send(rtsp.response(e.status, cseq, headers))
        self.server.refusals.log(logging.INFO, "rtsp %s: %d %s", self.peer, e.status, e)

    def _touch(self) -> None:
        now = time.monotonic()
        for session_id in self.sessions:
            reader = self.server.readers.get(session_id)
            if reader is not None:
                reader.last_seen = now

    def _handle(self, request: Request) -> None:
        method = request.method
        if method == "OPTIONS":
            self._send(rtsp.response(200, request.cseq, {"Public": PUBLIC}))
            return
        if method not in rtsp.METHODS:
            raise RtspError(
                405 if method in ("ANNOUNCE", "RECORD") else 501,
                f"{method[:20]} is not served here",
            )
        if method == "DESCRIBE":
            self._describe(request)
            return
        if method == "SETUP":
            self._setup(request)
            return
        reader = self._session(request)
        reader.last_seen = time.monotonic()
        headers = {"Session": reader.id}
        if method == "PLAY":
            self._authorize(request, reader.stream.name)
            headers.update(self._play(reader))
        elif method == "PAUSE":
            if not reader.playing:
                raise RtspError(455, "PAUSE before PLAY")
            for sender in reader.senders.values():
                sender.paused = True
            reader.playing = False
        elif method == "TEARDOWN":
            self.server.teardown(reader, "TEARDOWN from the reader")
        # GET_PARAMETER: a keep-alive; last_seen is refreshed above.
        self._send(rtsp.response(200, request.cseq, headers))

    def _stream_of(self, uri: str) -> tuple[Stream, str]:
        """The stream a request's URL names, and the track control after it ("" for none)."""
        parts = [unquote(p) for p in urlsplit(uri).path.split("/") if p]
        if not parts:
            raise RtspError(404, "the URL names no stream: rtsp://<host>:<port>/<stream>")
        stream = self.server.streams.find(parts[0])
        if stream is None:
            raise RtspError(404, f"no stream {parts[0][:64]!r}")
        control = parts[1] if len(parts) > 1 else ""
        if len(parts) > 2 or control not in ("", "video", "audio"):
            raise RtspError(404, f"no track {'/'.join(parts[1:])[:64]!r} in {stream.name!r}")
        return stream, control

    def _authorize(self, request: Request, stream: str) -> None:
        authorizer = self.server.authorizer
        if authorizer.open_to("read"):
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                _, _, password = (
                    base64.b64decode(value.strip(), validate=True).decode().partition(":")
                )
            except (ValueError, UnicodeDecodeError):
                raise RtspError(
                    400, "Basic credentials that are not base64 user:password"
                ) from None
            decision = authorizer.check_token(password or None, "read", stream)
        elif scheme.lower() == "digest":
            decision = self._digest(value, request.method, stream)
        else:
            raise RtspError(401, "a token with the read right is needed (as the password)")
        if decision.status == 401:
            raise RtspError(401, f"unknown token for {stream!r}")
        if not decision.allowed:
            raise RtspError(403, f"this token does not give the read right on {stream!r}")

    def _digest(self, value: str, method: str, stream: str) -> Any:
        params = rtsp.digest_params(value)
        if params.get("nonce") != self.nonce or params.get("realm") != REALM:
            raise RtspError(401, "a stale or foreign Digest nonce")
        user, uri = params.get("username", ""), params.get("uri", "")
        ha2 = _md5(f"{method}:{uri}")
        qop, nc, cnonce = params.get("qop"), params.get("nc", ""), params.get("cnonce", "")

        def response_for(token: bytes) -> bytes:
            ha1 = _md5(f"{user}:{REALM}:{token.decode('utf-8', 'surrogateescape')}")
            tail = f"{self.nonce}:{nc}:{cnonce}:{qop}:{ha2}" if qop else f"{self.nonce}:{ha2}"
            return _md5(f"{ha1}:{tail}").encode()

        sent = params.get("response", "").lower().encode()
        return self.server.authorizer.check_digest(response_for, sent, "read", stream)

    def _describe(self, request: Request) -> None:
        stream, _ = self._stream_of(request.uri)
        self._authorize(request, stream.name)
        key = next((f.data for f in stream.gop if f.keyframe), None)
        sps = h264.find_nal(key, h264.NAL_SPS) if key else None
        pps = h264.find_nal(key, h264.NAL_PPS) if key else None
        if sps is None or pps is None or stream.profile_level_id is None:
            raise RtspError(503, f"stream {stream.name!r} has had no keyframe yet")
        tracks = [rtsp.h264_track(sps, pps, stream.profile_level_id)]
        if stream.audio is not None:
            tracks.append(rtsp.opus_track(stream.audio.channels))
        body = rtsp.sdp(rtsp.Description(stream.name, tracks), self.local, int(time.time()))
        base = request.uri.split("?", 1)[0].rstrip("/") + "/"
        headers = {"Content-Base": base}
        self._send(rtsp.response(200, request.cseq, headers, body, "application/sdp"))

    def _session(self, request: Request) -> Reader:
        value = request.headers.get("session", "").split(";", 1)[0].strip()
        if not value:
            raise RtspError(454, f"{request.method} needs a Session header")
        reader = self.server.readers.get(value)
        if reader is None:
            raise RtspError(454, f"no session {value[:40]!r}")
        return reader

    def _setup(self, request: Request) -> None:
        stream, control = self._stream_of(request.uri)
        self._authorize(request, stream.name)
        if control == "":
            control = "video"  # a client that SETUPs the aggregate URL of a one-track stream
        if control == "audio" and stream.audio is None:
            raise RtspError(404, f"stream {stream.name!r} has no sound")
        transport = rtsp.parse_transport(request.headers.get("transport", ""))
        reader: Reader | None = None
        if "session" in request.headers:
            reader = self._session(request)
            if reader.stream is not stream:
                raise RtspError(459, "one session plays one stream")
            if (reader.transport == "tcp") != transport.tcp:
                raise RtspError(461, "one session uses one transport for all its tracks")
            if control in reader.senders:
                raise RtspError(455, f"track {control} is set up already")
        else:
            limits = self.server.config.stream
            here = self.server.count(stream.name) + self.server.webrtc_viewers(stream.name)
            if here >= limits.max_viewers:
                raise RtspError(453, f"viewer limit of this stream reached ({limits.max_viewers})")
            if self.server.count() + self.server.webrtc_viewers(None) >= limits.max_viewers_total:
                raise RtspError(453, f"viewer limit reached ({limits.max_viewers_total})")
            refusal = self.server.headroom.check() if self.server.headroom else None
            if refusal is not None:
                raise RtspError(503, refusal, retry_after=Overloaded.retry_after)
            reader = Reader(
                secrets.token_hex(8), stream, self.peer, "tcp" if transport.tcp else "udp", self
            )
        sender, server_ports = self._sender(reader, stream, control, transport)
        reader.senders[control] = sender
        if reader.id not in self.server.readers:
            self.server.readers[reader.id] = reader
            self.sessions.add(reader.id)
            logger.info(
                "rtsp reader %s: new session on %s from %s over %s",
                reader.id[:8],
                stream.name,
                self.peer,
                reader.transport,
            )
        headers = {
            "Transport": transport.header(server_ports, sender.ssrc),
            "Session": f"{reader.id};timeout={int(self.server.config.rtsp.session_timeout)}",
        }
        self._send(rtsp.response(200, request.cseq, headers))

    def _sender(
        self, reader: Reader, stream: Stream, control: str, transport: Transport
    ) -> tuple[PlainRtpSender, tuple[int, int]]:
        video = control == "video"
        if video:
            ring, pt = stream.ring, 96
        else:
            assert stream.audio is not None
            ring, pt = stream.audio.ring, 97
        name = f"{reader.id[:8]}/{control}"
        if transport.tcp:
            assert self.transport is not None
            sender = PlainRtpSender(
                name,
                ring,
                pt,
                stream.request_keyframe,
                tcp=self.transport,
                channels=transport.channels,
                needs_keyframe=video,
            )
            return sender, (0, 0)
        rtp_sock, rtcp_sock = _udp_pair(self.local)
        reader.sockets += [rtp_sock, rtcp_sock]
        addresses = ((self.peer, transport.client_ports[0]), (self.peer, transport.client_ports[1]))
        sender = PlainRtpSender(
            name,
            ring,
            pt,
            stream.request_keyframe,
            udp=(rtp_sock, rtcp_sock),
            addresses=addresses,
            needs_keyframe=video,
        )
        loop = asyncio.get_running_loop()
        loop.add_reader(rtcp_sock.fileno(), self._rtcp_in, rtcp_sock, reader)
        ports = (rtp_sock.getsockname()[1], rtcp_sock.getsockname()[1])
        return sender, ports

    def _rtcp_in(self, sock: socket.socket, reader: Reader) -> None:
        try:
            while True:
                sock.recvfrom(2048)  # its receiver reports: the reader is alive
                reader.last_seen = time.monotonic()
        except (BlockingIOError, OSError):
            return

    def _play(self, reader: Reader) -> dict[str, str]:
        if not reader.senders:
            raise RtspError(455, "PLAY before SETUP")
        if not reader.playing:
            for control, sender in reader.senders.items():
                if sender.paused:
                    sender.resume()
                elif control == "video":
                    reader.stream.add_sink(sender)  # it starts at a keyframe, asked for now
                elif reader.stream.audio is not None:
                    reader.stream.audio.add_sink(sender)
            reader.playing = True
        base = f"rtsp://{self.local}:{self.server.port}/{reader.stream.name}"
        info = []
        for control, sender in reader.senders.items():
            seq, rtptime = sender.rtp_info
            info.append(f"url={base}/{control};seq={seq};rtptime={rtptime}")
        return {"Range": "npt=now-", "RTP-Info": ",".join(info)}


def _udp_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on consecutive ports, even then odd (RFC 3550 section 11)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(64):
        rtp_sock = socket.socket(family, socket.SOCK_DGRAM)
        rtp_sock.bind((host, 0))
        port = rtp_sock.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp_sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtcp_sock.bind((host, port + 1))
            except OSError:
                rtcp_sock.close()
                rtp_sock.close()
                continue
            for s in (rtp_sock, rtcp_sock):
                s.setblocking(False)
            return rtp_sock, rtcp_sock
        rtp_sock.close()
    raise RtspError(453, "no free pair of UDP ports")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogateescape")).hexdigest()
