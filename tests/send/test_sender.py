"""The fast-path sender with real sockets and real SRTP: what a viewer's socket receives."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket, RtpPacket
from pylibsrtp import Policy, Session

from appliance.core import rtp
from appliance.core.packetizer import H264Packetizer
from appliance.core.ring import PacketRing
from appliance.send.sender import Negotiated, RetransmitBudget, RtpSender
from appliance.send.udp import UdpOutput

IDS = {rtp.URI_MID: 9, rtp.URI_ABS_SEND_TIME: 2, rtp.URI_PLAYOUT_DELAY: 5}
NEGOTIATED = Negotiated(
    payload_type=108,
    ssrc=0x11223344,
    extension_ids=IDS,
    mid="0",
    cname="cn",
    rtx_payload_type=109,
    rtx_ssrc=0x55667788,
)
MAX = 1200


def nal(kind: int, size: int) -> bytes:
    return bytes([0x60 | kind]) + os.urandom(size - 2).replace(b"\x00\x00", b"\x00\x01") + b"\x80"


def annexb(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


class Viewer:
    """A UDP socket on loopback that unprotects and parses what it receives."""

    def __init__(self, key: bytes) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0)
        self.srtp = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        self.ext = HeaderExtensionsMap()
        self.ext.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in IDS.items()
                ]
            )
        )

    def datagrams(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536))
            except BlockingIOError:
                return out

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(self.srtp.unprotect(d), self.ext) for d in self.datagrams()]


def make_sender(
    ring: PacketRing,
    key: bytes,
    sock: socket.socket,
    address: object,
    keyframes: list[int],
    packet_loop: str = "auto",
) -> RtpSender:
    """A sender with a real SRTP session keyed with `key`, sending from `sock` to `address`, its
    packets sent by the C loop or by the Python one (`packet_loop`)."""
    return RtpSender(
        "t",
        ring,
        NEGOTIATED,
        Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND)),
        UdpOutput(sock, address),  # type: ignore[arg-type]
        lambda: keyframes.append(1),
        packet_loop=packet_loop,
    )


# Every test here runs on both packet loops: the C one (send/packetloop.c) and the Python one.
LOOPS = ["c", "python"]


@pytest.fixture(params=LOOPS)
def setup(request) -> Iterator[tuple[RtpSender, H264Packetizer, Viewer, list[int]]]:
    key = os.urandom(30)
    viewer = Viewer(key)
    sender_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender_sock.bind(("127.0.0.1", 0))
    ring = PacketRing(256, MAX)
    keyframes: list[int] = []
    sender = make_sender(
        ring, key, sender_sock, viewer.sock.getsockname(), keyframes, request.param
    )
    assert sender.packet_loop == request.param
    yield sender, H264Packetizer(ring, MAX), viewer, keyframes
    sender.close()
    sender_sock.close()
    viewer.sock.close()


def test_starts_at_a_keyframe_and_sends_every_packet_once(setup) -> None:
    sender, packetizer, viewer, _ = setup
    sender.send_range(packetizer.packetize(annexb(nal(1, 3000)), 3000, 0, False))
    assert viewer.datagrams() == []  # not a place to start decoding
    idr = packetizer.packetize(annexb(nal(7, 20), nal(8, 5), nal(5, 6000)), 6000, 0, True)
    sender.send_range(idr)
    p_frame = packetizer.packetize(annexb(nal(1, 2500)), 9000, 0, False)
    sender.send_range(p_frame)
    received = viewer.packets()
    ring = packetizer.ring
    assert [bytes(p.payload) for p in received] == [
        bytes(ring.payload(i)) for i in [*idr, *p_frame]
    ]
    seqs = [p.sequence_number for p in received]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    assert {p.ssrc for p in received} == {NEGOTIATED.ssrc}
    assert {p.payload_type for p in received} == {108}
    assert [p.marker for p in received] == [0] * (len(idr) - 1) + [1] + [0] * (len(p_frame) - 1) + [
        1
    ]
    base = received[0].timestamp
    assert {(p.timestamp - base) & 0xFFFFFFFF for p in received} == {0, 3000}
    assert {p.extensions.mid for p in received} == {"0"}
    assert all(p.extensions.abs_send_time is not None for p in received)
    assert sender.stats.packets == len(received) and sender.stats.frames == 2


def test_equal_size_packets_leave_in_one_gso_call(setup) -> None:
    sender, packetizer, viewer, _ = setup
    idr = packetizer.packetize(annexb(nal(5, 20_000)), 0, 0, True)  # 17 FU-A fragments
    sender.send_range(idr)
    datagrams = viewer.datagrams()
    assert len(datagrams) == len(idr) == 17
    assert len({len(d) for d in datagrams[:-1]}) == 1  # all full size but the last
    assert sender.sends() == (1, 17)  # one system call, 17 datagrams


def test_nack_is_answered_with_rtx_from_the_ring(setup) -> None:
    sender, packetizer, viewer, _ = setup
    sender.send_range(packetizer.packetize(annexb(nal(5, 5000)), 0, 0, True))
    sent = viewer.packets()
    lost = sent[2]
    sender.on_nack([lost.sequence_number, (lost.sequence_number + 1000) & 0xFFFF])
    (rtx,) = viewer.packets()  # the unknown sequence number is ignored
    assert (rtx.payload_type, rtx.ssrc, rtx.timestamp) == (109, NEGOTIATED.rtx_ssrc, lost.timestamp)
    assert int.from_bytes(rtx.payload[:2], "big") == lost.sequence_number
    assert rtx.payload[2:] == lost.payload
    assert sender.stats.retransmits == 1 and sender.stats.nacks == 1


def test_nack_for_an_overwritten_packet_sends_nothing(setup) -> None:
    sender, packetizer, viewer, _ = setup
    sender.send_range(packetizer.packetize(annexb(nal(5, 1000)), 0, 0, True))
    first = viewer.packets()[0].sequence_number
    for i in range(300):  # more than the ring holds
        sender.send_range(packetizer.packetize(annexb(nal(1, 500)), i, 0, False))
    viewer.datagrams()
    sender.on_nack([first])
    assert viewer.datagrams() == [] and sender.stats.retransmits == 0


def test_sender_report_maps_capture_time_to_rtp_time(setup) -> None:
    sender, packetizer, viewer, _ = setup
    assert sender.sender_report() is None  # nothing sent yet
    capture_ns = 1_800_000_000_000_000_000
    sender.send_range(packetizer.packetize(annexb(nal(5, 100)), 90_000, capture_ns, True))
    (packet,) = viewer.packets()
    sr, sdes = RtcpPacket.parse(sender.sender_report() or b"")
    info = sr.sender_info
    assert sr.ssrc == NEGOTIATED.ssrc and (info.packet_count, info.octet_count) == (1, 100)
    # the SR's (NTP, RTP) pair lies on the line through (capture time, packet timestamp)
    ntp_ns = ((info.ntp_timestamp >> 32) - rtp.NTP_UNIX_OFFSET) * 10**9 + (
        (info.ntp_timestamp & 0xFFFFFFFF) * 10**9 >> 32
    )
    expected = (packet.timestamp + (ntp_ns - capture_ns) * 90_000 // 10**9) & 0xFFFFFFFF
    assert abs(info.rtp_timestamp - expected) <= 2
    assert sdes.chunks[0].items == [(1, b"cn")]


def test_keyframe_requests_and_receiver_reports(setup) -> None:
    sender, packetizer, _, keyframes = setup
    sender.on_keyframe_request(fir=False)
    sender.on_keyframe_request(fir=True)
    assert keyframes == [1, 1] and (sender.stats.plis, sender.stats.firs) == (1, 1)
    sender.send_range(packetizer.packetize(annexb(nal(5, 100)), 0, 0, True))
    sr = RtcpPacket.parse(sender.sender_report() or b"")[0]
    lsr = (sr.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
    sender.on_receiver_report(fraction_lost=64, packets_lost=3, jitter=90, lsr=lsr, dlsr=0)
    assert sender.stats.fraction_lost == 0.25 and sender.stats.packets_lost == 3
    assert sender.stats.rtt is not None and 0 <= sender.stats.rtt < 1


@pytest.mark.parametrize("packet_loop", LOOPS)
def test_full_kernel_buffer_drops_counts_and_asks_for_a_keyframe(packet_loop: str) -> None:
    """A real socket whose peer stops reading: the sender drops, never queues, and resyncs."""
    key = os.urandom(30)
    with tempfile.TemporaryDirectory() as tmp:
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(f"{tmp}/viewer")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ring = PacketRing(1024, MAX)
        packetizer = H264Packetizer(ring, MAX)
        keyframes: list[int] = []
        sender = make_sender(ring, key, sock, f"{tmp}/viewer", keyframes, packet_loop)
        sender.send_range(packetizer.packetize(annexb(nal(5, 1000)), 0, 0, True))
        for i in range(1, 2000):
            sender.send_range(packetizer.packetize(annexb(nal(1, 1000)), i, 0, False))
            if sender.stats.send_drops:
                break
        assert sender.stats.send_drops >= 1
        assert sender.stats.send_error == "Resource temporarily unavailable"
        assert keyframes == [1]  # asked once, then waits for the keyframe
        sent = sender.stats.packets
        sender.send_range(packetizer.packetize(annexb(nal(1, 500)), 9999, 0, False))
        assert sender.stats.packets == sent  # P-frames are skipped until a keyframe
        sender.close()
        sock.close()
        receiver.close()


def test_a_viewer_that_nacks_everything_gets_a_budget_not_the_ring(setup) -> None:
    """Before the budget, one viewer NACKing the whole ring ten times a second got ×74 its own
    traffic; now, within one second, it gets RetransmitBudget.FLOOR bytes at most."""
    sender, packetizer, viewer, _ = setup
    sender.send_range(packetizer.packetize(annexb(nal(5, 1000)), 0, 0, True))
    for i in range(1, 200):
        sender.send_range(packetizer.packetize(annexb(nal(1, 1000)), i * 3000, 0, False))
    seqs = [p.sequence_number for p in viewer.packets()]
    assert len(seqs) == 200
    for _ in range(10):
        sender.on_nack(seqs)
    resent = viewer.datagrams()
    largest = max(len(d) for d in resent)
    assert sum(len(d) for d in resent) <= RetransmitBudget.FLOOR + largest
    assert len(resent) == sender.stats.retransmits >= 10  # real loss is still repaired
    assert sender.stats.retransmits_refused == 10 * 200 - len(resent)


def test_retransmit_budget_is_a_share_of_what_the_viewer_was_sent() -> None:
    now = [0.0]
    budget = RetransmitBudget(clock=lambda: now[0])
    assert budget.left == RetransmitBudget.FLOOR  # before anything was sent
    budget.left = 0
    budget.roll(sent=400_000)  # within the first second: no new budget
    assert budget.left == 0
    now[0] = 2.0
    budget.roll(sent=400_000)  # 200 kB/s over the last two seconds
    assert budget.left == RetransmitBudget.SHARE * 200_000
    now[0] = 3.0
    budget.roll(sent=401_000)  # a quiet second: the floor
    assert budget.left == RetransmitBudget.FLOOR


def test_a_kernel_without_gso_is_said_once(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    """Every viewer's socket finds it out on its own (Python or C loop): one log line in all."""
    from appliance.send import udp

    monkeypatch.setattr(udp, "_gso_missing_said", False)
    with caplog.at_level(logging.INFO, logger="appliance.send.udp"):
        for _ in range(3):
            udp.gso_unavailable("Invalid argument")
    assert [r.getMessage() for r in caplog.records] == [
        "UDP GSO unavailable here (Invalid argument): one datagram at a time"
    ]
