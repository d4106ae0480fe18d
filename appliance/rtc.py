"""The aiortc seam: the only module that knows aiortc, and the only one that touches its internals.

aiortc gives us SDP parsing, ICE (aioice), DTLS, SRTP keying and RTCP. For each viewer we build an
`RTCPeerConnection` whose one sendonly video transceiver exists *before* the remote description is
set (aiortc applies codec preferences there), restrict it to the H.264 profile the stream really
carries, strip Chromium's mDNS candidates (see sdp.py), and rewrite the answer's profile-level-id
to the stream's own.

Media, for now, goes through aiortc's public path: a track whose `recv()` returns the stream's
pre-encoded access units as `av.Packet`s, which aiortc packetizes per viewer. The fast path
(packetize once, fan out) replaces this in sender.py.

Private aiortc symbols used here (guarded by tests/test_rtc_contract.py; aiortc pinned in
pyproject.toml):
- `RTCRtpSender._send_keyframe()`: aiortc calls it on PLI and FIR. Its own version only flags its
  own encoder, which pre-encoded media never uses; we point it at `Stream.request_keyframe`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from appliance import h264, sdp
from appliance.config import IceServer
from appliance.errors import BadOffer, NoCommonCodec
from appliance.media import VIDEO_CLOCK_RATE
from appliance.stream import Reader, ReaderClosed

logger = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
_BASELINE = "4200"
_CONSTRAINED_BASELINE = "42e0"


class EncodedVideoTrack(MediaStreamTrack):
    """A video track that hands aiortc the stream's encoded access units, starting at a keyframe."""

    kind = "video"

    def __init__(self, reader: Reader) -> None:
        super().__init__()
        self._reader = reader

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        try:
            frame = await self._reader.get()
        except ReaderClosed:
            self.stop()
            raise MediaStreamError from None
        packet = av.Packet(frame.data)
        packet.pts = frame.pts
        packet.time_base = _TIME_BASE
        return packet


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
    """The profile-level-id to answer with, for a stream of the given profile; NoCommonCodec if none.

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


def has_video(offer: str) -> bool:
    return any(line.startswith("m=video ") for line in offer.replace("\r\n", "\n").split("\n"))


async def answer(
    offer: str,
    reader: Reader,
    stream_profile_level_id: str,
    ice_servers: Sequence[IceServer],
    request_keyframe: Callable[[], None],
) -> tuple[RTCPeerConnection, str]:
    """A peer connection that sends the reader's stream, and the SDP answer to return to the viewer.

    Raises BadOffer (400) or NoCommonCodec (406). On error, nothing is left open.
    """
    problem = sdp.webrtc_offer_problem(offer)
    if problem is not None:
        raise BadOffer(problem)
    if not has_video(offer):
        raise NoCommonCodec("the offer has no video section; this stream sends H.264 video")
    answer_plid = choose_h264_format(offer, stream_profile_level_id)
    pc = RTCPeerConnection(ice_configuration(ice_servers))
    try:
        transceiver = pc.addTransceiver(EncodedVideoTrack(reader), direction="sendonly")
        transceiver.setCodecPreferences(_codec_preferences(answer_plid))
        # aiortc calls this on PLI/FIR; aim it at the encoder (see the module docstring).
        transceiver.sender._send_keyframe = request_keyframe  # type: ignore[method-assign]
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=sdp.strip_mdns_candidates(offer), type="offer")
            )
        except Exception as e:  # aiortc raises ValueError, InvalidAccessError, OperationError...
            detail = str(e) or type(e).__name__
            if "codec" in detail.lower():
                raise NoCommonCodec(f"no common codec: {detail}") from None
            raise BadOffer(f"the offer cannot be answered: {detail}") from None
        await pc.setLocalDescription(await pc.createAnswer())
        text = sdp.set_h264_profile_level_id(pc.localDescription.sdp, answer_plid)
        return pc, text
    except BaseException:
        reader.close()
        await pc.close()
        raise


async def add_candidates(pc: RTCPeerConnection, frag: sdp.SdpFrag) -> int:
    """Add trickled remote candidates (mDNS ones skipped); returns how many were added."""
    added = 0
    for index, media in enumerate(frag.media):
        for line in media.candidates:
            if sdp.is_mdns_candidate("a=" + line):
                continue
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
