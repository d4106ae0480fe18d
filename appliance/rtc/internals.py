"""The one file that names private symbols of aiortc, aioice and pylibsrtp: small accessors with
one name each, and the process-wide changes `install()` makes. aiortc is pinned to a tested range
(pyproject.toml); tests/rtc/test_internals.py checks each accessor's behaviour, on every aiortc in
that range, so that an upgrade that moves what we rely on fails there, loudly.

What the rest of the daemon gets from here:
- `take_over(sender, track)`: aiortc's RTCRtpSender keeps negotiating, but its RTP and RTCP loops
  never run. When aiortc would start them (DTLS up), `track.start(parameters, srtp, output)` is
  called with what was negotiated, the SRTP session aiortc keyed (`RTCDtlsTransport._tx_srtp`)
  and the UDP path ICE nominated (`nominated_output`); then the peer's RTCP about its SSRC goes
  to `track.feedback(item)`, read at the socket (`FeedbackReader`), and its sender reports out
  through aiortc's SRTCP (`_send_rtp`).
  Private: `RTCRtpSender._run_rtp`, `_run_rtcp`, `_handle_rtcp_packet`, `_ssrc`, `_rtx_ssrc`,
  the events `_RTCRtpSender__rtp_started/__rtp_exited/__rtcp_started/__rtcp_exited` that `stop()`
  waits on; `RTCDtlsTransport._tx_srtp`, `._send_rtp`; `RTCIceTransport._connection._nominated`.
- `aim_keyframe_requests(sender, callback)`: aiortc's own send path calls
  `RTCRtpSender._send_keyframe()` on PLI/FIR; we aim it at the stream.
- `drop_receive_state(receiver)`: a sendonly transceiver's receiver loses the remote bitrate
  estimator, jitter buffer and decoder queue it never uses (`_RTCRtpReceiver__...`).
- `tap_receiver(receiver, queue, jitter_buffer)`: a WHIP publisher's media is not decoded: the
  receiver's `_RTCRtpReceiver__decoder_queue` becomes our queue (its `get()` returns None, so
  aiortc's decoder thread exits at once), and its `_RTCRtpReceiver__jitter_buffer` ours.
  `send_pli(receiver, ssrc)`: `RTCRtpReceiver._send_rtcp_pli`.
- `MarkerJitterBuffer`, `PassThroughAudioBuffer`: subclasses of aiortc's JitterBuffer that read
  its `_packets`, `_origin`, `_capacity` and an RTP packet's `_data`.
- `handshake_facts(pc)`: what ICE and DTLS got to, for `rtc.diagnose` to say why a connection
  failed: aioice's check list and remote candidates, `RTCDtlsTransport._ssl` and `_role`, and
  the alerts OpenSSL's info callback saw (installed with the cipher list, below).
- `retire_dtls(dtls)`: a handshaken `RTCDtlsTransport._ssl` becomes a RetiredDtls (rtc/dtls.py);
  install() does it at each connection's first authenticated SRTCP
  (`RTCDtlsTransport._handle_rtcp_data`).
- `install()`: see its docstring. It replaces `RTCCertificate.generateCertificate` (public) and
  wraps `RTCCertificate._create_ssl_context` and `RTCDtlsTransport._handle_rtcp_data` (private).

send/srtp.py also touches pylibsrtp (`Session._srtp` and its cffi binding) for in-place SRTP:
that is the hot path, kept beside the code that uses it, and checked there byte for byte.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import random
import socket
import struct
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aioice.ice
import pylibsrtp
from aioice import stun
from aioice.candidate import candidate_priority
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCCertificate, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import CODECS, HEADER_EXTENSIONS
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
)
from OpenSSL import SSL

from appliance.core import rtp
from appliance.core import stun as core_stun
from appliance.core.stats import DropReporter
from appliance.rtc.dtls import RetiredDtls
from appliance.send.udp import Output, UdpOutput

logger = logging.getLogger(__name__)


# --- A sender whose loops are ours ------------------------------------------------------------


class TakenOver(Protocol):
    """What `take_over` drives: one viewer's track on the fast path."""

    name: str
    kind: str

    def start(self, parameters: Any, ssrc: int, rtx_ssrc: int, srtp: Any, output: Output) -> None:
        """DTLS is up: send from now on."""

    def feedback(self, item: tuple[Any, ...]) -> None:
        """What the peer's RTCP (SRTCP-authenticated) said about this sender's SSRC: one item of
        core/rtp.read_feedback (a report block, a NACK, a PLI or a FIR)."""

    def report(self) -> bytes | None:
        """A sender report to send now, or None."""

    @property
    def reports_in_batch(self) -> bool:
        """Its sender reports are sent elsewhere (one tick for every viewer of the stream)."""

    def bye(self) -> bytes | None:
        """The RTCP BYE to send when stopping, or None."""

    def close(self) -> None:
        """The sender stops (the connection closed)."""


def take_over(sender: RTCRtpSender, track: TakenOver) -> None:
    """Replace, on this one RTCRtpSender, aiortc's RTP and RTCP loops with `track`'s."""
    started_rtp = sender._RTCRtpSender__rtp_started  # type: ignore[attr-defined]
    exited_rtp = sender._RTCRtpSender__rtp_exited  # type: ignore[attr-defined]
    started_rtcp = sender._RTCRtpSender__rtcp_started  # type: ignore[attr-defined]
    exited_rtcp = sender._RTCRtpSender__rtcp_exited  # type: ignore[attr-defined]
    negotiated: dict[str, Any] = {}
    aiortc_send = sender.send

    async def send(parameters: Any) -> None:
        negotiated["parameters"] = parameters
        await aiortc_send(parameters)

    async def run_rtp(codec: Any) -> None:
        started_rtp.set()
        feedback = None
        try:
            dtls = sender.transport
            track.start(
                negotiated["parameters"],
                sender._ssrc,
                sender._rtx_ssrc,
                dtls._tx_srtp,
                nominated_output(dtls),
            )
            feedback = FeedbackReader.of(dtls)
            feedback.tracks[sender._ssrc] = track
            await asyncio.Event().wait()  # until stop() cancels us
        except asyncio.CancelledError:
            pass
        except Exception as e:  # no sender, no media for this viewer: say why, once
            logger.error("viewer %s: cannot send %s: %s", track.name, track.kind, e)
        finally:
            if feedback is not None:
                feedback.tracks.pop(sender._ssrc, None)
            track.close()
            exited_rtp.set()

    async def run_rtcp() -> None:
        started_rtcp.set()
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())  # RFC 3550 6.2: randomized interval
                if track.reports_in_batch:  # the stream's one tick sends them (NativeBatch)
                    await asyncio.Event().wait()  # until stop() cancels us; then the BYE
                report = track.report()
                if report is not None:
                    await sender.transport._send_rtp(report)
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            bye = track.bye()
            if bye is not None:
                try:
                    await sender.transport._send_rtp(bye)
                except (ConnectionError, asyncio.CancelledError):
                    pass
            exited_rtcp.set()

    async def handle_rtcp(packet: Any) -> None:
        """aiortc's routing, for RTCP that came before our track started: nothing to act on yet
        (from then on the connection's FeedbackReader reads it, not aiortc)."""

    sender.send = send  # type: ignore[method-assign]
    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._run_rtcp = run_rtcp  # type: ignore[method-assign]
    sender._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]


class FeedbackReader:
    """The RTCP a connection's peer sends to the senders we took over, read where it arrives:
    in the ICE socket's datagram callback (install()'s guard), SRTCP unprotected with the
    session aiortc keyed (`RTCDtlsTransport._rx_srtp`), parsed by core/rtp.read_feedback and
    handed to the track of the SSRC it is about (`tracks`). aiortc's way cost a viewer about
    50 µs of Python per report: a failed STUN parse, a queue, a task's wake-up, its parser and
    router, a coroutine per packet. For a TURN-relayed pair, whose datagrams come through
    aioice's TURN client, aiortc unprotects and `_handle_rtcp_data` hands the result here
    (`read`). RTCP for no taken-over SSRC (a peer's SR or BYE for its own sources, REMB, APP)
    is dropped, as it was: a viewer's receivers are sendonly transceivers' and get no media.
    Private: `RTCDtlsTransport._rx_srtp`, `_ssl`, its `__rx_bytes`/`__rx_packets` (getStats),
    `RTCIceTransport._connection`."""

    __slots__ = ("dtls", "tracks", "__weakref__")

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.dtls = dtls
        self.tracks: dict[int, TakenOver] = {}

    @classmethod
    def of(cls, dtls: RTCDtlsTransport) -> FeedbackReader:
        """The reader of `dtls`'s connection, made and attached on first use."""
        reader: FeedbackReader | None = getattr(dtls, "_appliance_feedback", None)
        if reader is None:
            reader = cls(dtls)
            dtls._appliance_feedback = reader  # type: ignore[attr-defined]
            dtls.transport._connection._appliance_feedback = reader  # type: ignore[attr-defined]
        return reader

    def datagram(self, data: bytes) -> bool:
        """SRTCP as it came off the socket; False when its keys are not there yet (aiortc's
        path then drops it, as it always did)."""
        dtls = self.dtls
        srtp = dtls._rx_srtp
        if srtp is None:
            return False
        try:
            plain = srtp.unprotect_rtcp(data)
        except pylibsrtp.Error:
            FEEDBACK.unauthenticated.add()
            return True
        dtls._RTCDtlsTransport__rx_bytes += len(data)  # type: ignore[attr-defined]
        dtls._RTCDtlsTransport__rx_packets += 1  # type: ignore[attr-defined]
        self.read(plain)
        return True

    def read(self, plain: bytes) -> None:
        """Unprotected RTCP: the first one retires OpenSSL's DTLS (the peer holds its keys), then
        each item goes to its track."""
        _retire_once_confirmed(self.dtls)
        FEEDBACK.packets += 1
        try:
            items = rtp.read_feedback(plain)
        except ValueError:
            FEEDBACK.malformed.add()
            return
        tracks = self.tracks
        for item in items:
            track = tracks.get(item[1])
            if track is not None:
                track.feedback(item)


class FeedbackCounts:
    """RTCP read by FeedbackReaders, process-wide: `packets` (authenticated), and, each logged at
    most once a second, what was dropped: SRTCP that did not authenticate or was a replay
    (`unauthenticated`), RTCP that did not parse (`malformed`)."""

    def __init__(self) -> None:
        self.packets = 0
        self.unauthenticated = DropReporter(logger, "viewers' SRTCP that did not authenticate")
        self.malformed = DropReporter(logger, "viewers' RTCP that did not parse")


FEEDBACK = FeedbackCounts()


def aim_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """On aiortc's own send path: PLI and FIR call `callback` (aiortc's own only flags its encoder,
    which pre-encoded media never uses)."""
    sender._send_keyframe = callback  # type: ignore[method-assign]


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


def nominated_output(dtls: Any) -> Output:
    """Where a connected DTLS transport's media goes: the socket and address of the candidate
    pair ICE nominated, or aioice itself for a relayed pair."""
    connection = dtls.transport._connection
    pair = connection._nominated.get(1)
    if pair is None:
        raise ConnectionError("ICE has no nominated candidate pair")
    transport = getattr(pair.protocol, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if type(pair.protocol) is StunProtocol and sock is not None:
        return UdpOutput(sock, pair.remote_addr)
    return _IceOutput(connection)


# --- A publisher's receiver, not decoded ------------------------------------------------------


def drop_receive_state(receiver: RTCRtpReceiver) -> None:
    """The receiver of a sendonly video transceiver (every viewer's, and an egress's) never gets
    media, yet aiortc gives it what a receiving one needs: a remote bitrate estimator (a
    1000-bucket rate counter, 96 KB), a 512-slot jitter buffer (4 KB) and a decoder queue with
    its lock and three conditions (3 KB), per viewer. They go; RTP that reached it anyway is
    still handled (a 4-slot jitter buffer). Private: `RTCRtpReceiver.__remote_bitrate_estimator`,
    which aiortc checks for None before use (it is None on audio receivers),
    `__jitter_buffer`, and `__decoder_queue`, used only once `receive()` started the decoder
    thread, which a sendonly transceiver never does."""
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=4, is_video=True)  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__decoder_queue = None  # type: ignore[attr-defined]


def tap_receiver(receiver: RTCRtpReceiver, queue: Any, jitter_buffer: JitterBuffer) -> None:
    """Before the receiver starts: its reassembled frames go to `queue.put((codec, frame))` on the
    event loop, from `jitter_buffer`; `queue.get()` must return None (aiortc's decoder thread then
    exits at once)."""
    receiver._RTCRtpReceiver__decoder_queue = queue  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = jitter_buffer  # type: ignore[attr-defined]


async def send_pli(receiver: RTCRtpReceiver, ssrc: int) -> None:
    """Ask the publisher for a keyframe (RTCP PLI, RFC 4585 6.3.1)."""
    await receiver._send_rtcp_pli(ssrc)


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


# --- Process-wide changes, made by install() --------------------------------------------------

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
        key = (self, tuple(p.openssl_profile for p in srtp_profiles))
        context = _CONTEXTS.get(key)
        if context is None:
            context = original(self, srtp_profiles)
            context.set_cipher_list(DTLS_CIPHERS)
            # Shared by every connection: no session of one may be kept for another (WebRTC never
            # resumes a DTLS session), and the cache would grow with every viewer.
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            # DTLS carries the handshake and then nothing (media is SRTP, beside it): its read and
            # write buffers (about 34 KB a connection) are freed while idle, not kept per viewer.
            context.set_mode(SSL.MODE_RELEASE_BUFFERS)
            context.set_info_callback(_trace_handshake)
            for old in [k for k in _CONTEXTS if k[0] is not self]:  # the certificate rotated
                del _CONTEXTS[old]
            _CONTEXTS[key] = context
        return context

    create.wider_ciphers = True  # type: ignore[attr-defined]
    RTCCertificate._create_ssl_context = create  # type: ignore[method-assign]


# One DTLS certificate (and OpenSSL context per SRTP profile list) for every connection of the
# process, instead of aiortc's key, certificate and context per peer connection (about 27 KB of a
# viewer's memory, and an ECDSA key generation per offer). WebRTC peers check the certificate's
# fingerprint from the SDP, never a chain, so sharing it loses nothing; it is new at every start,
# and renewed a day before aiortc's 30-day validity ends.
_CERTIFICATE: list[RTCCertificate] = []
_CONTEXTS: dict[tuple[RTCCertificate, tuple[bytes, ...]], Any] = {}
CERTIFICATE_RENEW_BEFORE = datetime.timedelta(days=1)


def _share_certificate() -> None:
    generate = RTCCertificate.generateCertificate
    if getattr(generate, "shared", False):
        return

    def shared(cls: type[RTCCertificate]) -> RTCCertificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        if not _CERTIFICATE or _CERTIFICATE[0].expires - now < CERTIFICATE_RENEW_BEFORE:
            _CERTIFICATE[:] = [generate()]
        return _CERTIFICATE[0]

    shared.shared = True  # type: ignore[attr-defined]
    RTCCertificate.generateCertificate = classmethod(shared)  # type: ignore[assignment]


def _accept_extra_extensions() -> None:
    video = HEADER_EXTENSIONS["video"]
    known = {e.uri for e in video}
    for uri, ext_id in _EXTRA_VIDEO_EXTENSIONS.items():
        if uri not in known:
            video.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))


_EXTRA_VIDEO_EXTENSIONS = {rtp.URI_PLAYOUT_DELAY: 4, rtp.URI_ABS_CAPTURE_TIME: 5}


# --- Why a handshake failed ---------------------------------------------------------------------

# TLS alert descriptions (RFC 8446 §6, RFC 5246 §7.2), as OpenSSL's info callback reports them.
ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
    80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
    116: "certificate_required", 120: "no_application_protocol",
}  # fmt: skip
_CB_LOOP, _CB_READ, _CB_WRITE, _CB_ALERT = 0x01, 0x04, 0x08, 0x4000
# What OpenSSL's info callback saw of each DTLS connection.
_TRACES: weakref.WeakKeyDictionary[Any, DtlsTrace] = weakref.WeakKeyDictionary()


@dataclass
class DtlsTrace:
    """What OpenSSL's info callback told of one DTLS handshake."""

    stage: str | None = None  # the last state the handshake reached
    alert_sent: str | None = None  # a fatal alert we sent (why our side gave up)
    alert_received: str | None = None  # a fatal alert the peer sent


def _trace_handshake(connection: Any, where: int, value: int) -> None:
    """OpenSSL's info callback, on the shared DTLS contexts: notes each connection's progress."""
    trace = _TRACES.get(connection)
    if trace is None:
        trace = _TRACES[connection] = DtlsTrace()
    if where & _CB_ALERT:
        if value >> 8 != 2:  # warnings (close_notify at the end) are not failures
            return
        alert = ALERTS.get(value & 0xFF, f"alert {value & 0xFF}")
        if where & _CB_WRITE:
            trace.alert_sent = trace.alert_sent or alert
        elif where & _CB_READ:
            trace.alert_received = trace.alert_received or alert
    elif where & _CB_LOOP:
        trace.stage = connection.get_state_string().decode(errors="replace")


@dataclass
class HandshakeFacts:
    """What a peer connection's first transport shows of its ICE and DTLS, for `rtc.diagnose`."""

    ice_state: str
    pairs: int  # candidate pairs checked
    pairs_succeeded: int
    checked_by_peer: int  # addresses that sent us an ICE check that passed authentication
    remote_candidates: list[str]  # "10.0.0.5:5000 host"
    dtls_state: str
    dtls_role: str  # "client" or "server" (ours), "auto" before it started
    encrypted: bool  # the DTLS handshake itself completed
    trace: DtlsTrace
    peer_certificate: str | None  # "ECDSA secp224r1", "RSA 2048 bits"
    srtp_profile: str | None


def handshake_facts(pc: Any) -> HandshakeFacts | None:
    """The ICE and DTLS facts of `pc`'s first transport (BUNDLE: the only one), or None before
    it has one. Private: `RTCIceTransport._connection` (aioice's `_check_list`,
    `_remote_candidates`), `RTCDtlsTransport._ssl`, `_role`, `encrypted`."""
    transceivers = pc.getTransceivers()
    dtls = transceivers[0].sender.transport if transceivers else None
    if dtls is None:
        return None
    connection = dtls.transport._connection
    pairs = list(connection._check_list)
    ssl = dtls._ssl
    certificate = None
    profile = None
    if isinstance(ssl, RetiredDtls):
        certificate = ssl.peer_key
    elif ssl is not None:
        certificate = _peer_key(ssl)
    if ssl is not None:
        profile = ssl.get_selected_srtp_profile().decode() or None
    return HandshakeFacts(
        ice_state=str(dtls.transport.state),
        pairs=len(pairs),
        pairs_succeeded=sum(1 for p in pairs if p.state == CandidatePair.State.SUCCEEDED),
        checked_by_peer=len(getattr(connection, "_appliance_checked", ())),
        remote_candidates=[f"{c.host}:{c.port} {c.type}" for c in connection._remote_candidates],
        dtls_state=str(dtls.state),
        dtls_role=str(dtls._role),
        encrypted=bool(dtls.encrypted),
        trace=(_TRACES.get(ssl) if ssl is not None else None) or DtlsTrace(),
        peer_certificate=certificate,
        srtp_profile=profile,
    )


def _peer_key(ssl: SSL.Connection) -> str | None:
    peer = ssl.get_peer_certificate(as_cryptography=True)
    return _describe_key(peer.public_key()) if peer is not None else None


def _describe_key(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    return type(key).__name__


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
        elif isinstance(data, bytes) and len(data) > 1:
            first = data[0]
            if 127 < first < 192 and 191 < data[1] < 209:  # SRTCP, by aiortc's test (RFC 5761 4)
                feedback = getattr(connection, "_appliance_feedback", None)
                if feedback is not None and feedback.datagram(data):
                    return
            elif first == 0 and data[1] == 1 and _answer_check(connection, self, data, addr):
                return  # a Binding request on the nominated pair, answered by rote
            elif first == 1 and data[1] == 1 and _consent_answered(connection, data):
                return  # the answer to one of our consent checks
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


def _answer_check(connection: Any, protocol: StunProtocol, data: bytes, addr: Any) -> bool:
    """Answer the peer's ICE check on the pair ICE nominated (its keepalive or consent check:
    every 2.5 s from a browser) with core/stun.py, which takes about 20 µs where aioice's
    general STUN path took about 100; False, and aioice answers it as before, for
    anything else: another pair, a connection closing, or a check core/stun does not answer by
    rote (a wrong credential, a role conflict, an attribute it does not know). On the
    nominated pair aioice's own handling (`check_incoming`) would change nothing. Private:
    `Connection._nominated`, `_closing` (aioice 0.10 has none); `StunProtocol.transport`."""
    remote = (addr[0], addr[1])
    for pair in connection._nominated.values():
        if pair.protocol is protocol and pair.remote_addr == remote:
            break
    else:
        return False
    if getattr(connection, "_closing", False) or connection.remote_username is None:
        return False
    key = connection.local_password.encode()
    username = f"{connection.local_username}:{connection.remote_username}".encode()
    transaction = core_stun.check_to_answer(data, username, key, connection.ice_controlling)
    if transaction is None:
        return False
    family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
    try:
        packed = socket.inet_pton(family, remote[0])
    except OSError:  # an address with a scope ("fe80::1%eth0"): aioice's way
        return False
    protocol.transport.sendto(
        core_stun.binding_success(transaction, packed, remote[1], key), remote
    )
    global CHECKS_ANSWERED
    CHECKS_ANSWERED += 1
    return True


CHECKS_ANSWERED = 0  # ICE checks _answer_check answered, process-wide


async def _query_consent(self: Connection) -> None:
    """RFC 7675 consent freshness, as aioice's `Connection.query_consent` does it (a check on
    each nominated pair every 4 to 6 s, answered within RETRY_RTO or a failure, the
    connection closed after CONSENT_FAILURES in a row), with each check written and its
    answer read by core/stun.py (`_check_consent`) instead of aioice's Message and Transaction:
    every connection runs this every 5 s, and writing, signing and reading a check took aioice
    about 65 µs of Python (its Transaction's future and timer besides), core/stun.py about 12.
    A pair that is not a plain UDP socket's (a TURN relay) is checked aioice's way. Private:
    `Connection._nominated`, `_tie_breaker`, `_query_consent_task` (cleared before close(), as
    aioice does, which would otherwise cancel this very task)."""
    failures = 0
    while True:
        await asyncio.sleep(aioice.ice.CONSENT_INTERVAL * (0.8 + 0.4 * random.random()))
        for pair in list(self._nominated.values()):
            if await _check_consent(self, pair):
                failures = 0
            else:
                failures += 1
            if failures >= aioice.ice.CONSENT_FAILURES:
                logger.info("ICE: consent to send expired (%d checks unanswered)", failures)
                self._query_consent_task = None
                await self.close()
                return


async def _check_consent(connection: Connection, pair: CandidatePair) -> bool:
    """One consent check on `pair`: whether it was answered, authentically, in time."""
    protocol = pair.protocol
    key = connection.remote_password.encode()  # type: ignore[union-attr]
    transport = getattr(protocol, "transport", None)
    CONSENT.checks += 1
    if type(protocol) is not StunProtocol or transport is None:
        try:
            await protocol.request(
                connection.build_request(pair, nominate=False),
                pair.remote_addr,
                integrity_key=key,
                retransmissions=0,
            )
        except stun.TransactionError:
            return False
        CONSENT.answered += 1
        return True
    transaction = os.urandom(12)
    request = core_stun.binding_request(
        transaction,
        f"{connection.remote_username}:{connection.local_username}".encode(),
        candidate_priority(pair.component, "prflx"),
        connection.ice_controlling,
        connection._tie_breaker,
        key,
    )
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[bool] = loop.create_future()
    pending: dict[bytes, tuple[asyncio.Future[bool], bytes]]
    pending = connection.__dict__.setdefault("_appliance_consent", {})
    pending[transaction] = (answered, key)
    timeout = loop.call_later(stun.RETRY_RTO, _settle, answered, False)
    try:
        transport.sendto(request, pair.remote_addr)
        ok = await answered
    finally:
        timeout.cancel()
        pending.pop(transaction, None)
    if ok:
        CONSENT.answered += 1
    return ok


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _consent_answered(connection: Any, data: bytes) -> bool:
    """A Binding success response from the peer: True when it answers one of our pending
    consent checks and authenticates (then that check passed); False for anything else, which
    goes on to aioice (its own transactions: ICE's checks before the nomination)."""
    pending = connection.__dict__.get("_appliance_consent")
    if not pending:
        return False
    transaction = data[8:20]
    check = pending.get(transaction)
    if check is None:
        return False
    answered, key = check
    if not core_stun.answer_is_authentic(data, transaction, key):
        return False  # aioice finds no transaction of its own: dropped, the check times out
    _settle(answered, True)
    return True


class ConsentCounts:
    """Our consent checks, process-wide: how many were sent (`checks`) and answered in time."""

    def __init__(self) -> None:
        self.checks = 0
        self.answered = 0


CONSENT = ConsentCounts()


_ICE_INTERFACES: tuple[str, ...] = ()


# --- DTLS after its handshake ------------------------------------------------------------------


def _retire_dtls_when_confirmed() -> None:
    """See install(). Private: `RTCDtlsTransport._handle_rtcp_data` (called with each SRTCP
    packet that authenticated), `_ssl`, `_role`, `_data_receiver`."""
    original = RTCDtlsTransport._handle_rtcp_data
    if getattr(original, "retires", False):
        return

    async def handle_rtcp_data(self: RTCDtlsTransport, data: bytes) -> None:
        feedback = getattr(self, "_appliance_feedback", None)
        if feedback is not None:  # a taken-over sender's (a TURN relay's path)
            feedback.read(data)
            return
        _retire_once_confirmed(self)
        await original(self, data)

    handle_rtcp_data.retires = True  # type: ignore[attr-defined]
    RTCDtlsTransport._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]


# Transports whose DTLS stays OpenSSL's: a data channel, or a suite RetiredDtls does not seal.
_KEPT: weakref.WeakSet[RTCDtlsTransport] = weakref.WeakSet()


def _retire_once_confirmed(dtls: RTCDtlsTransport) -> None:
    """An SRTCP packet from the peer authenticated: retire `dtls`'s OpenSSL connection, unless it
    was retired already or is kept. The type test keeps every later packet's cost at one check."""
    if type(dtls._ssl) is SSL.Connection and dtls not in _KEPT:
        retire_dtls(dtls)


def retire_dtls(dtls: RTCDtlsTransport) -> bool:
    """Put a RetiredDtls (rtc/dtls.py) in place of `dtls`'s handshaken OpenSSL connection, which
    is then freed; False, and kept, when it carries a data channel (SCTP over DTLS) or its suite
    is not one RetiredDtls seals."""
    ssl = dtls._ssl
    if type(ssl) is not SSL.Connection or dtls.state != "connected":
        return False
    retired = None
    if dtls._data_receiver is None:
        retired = RetiredDtls.retire(ssl, server=dtls._role == "server", peer_key=_peer_key(ssl))
    if retired is None:
        _KEPT.add(dtls)
        return False
    trace = _TRACES.get(ssl)
    if trace is not None:
        _TRACES[retired] = trace
    dtls._ssl = retired  # type: ignore[assignment]  # the calls aiortc makes after a handshake
    return True


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
    """Change aiortc and aioice for the whole process, once, at start-up (app.py; the tests'
    conftest, since their own aiortc peers share the process). Importing appliance changes
    nothing (tests/test_imports.py checks it). What it changes, and why:

    - **Only validated peers reach DTLS and SRTP.** aioice hands every datagram that is not STUN,
      from any address, to aiortc's DTLS transport, which reads `data[0]` and ends the session on
      an IndexError: one empty datagram from anyone on the LAN closed a viewer, a publisher or an
      egress. Now an empty datagram, and one that is not STUN from an address that has not passed
      an authenticated ICE check or a succeeded candidate pair on that socket, is dropped and
      counted (`STRAY`), logged at most once a second; STUN that aioice cannot parse too.
    - **ICE gathers on the addresses that matter**: not on IPv6 temporary or deprecated
      addresses (each is one more socket for every session), and only on `interfaces` when given
      (`webrtc.interfaces`).
    - **H.264 Main and High** (4d001f, 64001f, each with RTX) join aiortc's codec table after its
      two Baseline entries, so that a camera's own Main or High stream can be answered to a
      viewer that offers that profile (aiortc matches H.264 by profile and packetization mode).
    - **DTLS with RSA peers**: aiortc's DTLS context offers ECDHE-ECDSA suites only, so a peer
      with an RSA certificate (GStreamer's webrtcbin: whipsink publishers, GStreamer viewers)
      failed with "no shared cipher" whenever aiortc was the DTLS client, i.e. whenever we answer.
      `RTCCertificate._create_ssl_context` is wrapped to offer ECDHE-RSA suites too, and to
      note, through OpenSSL's info callback, where each handshake got to and which fatal alert
      ended it (`handshake_facts`, for the log line that says why a connection failed).
    - **One DTLS certificate for the process**: `RTCCertificate.generateCertificate` returns the
      same certificate to every peer connection, and its SSL context is made once per SRTP
      profile list (session cache off), not once per connection (see `_share_certificate`).
    - **DTLS is let go once both ends hold their keys**: at a connection's first SRTCP packet
      that authenticates (the peer finished its handshake, so no flight is ever retransmitted),
      OpenSSL's connection object (about 80 KB, half of what a viewer cost) is replaced by a
      RetiredDtls (rtc/dtls.py) that keeps only the record keys: it still ends the connection
      on the peer's authenticated close_notify and sends ours on close. Connections with a data
      channel, or on a suite it does not seal, keep OpenSSL's (`retire_dtls`).
    - **A connection's RTCP and ICE checks are read where they arrive**, in the guard: SRTCP
      for a taken-over sender is unprotected, parsed and handed to its track there
      (`FeedbackReader`), and the peer's checks on the nominated pair are answered there
      (`_answer_check`, core/stun.py), instead of aioice's queue and aiortc's task, parser and
      router, and aioice's general STUN code.
    - **Our consent checks** (RFC 7675, every 4 to 6 s on every connection) are written and their
      answers read by core/stun.py (`Connection.query_consent` is `_query_consent`), with
      aioice's timing, timeout and failure count, not aioice's Message and Transaction.
    - **playout-delay and abs-capture-time** join aiortc's video header extensions, so that it
      accepts them in the answer when a viewer offers them.
    """
    global _ICE_INTERFACES
    _ICE_INTERFACES = tuple(interfaces)
    _guard_datagrams()
    aioice.ice.get_host_addresses = _host_addresses
    _accept_more_h264_profiles()
    _accept_rsa_dtls_peers()
    _share_certificate()
    _retire_dtls_when_confirmed()
    Connection.query_consent = _query_consent  # type: ignore[method-assign]
    _accept_extra_extensions()
