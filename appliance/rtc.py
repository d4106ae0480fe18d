"""The aiortc seam: the only module that knows aiortc, and the only one that touches its internals.

aiortc gives us SDP parsing, ICE (aioice), DTLS, SRTP keying and RTCP parsing. For each viewer we build
an `RTCPeerConnection` whose one sendonly video transceiver exists *before* the remote description is
set (aiortc applies codec preferences there), restrict it to the H.264 profile the stream really
carries, strip Chromium's mDNS candidates (see sdp.py), and rewrite the answer's profile-level-id to
the stream's own.

Media then takes one of two paths (config `webrtc.sender`):

- "fast" (the product): aiortc's sender is kept for what it negotiates, but its send loop never runs.
  When aiortc would start it (DTLS up), our `sender.RtpSender` takes the negotiated payload types,
  SSRCs and extension ids, the SRTP session aiortc keyed, and the UDP path ICE nominated, and the
  stream hands it every access unit's packets from the shared ring. RTCP for its SSRC (PLI, FIR,
  NACK, receiver reports) is routed to it; it sends its own sender reports.
- "aiortc" (a reference and a fallback): a track whose `recv()` returns the stream's access units as
  `av.Packet`s, which aiortc packetizes, protects and sends per viewer.

Private aiortc symbols used here (guarded by tests/test_rtc_contract.py; aiortc pinned in
pyproject.toml):
- `RTCRtpSender._send_keyframe()`: aiortc calls it on PLI/FIR; on the aiortc path we aim it at the
  stream (aiortc's own only flags its encoder, which pre-encoded media never uses).
- `RTCRtpSender._run_rtp(codec)`, `._run_rtcp()`, `._handle_rtcp_packet(packet)`, and the events
  `_RTCRtpSender__rtp_started/__rtp_exited/__rtcp_started/__rtcp_exited` that `stop()` waits on:
  replaced per instance on the fast path.
- `RTCRtpSender._ssrc`, `._rtx_ssrc`; `RTCDtlsTransport._tx_srtp` (the pylibsrtp Session) and
  `._send_rtp()` (sends our RTCP through SRTCP); `RTCIceTransport._connection._nominated[1]` (the
  aioice pair: its `protocol.transport` socket and `remote_addr`).
- `aiortc.codecs.HEADER_EXTENSIONS`: playout-delay and abs-capture-time are added, so that aiortc
  accepts them in the answer when a viewer offers them.
- `RTCRtpReceiver._RTCRtpReceiver__decoder_queue` (WHIP ingest): replaced before the receiver starts
  by an `IngestVideo`, whose `put()` takes aiortc's reassembled access units (`JitterFrame`:
  depayloaded Annex-B, `timestamp` unwrapped from 0) on the event loop, and whose `get()` returns
  None so that aiortc's decoder thread exits at once: a publisher's video is never decoded.
  `RTCRtpReceiver._send_rtcp_pli(ssrc)` sends keyframe requests to the publisher. The receiver's
  `_RTCRtpReceiver__jitter_buffer` is replaced too, by a `MarkerJitterBuffer` (a subclass that
  overrides `_remove_frame` and reads `_packets`, `_origin`, `_capacity`, `remove()`).
- `RTCCertificate._create_ssl_context()`: wrapped so that the DTLS context also offers ECDHE-RSA
  suites. aiortc's own list is ECDSA only, which works when the peer's certificate is ECDSA (every
  browser); a peer with an RSA certificate (GStreamer's webrtcbin, so `whipsink` publishers and
  GStreamer viewers) fails the handshake with "no shared cipher" whenever aiortc is the DTLS
  client, i.e. whenever we answer its offer (WHIP ingest, WHEP).
- `aiortc.codecs.CODECS["video"]`: H.264 Main (4d001f) and High (64001f), each with its RTX, are
  appended after aiortc's two Baseline entries when this module is imported, so that a Main or
  High stream (a UVC camera's own H.264, `video.profile`) can be answered to a viewer that offers
  that profile. aiortc matches H.264 by profile and packetization mode (`is_codec_compatible`);
  the level is ours.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import aioice.ice
import av
from aioice import stun
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import (
    RTCCertificate,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS, HEADER_EXTENSIONS
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
)
from aiortc.sdp import candidate_from_sdp

from appliance import h264, rtp, sdp
from appliance.audio import AudioTrack
from appliance.config import IceServer
from appliance.errors import BadOffer, NoCommonCodec
from appliance.media import AUDIO_CLOCK_RATE, VIDEO_CLOCK_RATE, EncodedAudio, EncodedFrame, Timeline
from appliance.ring import PacketRing
from appliance.sender import Negotiated, Output, RtpSender, SenderStats, UdpOutput
from appliance.stats import DropReporter
from appliance.stream import Reader, ReaderClosed, Stream

logger = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
_BASELINE = "4200"
_CONSTRAINED_BASELINE = "42e0"
_EXTRA_VIDEO_EXTENSIONS = {rtp.URI_PLAYOUT_DELAY: 4, rtp.URI_ABS_CAPTURE_TIME: 5}


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


class FastTrack:
    """One track of a viewer on the fast path; its sender exists once DTLS is up."""

    kind = ""

    def __init__(
        self,
        name: str,
        ring: PacketRing,
        clock_rate: int,
        request_keyframe: Callable[[], None],
        sinks: Any,
    ) -> None:
        self.name = name
        self.ring = ring
        self.clock_rate = clock_rate
        self.request_keyframe = request_keyframe
        self._sinks = sinks  # what add_sink/remove_sink are called on: a Stream or an AudioTrack
        self.sender: RtpSender | None = None

    def start(self, sender: RtpSender) -> None:
        self.sender = sender
        self._sinks.add_sink(sender)

    def close(self) -> None:
        if self.sender is not None:
            self._sinks.remove_sink(self.sender)
            self.sender.close()


class FastAudio(FastTrack):
    kind = "audio"

    def __init__(self, track: AudioTrack, name: str) -> None:
        super().__init__(name, track.ring, AUDIO_CLOCK_RATE, _no_keyframes, track)

    def describe(self) -> dict[str, Any]:
        s = self.sender.stats if self.sender else SenderStats()
        return {"packets": s.packets, "bytes": s.bytes, "dropped": s.send_drops}


def _no_keyframes() -> None:
    """Audio has no keyframes to ask for."""


class FastVideo(FastTrack):
    """A viewer's video on the fast path, and its audio (`audio`) when the stream has some."""

    kind = "video"

    def __init__(self, stream: Stream, name: str) -> None:
        super().__init__(name, stream.ring, VIDEO_CLOCK_RATE, stream.request_keyframe, stream)
        self.stream = stream
        self.audio: FastAudio | None = None

    def describe(self) -> dict[str, Any]:
        s = self.sender.stats if self.sender else SenderStats()
        audio = self.audio.describe() if self.audio is not None else None
        out: dict[str, Any] = {
            "path": "fast",
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


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, except that an access unit is complete at its marker packet
    (RFC 6184: the last packet of an access unit), not when the next one's first packet arrives.
    That is one frame interval (33 ms at 30 fps) less latency through WHIP ingest. A frame whose
    marker packet is lost is still emitted when the next frame starts, as aiortc does."""

    def __init__(self) -> None:
        super().__init__(capacity=512, is_video=True)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        assert self._origin is not None
        packets = []
        timestamp = None
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                break
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                break
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(b"".join(p._data for p in packets), timestamp)  # type: ignore[attr-defined]
        return super()._remove_frame(sequence_number)


class PassThroughAudioBuffer(JitterBuffer):
    """For a publisher's Opus: every RTP packet is a whole frame, handed on as it arrives (aiortc's
    audio buffer holds four packets back, 80 ms, for its decoder). A packet older than the last
    one handed on (late, or a duplicate) is dropped; a lost one is a gap the viewers' own jitter
    buffers conceal."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last: int | None = None

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None and not 0 < (seq - self._last) & 0xFFFF < 0x8000:
            return False, None
        self._last = seq
        return False, JitterFrame(packet._data, packet.timestamp)


class _DecoderQueue:
    """What replaces an aiortc receiver's decoder queue: `put()` takes each reassembled frame
    (a JitterFrame, its timestamp unwrapped from 0) on the event loop; `get()` returns None, so
    that aiortc's decoder thread exits at once. A publisher's frames are placed on the daemon's
    clocks (`media.Timeline`): the first at "now", the later ones at the publisher's spacing."""

    def __init__(self, clock_rate: int) -> None:
        self.timeline = Timeline(clock_rate)
        self.active = True

    def get(self, *args: Any, **kwargs: Any) -> None:
        return None


class IngestAudio(_DecoderQueue):
    """A publisher's Opus, into the stream's audio track as it arrives, not decoded. Placed on the
    clock as the video is, each at its first packet's arrival (the publisher's sender reports are
    not used: the two are as far apart as their arrival makes them)."""

    def __init__(self, track: AudioTrack) -> None:
        super().__init__(AUDIO_CLOCK_RATE)
        self.track = track
        self.packets = 0

    def put(self, item: Any) -> None:
        if item is None or not self.active:
            return
        _codec, frame = item
        if not frame.data:
            return
        pts, capture_ns = self.timeline.place(frame.timestamp)
        self.packets += 1
        self.track.publish(EncodedAudio(frame.data, pts, capture_ns))

    def close(self) -> None:
        self.active = False


class IngestVideo(_DecoderQueue):
    """A publisher's video, from aiortc's jitter buffer into a stream, not decoded (WHIP ingest).

    Timestamps: the stream's pts and capture times continue on the daemon's clocks. The first
    keyframe is placed at "now", and later access units keep the publisher's own spacing (its RTP
    timestamps), so a new publisher (a reconnect, a replacement) continues the stream's timeline.
    Access units before the first keyframe are dropped, with a keyframe asked for.
    """

    def __init__(self, stream: Stream, name: str, ssrc: int | None) -> None:
        super().__init__(VIDEO_CLOCK_RATE)
        self.stream = stream
        self.name = name
        self.receiver: Any = None
        self._ssrc = ssrc
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames = 0
        self.bytes = 0
        self.keyframes = 0
        self.plis_sent = 0
        self.first_frame_at: float | None = None
        self.on_close: list[Any] = []
        self.audio: IngestAudio | None = None

    def put(self, item: Any) -> None:
        if item is None or not self.active:
            return
        _codec, jitter_frame = item
        data: bytes = jitter_frame.data
        if not data:
            return
        keyframe = h264.is_keyframe(data)
        if self.first_frame_at is None:
            if not keyframe:
                self.request_keyframe()
                return
            self.first_frame_at = time.monotonic()
        pts, capture_ns = self.timeline.place(jitter_frame.timestamp)
        self.frames += 1
        self.bytes += len(data)
        self.keyframes += keyframe
        self.stream.publish(EncodedFrame(data, pts, keyframe, capture_ns))

    def request_keyframe(self) -> None:
        """Send a PLI to the publisher (the stream merges and rate-limits the requests)."""
        receiver = self.receiver
        if receiver is None or not self.active:
            return
        ssrc = self._ssrc
        if ssrc is None:
            sources = receiver.getSynchronizationSources()
            if not sources:
                return
            ssrc = sources[0].source
        self.plis_sent += 1
        task = asyncio.get_running_loop().create_task(receiver._send_rtcp_pli(ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def describe(self) -> dict[str, Any]:
        return {
            "path": "ingest",
            "first_frame_at": self.first_frame_at,
            "frames": self.frames,
            "bytes": self.bytes,
            "keyframes": self.keyframes,
            "plis_sent": self.plis_sent,
            "audio_packets": self.audio.packets if self.audio is not None else None,
        }

    def close(self) -> None:
        if not self.active:
            return
        self.active = False
        if self.audio is not None:
            self.audio.close()
        for task in self._tasks:
            task.cancel()
        for callback in self.on_close:
            callback(self)


def ice_configuration(servers: Sequence[IceServer]) -> RTCConfiguration:
    """An explicit ICE server list (never aiortc's default public STUN server)."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(
                urls=list(s.urls), username=s.username or None, credential=s.credential or None
            )
            for s in servers
        ]
    )


def choose_h264_format(offer: str, stream_profile_level_id: str) -> str:
    """The profile-level-id to answer with for a stream of the given profile; NoCommonCodec if none.

    A Constrained Baseline stream is also valid Baseline, so it may be answered as Baseline when
    the viewer offers only that.
    """
    profile, level = stream_profile_level_id[:4], stream_profile_level_id[4:]
    offered = set()
    for _, mode, plid in sdp.h264_formats(offer):
        try:
            offered_profile, _ = h264.parse_profile_level_id(plid)
        except ValueError:
            continue
        if mode == 1:
            offered.add(offered_profile)
    if profile in offered:
        return stream_profile_level_id
    if profile == _CONSTRAINED_BASELINE and _BASELINE in offered:
        return _BASELINE + level
    what = ", ".join(sorted(offered)) or "none"
    raise NoCommonCodec(
        f"this stream is H.264 profile-level-id {stream_profile_level_id} with "
        f"packetization-mode=1; the offer's H.264 profiles (packetization-mode=1): {what}"
    )


def _codec_preferences(profile_level_id: str) -> list[Any]:
    profile = profile_level_id[:4]
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = []
    for cap in caps:
        if cap.mimeType.lower() != "video/h264":
            continue
        cap_profile, _ = h264.parse_profile_level_id(str(cap.parameters["profile-level-id"]))
        if cap_profile == profile:
            chosen.append(cap)
    chosen += [cap for cap in caps if cap.mimeType.lower() == "video/rtx"]
    return chosen


# Extra H.264 profiles: (profile-level-id, payload type; its RTX is the next one). aiortc's own
# video codecs take 97-102 (VP8, H.264 42001f, 42e01f, each with RTX).
_EXTRA_H264 = (("4d001f", 103), ("64001f", 105))


def _accept_more_h264_profiles() -> None:
    video = CODECS["video"]
    known = {str(c.parameters.get("profile-level-id")) for c in video if c.mimeType == "video/H264"}
    for plid, pt in _EXTRA_H264:
        if plid in known:
            continue
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=pt,
                rtcpFeedback=[
                    RTCRtcpFeedback(type="nack"),
                    RTCRtcpFeedback(type="nack", parameter="pli"),
                    RTCRtcpFeedback(type="goog-remb"),
                ],
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": plid,
                },
            )
        )
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx", clockRate=90000, payloadType=pt + 1, parameters={"apt": pt}
            )
        )


# At import, before any peer connection (ours, or an aiortc client's in the same process) exists.
_accept_more_h264_profiles()

# aiortc's four ECDSA suites, then the same with RSA certificates (see the module docstring).
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:"
    b"ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)


def _accept_rsa_dtls_peers() -> None:
    original = RTCCertificate._create_ssl_context
    if getattr(original, "wider_ciphers", False):
        return

    def create(self: RTCCertificate, srtp_profiles: Any) -> Any:
        context = original(self, srtp_profiles)
        context.set_cipher_list(DTLS_CIPHERS)
        return context

    create.wider_ciphers = True  # type: ignore[attr-defined]
    RTCCertificate._create_ssl_context = create  # type: ignore[method-assign]


_accept_rsa_dtls_peers()


def _accept_extra_extensions() -> None:
    video = HEADER_EXTENSIONS["video"]
    known = {e.uri for e in video}
    for uri, ext_id in _EXTRA_VIDEO_EXTENSIONS.items():
        if uri not in known:
            video.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))


async def answer(
    offer: str, stream: Stream, ice_servers: Sequence[IceServer], path: str, name: str
) -> tuple[RTCPeerConnection, str, AiortcVideo | FastVideo]:
    """A peer connection that sends the stream, the SDP answer, and the viewer's media handle.

    Raises BadOffer (400) or NoCommonCodec (406). On error, nothing is left open.
    """
    problem = sdp.webrtc_offer_problem(offer)
    if problem is not None:
        raise BadOffer(problem)
    if not sdp.has_video(offer):
        raise NoCommonCodec("the offer has no video section; this stream sends H.264 video")
    assert stream.profile_level_id is not None
    answer_plid = choose_h264_format(offer, stream.profile_level_id)
    pc = RTCPeerConnection(ice_configuration(ice_servers))
    media: AiortcVideo | FastVideo
    audio_transceiver = None
    if path == "fast":
        _accept_extra_extensions()
        media = FastVideo(stream, name)
        transceiver = pc.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        _take_over_sender(transceiver.sender, media)
        if stream.audio is not None and sdp.has_media(offer, "audio"):
            media.audio = FastAudio(stream.audio, name)
            audio_transceiver = _add_audio(pc, media.audio)
    else:
        reader = stream.subscribe(name)
        media = AiortcVideo(reader)
        transceiver = pc.addTransceiver(EncodedVideoTrack(reader), direction="sendonly")
        # aiortc calls this on PLI/FIR; aim it at the encoder (see the module docstring).
        transceiver.sender._send_keyframe = stream.request_keyframe  # type: ignore[method-assign]
    try:
        transceiver.setCodecPreferences(_codec_preferences(answer_plid))
        if audio_transceiver is not None:
            audio_transceiver.setCodecPreferences(_opus())
        await _apply_offer(pc, offer)
        await _create_answer(pc)
        text = sdp.set_h264_profile_level_id(pc.localDescription.sdp, answer_plid)
        if audio_transceiver is not None and stream.audio is not None and stream.audio.channels > 1:
            text = sdp.set_opus_stereo(text)
        return pc, text, media
    except BaseException:
        media.close()
        await close_quietly(pc)
        raise


# H.264 as ingest takes it, in the order of preference: what every browser decodes first.
_INGEST_PROFILES = ("42e0", "4200", "4d00", "6400")


def _ingest_preferences() -> list[Any]:
    capabilities = RTCRtpReceiver.getCapabilities("video")
    assert capabilities is not None
    caps = capabilities.codecs
    h264_caps = [c for c in caps if c.mimeType.lower() == "video/h264"]

    def rank(cap: Any) -> int:
        profile, _ = h264.parse_profile_level_id(str(cap.parameters["profile-level-id"]))
        return _INGEST_PROFILES.index(profile) if profile in _INGEST_PROFILES else 99

    return sorted(h264_caps, key=rank) + [c for c in caps if c.mimeType.lower() == "video/rtx"]


async def receive(
    offer: str, stream: Stream, ice_servers: Sequence[IceServer], name: str
) -> tuple[RTCPeerConnection, str, IngestVideo]:
    """A peer connection that takes a publisher's H.264 video into `stream`, and the SDP answer.

    Raises BadOffer (400) or NoCommonCodec (406). On error, nothing is left open. An Opus audio
    section that sends is taken into the stream's audio track (made when the first publisher
    with sound comes); any other section is answered inactive.
    """
    problem = sdp.webrtc_offer_problem(offer)
    if problem is not None:
        raise BadOffer(problem)
    direction = sdp.video_direction(offer)
    if direction is None:
        raise NoCommonCodec("the offer has no video section; WHIP here takes H.264 video")
    if direction not in ("sendonly", "sendrecv"):
        raise BadOffer(f"the offer's video is {direction}: a WHIP publisher sends (sendonly)")
    offered = sorted({plid for _, mode, plid in sdp.h264_formats(offer) if mode == 1})
    if not offered:
        raise NoCommonCodec(
            "WHIP here takes H.264 with packetization-mode=1; the offer has none "
            f"(H.264 formats offered: {sdp.h264_formats(offer) or 'none'})"
        )
    pc = RTCPeerConnection(ice_configuration(ice_servers))
    media = IngestVideo(stream, name, sdp.video_ssrc(offer))
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.receiver._RTCRtpReceiver__decoder_queue = media  # type: ignore[attr-defined]
        transceiver.receiver._RTCRtpReceiver__jitter_buffer = MarkerJitterBuffer()  # type: ignore[attr-defined]
        media.receiver = transceiver.receiver
        transceiver.setCodecPreferences(_ingest_preferences())
        audio_transceiver = None
        if sdp.sends_opus(offer):
            if stream.audio is None:
                stream.audio = AudioTrack()
            media.audio = IngestAudio(stream.audio)
            audio_transceiver = pc.addTransceiver("audio", direction="recvonly")
            receiver = audio_transceiver.receiver
            receiver._RTCRtpReceiver__decoder_queue = media.audio  # type: ignore[attr-defined]
            receiver._RTCRtpReceiver__jitter_buffer = PassThroughAudioBuffer()  # type: ignore[attr-defined]
            audio_transceiver.setCodecPreferences(_opus())
        await _apply_offer(pc, offer)
        for other in pc.getTransceivers():
            if other not in (transceiver, audio_transceiver):
                other.direction = "inactive"
        await _create_answer(pc)
        return pc, str(pc.localDescription.sdp), media
    except BaseException:
        media.on_close.clear()
        media.close()
        await close_quietly(pc)
        raise


async def offer(
    stream: Stream, ice_servers: Sequence[IceServer], name: str
) -> tuple[RTCPeerConnection, str, FastVideo]:
    """A peer connection that publishes `stream` (WHIP egress) on the fast path, and its offer:
    one sendonly H.264 section of the stream's own profile-level-id, candidates included."""
    assert stream.profile_level_id is not None
    _accept_extra_extensions()
    pc = RTCPeerConnection(ice_configuration(ice_servers))
    media = FastVideo(stream, name)
    try:
        transceiver = pc.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        _take_over_sender(transceiver.sender, media)
        transceiver.setCodecPreferences(_codec_preferences(stream.profile_level_id))
        if stream.audio is not None:
            media.audio = FastAudio(stream.audio, name)
            _add_audio(pc, media.audio).setCodecPreferences(_opus())
        await pc.setLocalDescription(await pc.createOffer())
        text = sdp.set_h264_profile_level_id(pc.localDescription.sdp, stream.profile_level_id)
        return pc, text, media
    except BaseException:
        media.close()
        await close_quietly(pc)
        raise


async def accept_answer(pc: RTCPeerConnection, answer: str) -> None:
    """Apply a WHIP server's answer; ValueError says why it cannot be used."""
    if not answer.startswith("v=0"):
        raise ValueError("the answer is not SDP (it must start with v=0)")
    try:
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=sdp.strip_mdns_candidates(answer), type="answer")
        )
    except Exception as e:  # aiortc raises ValueError, InvalidAccessError, OperationError...
        raise ValueError(f"the answer cannot be used: {str(e) or type(e).__name__}") from None


def _add_audio(pc: RTCPeerConnection, media: FastAudio) -> Any:
    """A sendonly audio transceiver on the fast path. aiortc gives every transceiver of a peer
    connection the same msid stream id, so the viewer plays audio and video as one stream and
    lip-syncs them by their sender reports."""
    transceiver = pc.addTransceiver(EncodedAudioTrack(), direction="sendonly")
    _take_over_sender(transceiver.sender, media)
    return transceiver


def _opus() -> list[Any]:
    capabilities = RTCRtpSender.getCapabilities("audio")
    assert capabilities is not None
    return [c for c in capabilities.codecs if c.mimeType.lower() == "audio/opus"]


async def _apply_offer(pc: RTCPeerConnection, offer: str) -> None:
    """Set a viewer's or publisher's offer (mDNS candidates taken out); what aiortc refuses
    becomes NoCommonCodec (406) or BadOffer (400)."""
    try:
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=sdp.strip_mdns_candidates(offer), type="offer")
        )
    except Exception as e:  # aiortc raises ValueError, InvalidAccessError, OperationError...
        detail = str(e)[:200] or type(e).__name__
        if "codec" in detail.lower():
            raise NoCommonCodec(f"no common codec: {detail}") from None
        raise BadOffer(f"the offer cannot be answered: {detail}") from None


# What aiortc raises on an offer it cannot answer (an empty, duplicated or un-bundled a=mid, an
# audio section without a direction, ...): each was a 500 with a traceback before.
_OFFER_ERRORS = (ValueError, AttributeError, KeyError, IndexError, TypeError, AssertionError)


async def close_quietly(pc: RTCPeerConnection) -> None:
    """Close a peer connection that an offer left half made. aiortc's own close() stops at a
    transceiver that never got a transport (an offer whose answer failed midway: AttributeError),
    which would leave the others' sockets open; here every transport that exists is stopped."""
    try:
        await pc.close()
    except AttributeError:
        for transceiver in pc.getTransceivers():
            dtls = transceiver.receiver.transport
            if dtls is not None:
                await dtls.stop()
                await dtls.transport.stop()


async def _create_answer(pc: RTCPeerConnection) -> None:
    """Create and set the answer to the offer just applied; BadOffer (400) when aiortc cannot."""
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except _OFFER_ERRORS as e:
        detail = str(e)[:200] or type(e).__name__
        raise BadOffer(f"the offer cannot be answered: {detail}") from None


def _negotiated(sender: Any, parameters: Any, lip_sync: bool = False) -> Negotiated:
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
        ssrc=sender._ssrc,
        extension_ids={
            e.uri: e.id
            for e in parameters.headerExtensions
            if not (lip_sync and e.uri == rtp.URI_PLAYOUT_DELAY)
        },
        mid=parameters.muxId,
        cname=parameters.rtcp.cname or "appliance",
        rtx_payload_type=rtx_pt,
        rtx_ssrc=sender._rtx_ssrc if rtx_pt is not None else None,
    )


class _IceOutput:
    """Through aioice, one datagram at a time: for paths we cannot send on directly (TURN relays)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, data: memoryview, segment: int) -> int:
        step = segment or len(data)
        for at in range(0, len(data), step):
            task = asyncio.ensure_future(self._connection.sendto(bytes(data[at : at + step]), 1))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return 0

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


def _output(dtls: Any) -> Output:
    connection = dtls.transport._connection
    pair = connection._nominated.get(1)
    if pair is None:
        raise ConnectionError("ICE has no nominated candidate pair")
    transport = getattr(pair.protocol, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if type(pair.protocol) is StunProtocol and sock is not None:
        return UdpOutput(sock, pair.remote_addr)
    return _IceOutput(connection)


def deliver_rtcp(ours: RtpSender, packet: Any) -> None:
    """One RTCP packet aiortc parsed (and SRTCP authenticated) for our sender's SSRC, routed to
    it: receiver reports, NACK, PLI and FIR."""
    if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
        for report in packet.reports:
            if report.ssrc == ours.ssrc:
                ours.on_receiver_report(
                    report.fraction_lost,
                    report.packets_lost,
                    report.jitter,
                    report.lsr,
                    report.dlsr,
                )
    elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
        ours.on_nack(packet.lost)
    elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
        ours.on_keyframe_request(fir=packet.fmt == RTCP_PSFB_FIR)


def _take_over_sender(sender: Any, media: FastTrack) -> None:
    """Replace, on this one RTCRtpSender, aiortc's RTP and RTCP loops with ours."""
    started_rtp = sender._RTCRtpSender__rtp_started
    exited_rtp = sender._RTCRtpSender__rtp_exited
    started_rtcp = sender._RTCRtpSender__rtcp_started
    exited_rtcp = sender._RTCRtpSender__rtcp_exited
    negotiated: dict[str, Any] = {}
    aiortc_send = sender.send

    async def send(parameters: Any) -> None:
        negotiated["parameters"] = parameters
        await aiortc_send(parameters)

    async def run_rtp(codec: Any) -> None:
        started_rtp.set()
        try:
            ours = RtpSender(
                media.name,
                media.ring,
                _negotiated(
                    sender, negotiated["parameters"], getattr(media, "audio", None) is not None
                ),
                sender.transport._tx_srtp,
                _output(sender.transport),
                media.request_keyframe,
                media.clock_rate,
            )
            media.start(ours)
            await asyncio.Event().wait()  # until stop() cancels us
        except asyncio.CancelledError:
            pass
        except Exception as e:  # no sender, no video for this viewer: say why, once
            logger.error("viewer %s: cannot send %s: %s", media.name, media.kind, e)
        finally:
            media.close()
            exited_rtp.set()

    async def run_rtcp() -> None:
        started_rtcp.set()
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())  # RFC 3550 6.2: randomized interval
                report = media.sender.sender_report() if media.sender else None
                if report is not None:
                    await sender.transport._send_rtp(report)
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            if media.sender is not None:
                try:
                    await sender.transport._send_rtp(media.sender.bye())
                except (ConnectionError, asyncio.CancelledError):
                    pass
            exited_rtcp.set()

    async def handle_rtcp(packet: Any) -> None:
        if media.sender is not None:
            deliver_rtcp(media.sender, packet)

    sender.send = send
    sender._run_rtp = run_rtp
    sender._run_rtcp = run_rtcp
    sender._handle_rtcp_packet = handle_rtcp


async def add_candidates(pc: RTCPeerConnection, frag: sdp.SdpFrag) -> int:
    """Add trickled remote candidates (mDNS ones skipped); returns how many were added."""
    added = 0
    for index, media in enumerate(frag.media):
        for line in media.candidates:
            if sdp.is_mdns_candidate("a=" + line):
                continue
            problem = sdp.candidate_problem("a=" + line)
            if problem is not None:
                raise BadOffer(f"malformed candidate: {problem}")
            try:
                candidate = candidate_from_sdp(line.split(":", 1)[1])
            except (AssertionError, ValueError, IndexError):
                raise BadOffer(f"malformed candidate: {line[:80]!r}") from None
            candidate.sdpMid = media.mid
            candidate.sdpMLineIndex = None if media.mid is not None else index
            await pc.addIceCandidate(candidate)
            added += 1
        if media.end_of_candidates:
            await pc.addIceCandidate(None)
    return added


# --- What strangers send to our ICE ports ----------------------------------------------------


class StrayDatagrams:
    """Datagrams dropped before aiortc saw them: empty ones, and those not STUN and from no
    address this connection's ICE has validated (`reporter`); and STUN that aioice could not
    parse (`malformed`: its parser raises struct.error on a short attribute, which asyncio
    logged with a traceback for every such datagram). Counted process-wide, each logged at most
    once a second."""

    def __init__(self) -> None:
        self.reporter = DropReporter(logger, "ICE ports: datagrams from no validated peer")
        self.malformed = DropReporter(logger, "ICE ports: malformed STUN")

    @property
    def total(self) -> int:
        return self.reporter.total + self.malformed.total


# What aioice's STUN parser raises on bad input.
_MALFORMED = (ValueError, struct.error, KeyError, IndexError)


STRAY = StrayDatagrams()


def _validated(connection: Any, protocol: Any, addr: tuple[str, int]) -> bool:
    """Whether `addr` may send media to `protocol`: the nominated pair, or a candidate pair on
    that socket whose remote end is `addr` and has succeeded, or `addr` sent an authenticated ICE
    check (the peer may start DTLS before our own check of that pair comes back)."""
    for pair in connection._nominated.values():
        if pair.protocol is protocol and pair.remote_addr == addr:
            return True
    if (id(protocol), addr) in getattr(connection, "_appliance_checked", ()):
        return True
    return any(
        pair.protocol is protocol
        and pair.remote_addr == addr
        and pair.state == CandidatePair.State.SUCCEEDED
        for pair in connection._check_list
    )


def _guard_datagrams() -> None:
    """Non-STUN datagrams reach aiortc's DTLS/SRTP only from validated peers (see `install`)."""
    if getattr(StunProtocol.datagram_received, "appliance_guard", False):
        return
    received = StunProtocol.datagram_received
    check_incoming = Connection.check_incoming

    def datagram_received(self: StunProtocol, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if not data:
            STRAY.reporter.add()
            return
        connection = self.receiver
        if (
            isinstance(data, bytes)
            and isinstance(connection, Connection)
            and not _validated(connection, self, (addr[0], addr[1]))
        ):
            # From a stranger only STUN goes on (RFC 7983: it starts with two zero bits), for
            # aioice to answer or refuse; aioice would hand anything else to DTLS.
            try:
                if data[0] > 3:
                    raise ValueError
                stun.parse_message(data)
            except _MALFORMED:
                STRAY.reporter.add()
                return
        try:
            received(self, data, addr)
        except _MALFORMED:  # aioice's STUN parser raises struct.error on a short attribute
            STRAY.malformed.add()

    def checked(self: Connection, message: Any, addr: tuple[str, int], protocol: Any) -> None:
        """Called by aioice for an ICE check that passed authentication."""
        trusted = self.__dict__.setdefault("_appliance_checked", set())
        trusted.add((id(protocol), (addr[0], addr[1])))
        check_incoming(self, message, addr, protocol)

    datagram_received.appliance_guard = True  # type: ignore[attr-defined]
    StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]
    Connection.check_incoming = checked  # type: ignore[method-assign]


_ICE_INTERFACES: tuple[str, ...] = ()


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """The addresses ICE gathers on: aioice's, less IPv6 temporary (privacy) and deprecated
    addresses, which only add sockets (a Pi may have many), and limited to `webrtc.interfaces`
    when that is set."""
    import ifaddr  # aioice's own dependency

    skip = _temporary_ipv6()
    out = []
    for adapter in ifaddr.get_adapters():
        if _ICE_INTERFACES and adapter.nice_name not in _ICE_INTERFACES:
            continue
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                if use_ipv4 and not ip.ip.startswith("127."):
                    out.append(ip.ip)
            elif use_ipv6 and ip.ip[0] != "::1" and ip.ip[2] == 0 and ip.ip[0] not in skip:
                out.append(ip.ip[0])
    return out


def _temporary_ipv6() -> set[str]:
    """IPv6 addresses the kernel flags temporary (0x01) or deprecated (0x20): /proc/net/if_inet6."""
    import ipaddress

    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return set()
    out = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 5 and int(fields[4], 16) & 0x21:
            out.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return out


def install(interfaces: Sequence[str] = ()) -> None:
    """Change aioice for the whole process, once, at start-up (app.py; tests that run a daemon):

    - **Only validated peers reach DTLS and SRTP.** aioice hands every datagram that is not STUN,
      from any address, to aiortc's DTLS transport, which reads `data[0]` and ends the session on
      an IndexError: one empty datagram from anyone on the LAN closed a viewer, a publisher or an
      egress. Now an empty datagram, and a non-STUN one from an address that has not passed an
      authenticated ICE check or a succeeded candidate pair on that socket, is dropped and counted
      (`STRAY`), logged at most once a second.
    - **ICE gathers on the addresses that matter**: not on IPv6 temporary or deprecated addresses
      (each is one more socket per session), and only on `interfaces` when given
      (`webrtc.interfaces`).
    """
    global _ICE_INTERFACES
    _ICE_INTERFACES = tuple(interfaces)
    _guard_datagrams()
    aioice.ice.get_host_addresses = _host_addresses
