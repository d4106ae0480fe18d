"""Negotiation: an offer answered for a viewer (WHEP) or a publisher (WHIP), an offer made for a
WHIP endpoint (egress), and trickled candidates. Each peer connection gets an explicit ICE server
list (never aiortc's default public STUN server), transceivers made before the remote description
(aiortc applies codec preferences there), H.264 restricted to the profile the stream really
carries, Chromium's mDNS candidates taken out (see core/sdp.py), and the answer's profile-level-id
rewritten to the stream's own. What aiortc cannot answer is BadOffer (400) or NoCommonCodec (406),
and nothing is left open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from appliance.config import IceServer
from appliance.core import h264, sdp
from appliance.core.errors import BadOffer, NoCommonCodec
from appliance.core.stats import LogLimiter
from appliance.core.stream import Stream
from appliance.rtc import internals
from appliance.rtc.ingest import IngestAudio, IngestVideo
from appliance.rtc.viewer import (
    AiortcVideo,
    EncodedAudioTrack,
    EncodedVideoTrack,
    FastAudio,
    FastVideo,
)

_BASELINE = "4200"
_CONSTRAINED_BASELINE = "42e0"


logger = logging.getLogger(__name__)
# A TURN server that refuses or does not answer fails every session's allocation the same way:
# one line a minute says so (aioice drops the error and gathers without a relay).
_no_relay = LogLimiter(logger, interval=60.0)


def _say_if_no_relay(local_sdp: str, servers: Sequence[IceServer], name: str) -> None:
    turn = next((u for s in servers for u in s.urls if u.startswith(("turn:", "turns:"))), None)
    if turn is not None and " typ relay" not in local_sdp:
        _no_relay.log(
            logging.WARNING,
            "%s: no relay candidate from %s (it refused the credentials or did not answer in "
            "5 s): peers behind another NAT cannot reach this one",
            name,
            turn,
        )


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
        media = FastVideo(stream, name)
        transceiver = pc.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        internals.drop_receive_state(transceiver.receiver)
        internals.take_over(transceiver.sender, media)
        if stream.audio is not None and sdp.has_media(offer, "audio"):
            audio_transceiver = _add_audio(pc, media.add_audio(stream.audio))
    else:
        reader = stream.subscribe(name)
        media = AiortcVideo(reader)
        transceiver = pc.addTransceiver(EncodedVideoTrack(reader), direction="sendonly")
        internals.drop_receive_state(transceiver.receiver)
        # aiortc calls this on PLI/FIR; aim it at the encoder (see the module docstring).
        internals.aim_keyframe_requests(transceiver.sender, stream.request_keyframe)
    try:
        transceiver.setCodecPreferences(_codec_preferences(answer_plid))
        if audio_transceiver is not None:
            audio_transceiver.setCodecPreferences(_opus())
        await _apply_offer(pc, offer)
        await _create_answer(pc)
        _say_if_no_relay(pc.localDescription.sdp, ice_servers, name)
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
        internals.tap_receiver(transceiver.receiver, media, internals.MarkerJitterBuffer())
        media.receiver = transceiver.receiver
        transceiver.setCodecPreferences(_ingest_preferences())
        audio_transceiver = None
        if sdp.sends_opus(offer):
            media.audio = IngestAudio(stream.ensure_audio())
            audio_transceiver = pc.addTransceiver("audio", direction="recvonly")
            receiver = audio_transceiver.receiver
            internals.tap_receiver(receiver, media.audio, internals.PassThroughAudioBuffer())
            audio_transceiver.setCodecPreferences(_opus())
        await _apply_offer(pc, offer)
        for other in pc.getTransceivers():
            if other not in (transceiver, audio_transceiver):
                other.direction = "inactive"
        await _create_answer(pc)
        _say_if_no_relay(pc.localDescription.sdp, ice_servers, name)
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
    pc = RTCPeerConnection(ice_configuration(ice_servers))
    media = FastVideo(stream, name)
    try:
        transceiver = pc.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        internals.drop_receive_state(transceiver.receiver)
        internals.take_over(transceiver.sender, media)
        transceiver.setCodecPreferences(_codec_preferences(stream.profile_level_id))
        if stream.audio is not None:
            _add_audio(pc, media.add_audio(stream.audio)).setCodecPreferences(_opus())
        await pc.setLocalDescription(await pc.createOffer())
        _say_if_no_relay(pc.localDescription.sdp, ice_servers, name)
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
    internals.take_over(transceiver.sender, media)
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
    """Close a peer connection, to its end, whoever asks and whatever happens to them.

    - aiortc's own close() stops at a transceiver that never got a transport (an offer whose
      answer failed midway: AttributeError), which would leave the others' sockets open; here
      every transport that exists is stopped.
    - aiortc closes a connection itself when the peer ends DTLS, and a second close() awaits the
      first one's future: cancelling that second caller (a daemon stopping) cancelled the shared
      future, and aiortc's own close then failed ("Task exception was never retrieved",
      InvalidStateError). Shielded, the close runs in a task of its own to its end."""
    await asyncio.shield(_close(pc))


async def _close(pc: RTCPeerConnection) -> None:
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
