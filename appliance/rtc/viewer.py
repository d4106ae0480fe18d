"""A viewer's media: what one WHEP viewer (or a WHIP egress target) is sent, on either path.

- The fast path (`FastVideo`, `FastAudio`; the product): aiortc negotiates, but its send loops
  never run (internals.take_over). When the connection is up, each track builds a
  send.RtpSender from what was negotiated, and the viewer joins the stream's fan-out
  (`join_when_connected`): from then on every access unit the stream packetizes into its ring
  reaches this viewer's socket, with only its own header and SRTP.
- aiortc's own path (`AiortcVideo`, `webrtc.sender = "aiortc"`): a track whose `recv()` hands
  aiortc the stream's access units, which it packetizes, protects and sends per viewer (a
  reference and a fallback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.core import rtp
from appliance.core.audio import AudioTrack
from appliance.core.media import AUDIO_CLOCK_RATE, VIDEO_CLOCK_RATE
from appliance.core.ring import PacketRing
from appliance.core.stream import Reader, ReaderClosed, Stream
from appliance.send.sender import Negotiated, RtpSender, SenderStats
from appliance.send.udp import Output

logger = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)

Sink = Callable[[RtpSender], None]


class EncodedAudioTrack(MediaStreamTrack):
    """The audio track aiortc's sender is given on the fast path: its own send loop never runs."""

    kind = "audio"

    async def recv(self) -> Any:
        raise MediaStreamError


class EncodedVideoTrack(MediaStreamTrack):
    """A video track that hands aiortc the stream's encoded access units, starting at a keyframe."""

    kind = "video"

    def __init__(self, reader: Reader | None) -> None:
        super().__init__()
        self._reader = reader

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        if self._reader is None:  # the fast path: aiortc's own send loop never runs
            raise MediaStreamError
        try:
            frame = await self._reader.get()
        except ReaderClosed:
            self.stop()
            raise MediaStreamError from None
        packet = av.Packet(frame.data)
        packet.pts = frame.pts
        packet.time_base = _TIME_BASE
        return packet


class AiortcVideo:
    """A viewer's video on aiortc's own path."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def join_when_connected(self, stream: Stream) -> None:
        """On this path the viewer reads the stream from the answer on (its `Reader`)."""

    def describe(self) -> dict[str, Any]:
        r = self.reader
        return {
            "path": "aiortc",
            "first_frame_at": r.first_frame_at,
            "frames": r.frames,
            "bytes": r.bytes,
            "backlog": r.backlog,
            "dropped": r.drops.total,
        }

    def close(self) -> None:
        self.reader.close()


def negotiated(parameters: Any, ssrc: int, rtx_ssrc: int, lip_sync: bool = False) -> Negotiated:
    """What the viewer's SDP settled for one sender. `lip_sync`: the viewer also gets audio, so
    the video goes without playout-delay 0/0, which would forbid the receiver to hold video
    back to match its audio buffer (measured: sound 105 ms behind the picture in Chromium with
    it; see tests/perf/bench_audio.py)."""
    codec = parameters.codecs[0]
    rtx_pt = next(
        (
            c.payloadType
            for c in parameters.codecs
            if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") == codec.payloadType
        ),
        None,
    )
    return Negotiated(
        payload_type=codec.payloadType,
        ssrc=ssrc,
        extension_ids={
            e.uri: e.id
            for e in parameters.headerExtensions
            if not (lip_sync and e.uri == rtp.URI_PLAYOUT_DELAY)
        },
        mid=parameters.muxId,
        cname=parameters.rtcp.cname or "appliance",
        rtx_payload_type=rtx_pt,
        rtx_ssrc=rtx_ssrc if rtx_pt is not None else None,
    )


def deliver_feedback(ours: RtpSender, item: tuple[Any, ...]) -> None:
    """One item of a viewer's RTCP about our sender's SSRC (core/rtp.read_feedback, after SRTCP
    authenticated it): a receiver report block, a NACK, a PLI or a FIR."""
    kind = item[0]
    if kind == rtp.REPORT:
        ours.on_receiver_report(item[2], item[3], item[4], item[5], item[6])
    elif kind == rtp.NACK:
        ours.on_nack(item[2])
    elif kind == rtp.PLI or kind == rtp.FIR:
        ours.on_keyframe_request(fir=kind == rtp.FIR)


class FastTrack:
    """One track of a viewer on the fast path (internals.TakenOver): its sender exists once the
    connection is up, and joins whatever `when_connected` was given."""

    kind = ""

    def __init__(
        self, name: str, ring: PacketRing, clock_rate: int, request_keyframe: Callable[[], None]
    ) -> None:
        self.name = name
        self.ring = ring
        self.clock_rate = clock_rate
        self.request_keyframe = request_keyframe
        self.lip_sync = False
        self.sender: RtpSender | None = None
        self._join: Sink | None = None
        self._leave: Sink | None = None

    def when_connected(self, join: Sink, leave: Sink) -> None:
        """`join(sender)` when the connection is up; `leave(sender)` when it closes."""
        self._join, self._leave = join, leave

    def start(self, parameters: Any, ssrc: int, rtx_ssrc: int, srtp: Any, output: Output) -> None:
        sender = RtpSender(
            self.name,
            self.ring,
            negotiated(parameters, ssrc, rtx_ssrc, self.lip_sync),
            srtp,
            output,
            self.request_keyframe,
            self.clock_rate,
        )
        self.sender = sender
        if self._join is not None:
            self._join(sender)

    def feedback(self, item: tuple[Any, ...]) -> None:
        if self.sender is not None:
            deliver_feedback(self.sender, item)

    def report(self) -> bytes | None:
        return self.sender.sender_report() if self.sender is not None else None

    @property
    def reports_in_batch(self) -> bool:
        """Its sender reports go out with every other viewer's of the stream, from one tick
        (send/native.py's NativeBatch), not from this viewer's own RTCP task."""
        return self.sender is not None and self.sender.reports_in_batch

    def bye(self) -> bytes | None:
        return self.sender.bye() if self.sender is not None else None

    def close(self) -> None:
        sender = self.sender
        if sender is not None:
            if self._leave is not None:
                self._leave(sender)
            sender.close()


class FastAudio(FastTrack):
    kind = "audio"

    def __init__(self, track: AudioTrack, name: str) -> None:
        super().__init__(name, track.ring, AUDIO_CLOCK_RATE, _no_keyframes)

    def describe(self) -> dict[str, Any]:
        s = self.sender.stats if self.sender else SenderStats()
        return {"packets": s.packets, "bytes": s.bytes, "dropped": s.send_drops}


def _no_keyframes() -> None:
    """Audio has no keyframes to ask for."""


class FastVideo(FastTrack):
    """A viewer's video on the fast path, and its audio (`audio`) when the stream has some."""

    kind = "video"

    def __init__(self, stream: Stream, name: str) -> None:
        super().__init__(name, stream.ring, VIDEO_CLOCK_RATE, stream.request_keyframe)
        self.stream = stream
        self.audio: FastAudio | None = None

    def add_audio(self, track: AudioTrack) -> FastAudio:
        self.audio = FastAudio(track, self.name)
        self.lip_sync = True  # see `negotiated`
        return self.audio

    def join_when_connected(self, stream: Stream) -> None:
        """The viewer's join: when its connection is up (ICE, DTLS, SRTP keyed), its senders become
        sinks of the stream's fan-out, video and audio; when the connection closes, they leave."""
        self.when_connected(stream.add_sink, stream.remove_sink)
        if self.audio is not None and stream.audio is not None:
            self.audio.when_connected(stream.audio.add_sink, stream.audio.remove_sink)

    def describe(self) -> dict[str, Any]:
        s = self.sender.stats if self.sender else SenderStats()
        audio = self.audio.describe() if self.audio is not None else None
        out: dict[str, Any] = {
            "path": "fast",
            # which loop sends its packets (send/native.py): "c", or "python" where C is not built
            "packet_loop": self.sender.packet_loop if self.sender else None,
            "first_frame_at": s.first_frame_at,
            "frames": s.frames,
            # audio included: what this viewer costs the link
            "bytes": s.bytes + (audio["bytes"] if audio else 0),
            "packets": s.packets + (audio["packets"] if audio else 0),
            "retransmits": s.retransmits,
            "retransmits_refused": s.retransmits_refused,
            "nacks": s.nacks,
            "plis": s.plis,
            "firs": s.firs,
            "dropped": s.send_drops,
            "send_error": s.send_error,
            "fraction_lost": s.fraction_lost,
            "packets_lost": s.packets_lost,
            "rtt_ms": None if s.rtt is None else round(s.rtt * 1000, 2),
        }
        if audio is not None:
            out["audio"] = audio
        return out

    def close(self) -> None:
        super().close()
        if self.audio is not None:
            self.audio.close()
