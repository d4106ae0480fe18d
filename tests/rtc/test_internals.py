"""What rtc/internals.py relies on in aiortc and aioice, checked by behaviour, not by source text:
real peer connections in this process, over the test's network namespace. When an aiortc upgrade
moves something an accessor uses, the accessor's test here fails. tests/rtc/test_versions.py runs
this file again on the oldest aiortc and aioice the pins allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import struct
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import aioice.ice
import pytest
from aioice import stun
from aiortc import (
    RTCCertificate,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, generate_certificate
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtpPacket,
)
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from appliance.core import rtp
from appliance.rtc import internals
from appliance.rtc.diagnose import explain
from appliance.rtc.dtls import RetiredDtls
from appliance.rtc.viewer import EncodedVideoTrack
from appliance.send.udp import Output
from tests.certs import self_signed

pytestmark = [pytest.mark.e2e]

IDR = b"\x65\x88\x84\x00\x33\xff"  # one IDR slice NAL: a single-NAL RTP payload (RFC 6184)


def test_aiortc_and_aioice_are_in_the_pinned_range() -> None:
    aiortc = tuple(int(x) for x in version("aiortc").split(".")[:2])
    aioice = tuple(int(x) for x in version("aioice").split(".")[:2])
    assert (1, 15) <= aiortc < (1, 17) and (0, 10) <= aioice < (0, 14), (aiortc, aioice)


class Recorder:
    """A TakenOver track that records what take_over() hands it, and sends one real RTP packet
    through the output and SRTP session it is given."""

    name = "contract"
    kind = "video"
    reports_in_batch = False  # its own RTCP task asks it for reports

    def __init__(self) -> None:
        self.started: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self.feedback_items: list[tuple[Any, ...]] = []
        self.reports = 0
        self.closed = False
        self.output: Output | None = None

    def start(self, parameters: Any, ssrc: int, rtx_ssrc: int, srtp: Any, output: Output) -> None:
        pt = parameters.codecs[0].payloadType
        for seq in range(3):
            header = struct.pack("!BBHII", 0x80, 0x80 | pt, seq, 3000 * seq, ssrc)
            packet = srtp.protect(header + IDR)
            assert output.send(memoryview(packet), 0) == 0
        self.output = output
        self.started.set_result((parameters, ssrc, rtx_ssrc, srtp, output))

    def feedback(self, item: tuple[Any, ...]) -> None:
        self.feedback_items.append(item)

    def report(self) -> bytes | None:
        self.reports += 1
        return None

    def bye(self) -> bytes | None:
        return None

    def close(self) -> None:
        self.closed = True
        if self.output is not None:
            self.output.close()


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def wait_state(pc: RTCPeerConnection, state: str, timeout: float = 10.0) -> None:
    """Until `pc`'s connectionState is `state`; fails after `timeout` seconds."""
    for _ in range(int(timeout / 0.05)):
        if pc.connectionState == state:
            return
        await asyncio.sleep(0.05)
    assert pc.connectionState == state, f"{pc.connectionState}, not {state}, after {timeout} s"


@contextlib.asynccontextmanager
async def connected_pair() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    """A recvonly viewer and a sendonly server (aiortc's own sender), both connected; closed
    on the way out."""
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        viewer.addTransceiver("video", direction="recvonly")
        server.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        await connect(viewer, server)
        await wait_state(server, "connected")
        await wait_state(viewer, "connected")
        yield viewer, server
    finally:
        await viewer.close()
        await asyncio.wait_for(server.close(), 10)


async def test_take_over_hands_the_keyed_srtp_session_and_the_nominated_path() -> None:
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    recorder = Recorder()
    try:
        viewer.addTransceiver("video", direction="recvonly")
        received: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        viewer.on(
            "track", lambda track: received.set_result(track) if not received.done() else None
        )
        transceiver = server.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        internals.take_over(transceiver.sender, recorder)
        await connect(viewer, server)
        parameters, ssrc, rtx_ssrc, _srtp, _output = await asyncio.wait_for(recorder.started, 10)
        assert parameters.codecs and parameters.muxId is not None
        assert ssrc == transceiver.sender._ssrc and rtx_ssrc != ssrc
        # What we sent through aiortc's SRTP session and ICE's socket arrived, and decrypted.
        await asyncio.wait_for(received, 10)
        inbound = [
            s for s in (await viewer.getReceivers()[0].getStats()).values()
            if s.type == "inbound-rtp"
        ]  # fmt: skip
        assert inbound and inbound[0].packetsReceived >= 1
        # The viewer's RTCP (receiver reports about our SSRC) reaches the track, read at the
        # socket (FeedbackReader); our loop asks for reports.
        for _ in range(60):
            if recorder.feedback_items and recorder.reports:
                break
            await asyncio.sleep(0.1)
        assert recorder.reports
        assert recorder.feedback_items and all(
            item[0] == rtp.REPORT and item[1] == ssrc for item in recorder.feedback_items
        ), recorder.feedback_items
    finally:
        await viewer.close()
        await asyncio.wait_for(server.close(), 10)  # stop() waits on the events we set
    assert recorder.closed


async def test_a_peers_rtcp_is_read_at_the_socket_and_forged_srtcp_acts_on_nothing() -> None:
    """What an aiortc peer's SRTCP asks of our taken-over sender reaches the track in order,
    read in the ICE socket's callback (FeedbackReader): a report block, a NACK, a PLI and a FIR
    (whose SSRC is in its FCI, RFC 5104); items about other SSRCs go nowhere. The same packet
    with one byte changed on the wire does not authenticate: dropped, counted, nothing acts."""
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    recorder = Recorder()
    try:
        viewer.addTransceiver("video", direction="recvonly")
        transceiver = server.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        internals.take_over(transceiver.sender, recorder)
        await connect(viewer, server)
        _parameters, ssrc, _rtx, _srtp, _output = await asyncio.wait_for(recorder.started, 10)
        await wait_state(viewer, "connected")
        block = RtcpReceiverInfo(
            ssrc=ssrc, fraction_lost=12, packets_lost=-3, highest_sequence=9, jitter=77,
            lsr=0x1234_5678, dlsr=65536,
        )  # fmt: skip
        other = RtcpReceiverInfo(
            ssrc=ssrc ^ 1, fraction_lost=0, packets_lost=0, highest_sequence=0, jitter=0,
            lsr=0, dlsr=0,
        )  # fmt: skip
        fir = struct.pack("!BBHII", 0x84, 206, 4, 1, 0) + struct.pack("!IB3x", ssrc, 7)
        compound = (
            bytes(RtcpRrPacket(ssrc=1, reports=[other, block]))
            + bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=ssrc, lost=[5, 7]))
            + bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=ssrc))
            + bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=ssrc ^ 1))
            + fir
        )
        before = internals.FEEDBACK.packets
        recorder.feedback_items.clear()
        await dtls_of(viewer)._send_rtp(compound)
        expected = [
            (rtp.REPORT, ssrc, 12, -3, 77, 0x1234_5678, 65536),
            (rtp.NACK, ssrc, [5, 7]),
            (rtp.PLI, ssrc),
            (rtp.FIR, ssrc),
        ]
        for _ in range(100):
            if expected[-1] in recorder.feedback_items:
                break
            await asyncio.sleep(0.02)
        # (The viewer's aiortc sends RTCP of its own too: its reports, a PLI when it cannot decode.)
        items = recorder.feedback_items
        assert expected[0] in items, items
        start = items.index(expected[0])
        assert items[start : start + 4] == expected, items
        assert internals.FEEDBACK.packets > before
        # Its last byte changed on the wire: SRTCP refuses it; nothing reaches the track.
        forged = bytearray(dtls_of(viewer)._tx_srtp.protect_rtcp(compound))
        forged[-1] ^= 1
        refused = internals.FEEDBACK.unauthenticated.total
        recorder.feedback_items.clear()
        await dtls_of(viewer).transport._connection.sendto(bytes(forged), 1)
        for _ in range(100):
            if internals.FEEDBACK.unauthenticated.total > refused:
                break
            await asyncio.sleep(0.02)
        assert internals.FEEDBACK.unauthenticated.total == refused + 1
        assert expected[0] not in recorder.feedback_items and (rtp.FIR, ssrc) not in (
            recorder.feedback_items
        )
        assert server.connectionState == "connected"
    finally:
        await viewer.close()
        await asyncio.wait_for(server.close(), 10)


async def test_the_peers_ice_checks_on_the_nominated_pair_are_answered_and_checked_by_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once ICE nominated a pair, the peer's checks on it (keepalives, consent) are answered by
    core/stun.py in the socket's callback: the peer's own aioice sends a real check and accepts
    the answer (it verifies the MESSAGE-INTEGRITY with our password). A check with another
    USERNAME still goes to aioice, which refuses it."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 3600)  # only the test's checks count
    async with connected_pair() as (viewer, server):
        ice = dtls_of(viewer).transport._connection  # the viewer's aioice: ICE controlling
        pair = ice._nominated[1]
        for nominate in (False, True):
            before = internals.CHECKS_ANSWERED
            response, _addr = await pair.protocol.request(
                ice.build_request(pair, nominate=nominate),
                pair.remote_addr,
                integrity_key=ice.remote_password.encode(),
                retransmissions=0,
            )
            assert response.message_class == stun.Class.RESPONSE
            local = pair.local_candidate  # where the viewer sent from: what we saw
            assert response.attributes["XOR-MAPPED-ADDRESS"] == (local.host, local.port)
            assert internals.CHECKS_ANSWERED == before + 1
        before = internals.CHECKS_ANSWERED
        stranger = ice.build_request(pair, nominate=False)
        stranger.attributes["USERNAME"] = "not-ours:theirs"
        stranger.add_message_integrity(ice.remote_password.encode())
        # Refused unsigned, as RFC 8489 9.1.3 says: 401 (aioice 0.10: 400).
        with pytest.raises(stun.TransactionFailed, match="40[01]"):
            await pair.protocol.request(stranger, pair.remote_addr, retransmissions=0)
        assert internals.CHECKS_ANSWERED == before
        assert server.connectionState == "connected"


async def test_consent_checks_keep_a_connection_and_a_silent_peer_is_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """install()'s consent freshness (RFC 7675): our checks, written and their answers read by
    core/stun.py, are answered and keep the connection; once the peer's socket stops reading,
    CONSENT_FAILURES checks in a row go unanswered and the connection closes, as aioice's own
    would (here every 0.1 s and after 3, instead of 5 s and 6)."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    async with connected_pair() as (viewer, server):
        checks, answered = internals.CONSENT.checks, internals.CONSENT.answered
        await asyncio.sleep(1.5)
        sent = internals.CONSENT.checks - checks
        assert sent >= 10  # both ends check, about every 0.1 s
        # All answered but those still in flight (and, on a loaded machine, a late one or two).
        got = internals.CONSENT.answered - answered
        assert got >= sent * 3 // 4, (sent, got)
        assert server.connectionState == "connected"
        assert viewer.connectionState == "connected"
        silent = dtls_of(viewer).transport._connection._nominated[1].protocol.transport
        silent.pause_reading()
        for _ in range(100):  # 3 checks × (0.1 s + 0.5 s unanswered): about 2 s
            if server.connectionState in ("failed", "closed"):
                break
            await asyncio.sleep(0.05)
        assert server.connectionState in ("failed", "closed"), server.connectionState
        silent.resume_reading()


async def test_aim_keyframe_requests_receives_pli_and_fir() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTransceiver("video", direction="sendonly").sender
        asked: list[int] = []
        internals.aim_keyframe_requests(sender, lambda: asked.append(1))
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc)
        await sender._handle_rtcp_packet(pli)  # as aiortc's DTLS transport routes it
        assert asked == [1]
    finally:
        await pc.close()


class Queue:
    """A decoder queue as tap_receiver wants it."""

    def __init__(self) -> None:
        self.frames: list[Any] = []

    def put(self, item: Any) -> None:
        if item is not None:
            self.frames.append(item)

    def get(self, *args: Any, **kwargs: Any) -> None:
        return None


async def test_tap_receiver_gets_access_units_undecoded_and_send_pli_reaches_the_publisher() -> (
    None
):
    from tests.e2e.peers import CountingTrack

    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    queue = Queue()
    try:
        publisher_sender = publisher.addTrack(CountingTrack(320, 240))
        keyframes_asked: list[int] = []
        ask = publisher_sender._send_keyframe
        publisher_sender._send_keyframe = lambda: (keyframes_asked.append(1), ask())[1]
        transceiver = server.addTransceiver("video", direction="recvonly")
        internals.tap_receiver(transceiver.receiver, queue, internals.MarkerJitterBuffer())
        await publisher.setLocalDescription(await publisher.createOffer())
        offer = publisher.localDescription.sdp.replace("VP8", "VP8-not")  # H.264 only
        await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await server.setLocalDescription(await server.createAnswer())
        await publisher.setRemoteDescription(server.localDescription)
        for _ in range(100):
            if len(queue.frames) >= 3:
                break
            await asyncio.sleep(0.1)
        assert len(queue.frames) >= 3
        codec, frame = queue.frames[0]
        assert codec.mimeType.lower() == "video/h264"
        assert frame.data.startswith(b"\x00\x00\x00\x01")  # depayloaded Annex-B, not decoded
        ssrc = transceiver.receiver.getSynchronizationSources()[0].source
        await internals.send_pli(transceiver.receiver, ssrc)
        for _ in range(50):
            if keyframes_asked:
                break
            await asyncio.sleep(0.05)
        assert keyframes_asked
    finally:
        await publisher.close()
        await server.close()


def test_installed_codecs_and_dtls_ciphers() -> None:
    internals.install()
    capabilities = RTCRtpSender.getCapabilities("video")
    assert capabilities is not None
    h264 = {
        c.parameters["profile-level-id"]: c
        for c in capabilities.codecs
        if c.mimeType == "video/H264"
    }
    assert {"42001f", "42e01f", "4d001f", "64001f"} <= set(h264)
    pts = [c.payloadType for c in CODECS["video"]]
    assert len(pts) == len(set(pts))  # the profiles install() added took free payload types
    certificate = RTCCertificate.generateCertificate()
    context = certificate._create_ssl_context(srtp_profiles=[SRTP_AES128_CM_SHA1_80])
    ciphers = SSL.Connection(context).get_cipher_list()
    assert "ECDHE-RSA-AES128-GCM-SHA256" in ciphers and "ECDHE-ECDSA-AES128-GCM-SHA256" in ciphers


async def test_handshake_facts_of_a_connection_and_of_a_fingerprint_that_does_not_match() -> None:
    internals.install()
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    liar = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    honest = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        assert internals.handshake_facts(viewer) is None  # no transceiver, no transport yet
        viewer.addTransceiver("video", direction="recvonly")
        server.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        await connect(viewer, server)
        await wait_state(server, "connected")
        facts = internals.handshake_facts(server)
        assert facts is not None
        assert facts.ice_state == "completed" and facts.pairs_succeeded >= 1
        assert facts.checked_by_peer >= 1 and facts.remote_candidates
        assert facts.dtls_state == "connected" and facts.encrypted
        assert facts.dtls_role in ("client", "server")
        assert facts.peer_certificate == "ECDSA secp256r1"  # aiortc's own certificates
        assert facts.srtp_profile and facts.srtp_profile.startswith("SRTP_")
        assert facts.trace.stage and facts.trace.alert_sent is None

        # The answer carries someone else's fingerprint: ICE succeeds, DTLS completes, and the
        # offerer refuses the certificate it got.
        liar.addTransceiver("video", direction="recvonly")
        honest.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        await liar.setLocalDescription(await liar.createOffer())
        await honest.setRemoteDescription(liar.localDescription)
        await honest.setLocalDescription(await honest.createAnswer())
        key = ec.generate_private_key(ec.SECP256R1())
        other = RTCCertificate(key, generate_certificate(key)).getFingerprints()[0].value
        answer = "\r\n".join(
            f"a=fingerprint:sha-256 {other}" if line.startswith("a=fingerprint:sha-256") else line
            for line in honest.localDescription.sdp.split("\r\n")
            if not line.startswith("a=fingerprint:sha-") or line.startswith("a=fingerprint:sha-256")
        )
        await liar.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await wait_state(liar, "failed")
        facts = internals.handshake_facts(liar)
        assert facts is not None and facts.encrypted and facts.dtls_state == "failed"
        assert explain(facts, connected=False).code == "dtls_fingerprint"
        # The DTLS context is shared (one certificate for the process), what it saw is not.
        assert liar_ssl(liar).get_context() is liar_ssl(server).get_context()
        later = internals.handshake_facts(server)
        assert later is not None and later.trace.alert_sent is None
        assert later.trace.alert_received is None and later.dtls_state == "connected"
    finally:
        for pc in (viewer, server, liar, honest):
            await pc.close()


def certificate_valid_for(left: datetime.timedelta) -> RTCCertificate:
    return RTCCertificate(*self_signed("expiring", left))


def liar_ssl(pc: RTCPeerConnection) -> Any:
    return pc.getTransceivers()[0].sender.transport._ssl


async def test_every_connection_of_the_process_shares_one_certificate() -> None:
    internals.install()
    first = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    second = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        first.addTransceiver("video", direction="recvonly")
        second.addTransceiver("video", direction="recvonly")
        offers = []
        for pc in (first, second):
            await pc.setLocalDescription(await pc.createOffer())
            offers.append(
                [x for x in pc.localDescription.sdp.split("\r\n") if x.startswith("a=fingerprint")]
            )
        assert offers[0] and offers[0] == offers[1]
        # ... until it is a day from the end of its validity: then a new one, kept in turn.
        shared = RTCCertificate.generateCertificate()
        assert RTCCertificate.generateCertificate() is shared
        expiring = certificate_valid_for(datetime.timedelta(hours=23))
        internals._CERTIFICATE[:] = [expiring]
        renewed = RTCCertificate.generateCertificate()
        assert renewed is not expiring and renewed is not shared
        assert renewed.expires - datetime.datetime.now(datetime.timezone.utc) > (
            datetime.timedelta(days=2)
        )
        assert RTCCertificate.generateCertificate() is renewed
    finally:
        await first.close()
        await second.close()


async def test_a_sendonly_receiver_loses_the_receive_state_it_never_uses() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver(EncodedVideoTrack(None), direction="sendonly").receiver
        assert receiver._RTCRtpReceiver__remote_bitrate_estimator is not None  # aiortc's names
        assert receiver._RTCRtpReceiver__jitter_buffer.capacity >= 128  # 512 since aiortc 1.16
        assert receiver._RTCRtpReceiver__decoder_queue is not None
        internals.drop_receive_state(receiver)
        assert receiver._RTCRtpReceiver__remote_bitrate_estimator is None
        assert receiver._RTCRtpReceiver__jitter_buffer.capacity == 4
        assert receiver._RTCRtpReceiver__decoder_queue is None
        # RTP that reaches it anyway (abs-send-time set: the estimator's input) is handled.
        packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=0, ssrc=1234)
        packet.extensions.abs_send_time = 0x123456
        await receiver._handle_rtp_packet(packet, arrival_time_ms=1000)
        assert 1234 in receiver._RTCRtpReceiver__active_ssrc
    finally:
        await pc.close()


def test_the_shared_dtls_context_keeps_no_session_and_no_idle_buffers() -> None:
    """One SSL context per SRTP profile list serves every connection: no session cache (it would
    grow with every viewer) and OpenSSL's read and write buffers released while a connection is
    idle (DTLS is idle once the handshake is done: about 34 KB a viewer otherwise)."""
    internals.install()
    certificate = RTCCertificate.generateCertificate()
    context = certificate._create_ssl_context(srtp_profiles=[SRTP_AES128_CM_SHA1_80])
    assert certificate._create_ssl_context(srtp_profiles=[SRTP_AES128_CM_SHA1_80]) is context
    assert context.get_session_cache_mode() == SSL.SESS_CACHE_OFF
    assert context.set_mode(0) & SSL.MODE_RELEASE_BUFFERS  # set_mode(0) reads the mode back


def dtls_of(pc: RTCPeerConnection) -> Any:
    return pc.getTransceivers()[0].sender.transport


async def send_receiver_report(pc: RTCPeerConnection) -> None:
    """One SRTCP packet, as a viewer sends about once a second."""
    await dtls_of(pc)._send_rtp(bytes(RtcpRrPacket(ssrc=0x1234, reports=[])))


async def wait_retired(pc: RTCPeerConnection) -> None:
    for _ in range(100):
        if isinstance(dtls_of(pc)._ssl, RetiredDtls):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"DTLS still {type(dtls_of(pc)._ssl).__name__}")


@pytest.mark.parametrize("closer", ["ours", "peer"])
async def test_dtls_is_let_go_at_the_first_authenticated_srtcp_and_the_close_still_reaches_both(
    closer: str,
) -> None:
    """OpenSSL's handshaken connection goes at our first SRTCP from the peer (install());
    a close on either end still reaches the other at once, by close_notify: ours sealed by
    RetiredDtls and read by the peer's OpenSSL, the peer's read by RetiredDtls."""
    internals.install()
    async with connected_pair() as (viewer, server):
        assert type(dtls_of(server)._ssl) is SSL.Connection  # nothing from the peer yet
        await send_receiver_report(viewer)
        await wait_retired(server)
        assert type(dtls_of(viewer)._ssl) is SSL.Connection  # it got no SRTCP: kept
        facts = internals.handshake_facts(server)
        assert facts is not None and facts.encrypted and facts.dtls_state == "connected"
        assert facts.peer_certificate == "ECDSA secp256r1"
        assert facts.srtp_profile and facts.srtp_profile.startswith("SRTP_")
        assert facts.trace.stage  # what OpenSSL's info callback saw, kept
        await send_receiver_report(viewer)  # SRTCP still reaches the receiver side
        if closer == "ours":
            await server.close()
            await wait_state(viewer, "closed", timeout=5)  # by close_notify, not consent (30 s)
        else:
            await viewer.close()
            await wait_state(server, "closed", timeout=5)


async def test_dtls_that_carries_a_data_channel_stays_openssls() -> None:
    internals.install()
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        viewer.addTransceiver("video", direction="recvonly")
        viewer.createDataChannel("chat")
        server.addTransceiver(EncodedVideoTrack(None), direction="sendonly")
        await connect(viewer, server)
        await wait_state(server, "connected")
        await send_receiver_report(viewer)
        await send_receiver_report(viewer)
        await asyncio.sleep(0.5)
        assert type(dtls_of(server)._ssl) is SSL.Connection
        assert not internals.retire_dtls(dtls_of(server))
    finally:
        await viewer.close()
        await server.close()
