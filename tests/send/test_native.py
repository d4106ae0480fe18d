"""The C packet loop (send/packetloop.c) against the Python one, on the wire: the same access units
through two senders alike (same SRTP key, same SSRC, sequence numbers, timestamp offset and
clock), one on each loop, and every datagram their viewers receive compared byte for byte. Real
sockets, real libsrtp: both profiles WebRTC negotiates, IPv4 and IPv6, GSO batches and their
limits, the 16-bit sequence-number wrap, keyframe waits, and retransmissions mapped back through
the spans each loop records."""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Iterator

import pytest
from aiortc.rtp import RtcpPacket
from pylibsrtp import Policy, Session

from appliance.core import rtp
from appliance.core.fanout import FanOut
from appliance.core.packetizer import H264Packetizer
from appliance.core.ring import PacketRing
from appliance.send import native
from appliance.send.sender import MAX_SEGMENTS, SPANS, Negotiated, RtpSender
from appliance.send.udp import UdpOutput
from tests.send.test_sender import annexb, nal

IDS = {
    rtp.URI_MID: 3,
    rtp.URI_ABS_SEND_TIME: 2,
    rtp.URI_PLAYOUT_DELAY: 5,
    rtp.URI_ABS_CAPTURE_TIME: 7,
}
NEGOTIATED = Negotiated(108, 0x0BADCAFE, IDS, "video0", "cn", 109, 0x0DDBA11)
MAX = 1188
PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
}


def seed_near_the_wrap() -> int:
    """A seed whose first 16 random bits (the sender's first sequence number) are within a few
    hundred of 65535, so that the access units below cross the wrap."""
    return next(s for s in range(100_000) if random.Random(s).getrandbits(16) > 0xFF00)


class Wire:
    """A sender socket and a viewer socket on loopback; everything the viewer receives."""

    def __init__(self, family: int) -> None:
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
        self.viewer = socket.socket(family, socket.SOCK_DGRAM)
        self.viewer.bind((host, 0))
        self.viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.viewer.settimeout(0)
        self.sender = socket.socket(family, socket.SOCK_DGRAM)
        self.sender.bind((host, 0))
        self.received: list[bytes] = []

    def drain(self) -> None:
        while True:
            try:
                self.received.append(self.viewer.recv(65536))
            except BlockingIOError:
                return

    def close(self) -> None:
        self.viewer.close()
        self.sender.close()


def access_units() -> Iterator[tuple[bytes, bool]]:
    """A keyframe with its parameter sets, P-frames of one packet, of exactly full packets and of
    many (past one GSO batch), a tiny one, and keyframes again."""
    rng = random.Random(5)
    yield annexb(nal(7, 20), nal(8, 5), nal(5, 60_000)), True  # more than MAX_SEGMENTS packets
    for i in range(300):
        size = rng.choice([40, 700, MAX, 2 * MAX, 3 * MAX + 1, 9000, 15_000])
        yield annexb(nal(1, size)), False
        if i % 97 == 96:
            yield annexb(nal(7, 20), nal(8, 5), nal(5, 30_000)), True


def pin_clock(sender: RtpSender, ns: int) -> None:
    """The wall clock abs-send-time is read from, fixed at `ns` for this sender (both loops read
    the real clock otherwise: the C one, clock_gettime, when `now_ns` is 0)."""
    sender.clock_ns = lambda: ns
    if sender.native is not None:
        sender.native.v.now_ns = ns


# The viewers of one run: on the C loop, sent to alone (send_range) or in the fan-out's batch (one
# C call per access unit for all), and on the Python loop; the late ones join mid-GOP.
VIEWERS = {
    "c-alone": "c",
    "c-batch-1": "c",
    "c-batch-2": "c",
    "python": "python",
    "c-late": "c",
    "python-late": "python",
}
LATE_AT = 40


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_the_c_loop_puts_the_python_loop_s_bytes_on_the_wire(
    request: pytest.FixtureRequest, profile: str, family: int
) -> None:
    assert native.available(), native.WHY_NOT  # tests/run.sh builds it (gcc is installed)
    srtp_profile, key_length = PROFILES[profile]
    key = os.urandom(key_length)
    ring = PacketRing(4096, MAX)
    packetizer = H264Packetizer(ring, MAX)
    wires = {name: Wire(family) for name in VIEWERS}
    senders: dict[str, RtpSender] = {}
    request.addfinalizer(lambda: [x.close() for x in [*senders.values(), *wires.values()]])
    seed = seed_near_the_wrap()
    for name, loop in VIEWERS.items():
        random.seed(seed)  # the same sequence number and timestamp offset on all
        senders[name] = RtpSender(
            name,
            ring,
            NEGOTIATED,
            Session(Policy(key, Policy.SSRC_ANY_OUTBOUND, srtp_profile=srtp_profile)),
            UdpOutput(wires[name].sender, wires[name].viewer.getsockname()),  # type: ignore[arg-type]
            lambda: None,
            packet_loop=loop,
        )
        assert senders[name].packet_loop == loop
    fanout = FanOut("cam", "video")
    for name in ("c-batch-1", "python", "c-batch-2"):
        fanout.add(senders[name])
    assert len(fanout) == 3 and len(fanout._sinks) == 1  # the C ones went into one batch
    now = 1_790_000_000_123_456_789

    packets = 0
    longest = 0
    for i, (au, keyframe) in enumerate(access_units()):
        if i == 0:  # before the first keyframe: nothing is sent, by either loop
            p_frame = packetizer.packetize(annexb(nal(1, 900)), 0, 0, False)
            senders["c-alone"].send_range(p_frame)
            fanout.send(p_frame)
        if i == LATE_AT:
            fanout.add(senders["c-late"])
            fanout.add(senders["python-late"])
        for sender in senders.values():
            pin_clock(sender, now)
        capture_ns = now - 40_000_000 + i * 33_333_333
        indices = packetizer.packetize(au, 1000 + i * 3000, capture_ns, keyframe)
        senders["c-alone"].send_range(indices)
        fanout.send(indices)
        for wire in wires.values():
            wire.drain()
        now += 33_366_667
        packets += len(indices)
        longest = max(longest, len(indices))
    assert longest > MAX_SEGMENTS  # an access unit took more than one GSO batch

    received = {name: wire.received for name, wire in wires.items()}
    python = received["python"]
    assert len(python) == packets
    for name in ("c-alone", "c-batch-1", "c-batch-2"):
        assert received[name] == python, name
    # The late ones started at the keyframe after they joined, with the same bytes.
    assert 0 < len(received["c-late"]) < packets
    assert received["c-late"] == received["python-late"]
    seqs = [int.from_bytes(d[2:4], "big") for d in python]
    assert 0xFFFF in seqs and 0 in seqs  # crossed the wrap

    # What a viewer NACKs is found in the ring through the spans each loop recorded: the same
    # retransmissions (RTX) from both. The first access unit is older than the spans either
    # remembers (SPANS), and the last sequence number was never sent.
    assert i + 1 > SPANS
    lost = [seqs[5], seqs[-3], seqs[-1], (seqs[-1] + 10) & 0xFFFF]
    for sender in senders.values():
        sender.on_nack(lost)
    for wire in wires.values():
        wire.received.clear()
        wire.drain()
    assert len(wires["c-batch-1"].received) == 2
    assert wires["c-batch-1"].received == wires["python"].received

    # and a viewer unprotects them: real SRTP, not just equal bytes
    inbound = Session(Policy(key, Policy.SSRC_ANY_INBOUND, srtp_profile=srtp_profile))
    assert inbound.unprotect(python[0])[12:] and inbound.unprotect(python[-1])
    reference = senders["python"].stats
    for name in ("c-alone", "c-batch-1", "c-batch-2"):
        stats = senders[name].stats
        assert stats.packets == packets and stats.send_drops == 0, name
        assert (stats.octets, stats.bytes, stats.frames) == (
            reference.octets,
            reference.bytes,
            reference.frames,
        ), name
        assert stats.first_frame_at is not None
        assert senders[name].sends()[1] == packets + 2  # and the RTX

    # With the real clock (no pin), the C loop's abs-send-time is the Python loop's reading.
    c_sender = senders["c-alone"]
    assert c_sender.native is not None
    c_sender.clock_ns, c_sender.native.v.now_ns = time.time_ns, 0
    before = rtp.abs_send_time(time.time_ns())
    c_sender.send_range(packetizer.packetize(annexb(nal(5, 500)), 0, time.time_ns(), True))
    wires["c-alone"].received.clear()
    wires["c-alone"].drain()
    (datagram,) = wires["c-alone"].received
    at = rtp.HeaderLayout.build(108, 1, IDS, "video0").abs_send_time_at
    sent = int.from_bytes(datagram[at : at + 3], "big")
    assert (sent - before) % (1 << 24) < (1 << 18)  # within a second (6.18 fixed point)


def test_the_loop_for_this_machine_was_built_and_loads() -> None:
    """tests/run.sh's editable install runs the build hook (image/build_native.py): the C loop is
    there, loaded, and says so once in the log."""
    assert native.library_path().exists(), native.WHY_NOT
    assert native.LIB is not None, native.WHY_NOT


def test_a_viewer_whose_srtp_fails_leaves_the_batch_and_the_others_keep_their_video(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """libsrtp refusing one viewer's packets (here, for real: its session knows another SSRC
    only) is that viewer's trouble: the fan-out drops it with one log line, and the viewers in
    the same C call carry on."""
    key = os.urandom(30)
    ring = PacketRing(1024, MAX)
    packetizer = H264Packetizer(ring, MAX)
    wires = [Wire(socket.AF_INET) for _ in range(3)]
    senders: list[RtpSender] = []
    request.addfinalizer(lambda: [x.close() for x in [*senders, *wires]])
    fanout = FanOut("cam", "video")
    for i, wire in enumerate(wires):
        policy = (
            Policy(key, Policy.SSRC_SPECIFIC, ssrc_value=NEGOTIATED.ssrc + 1)  # not ours
            if i == 1
            else Policy(key, Policy.SSRC_ANY_OUTBOUND)
        )
        senders.append(
            RtpSender(
                f"v{i}",
                ring,
                NEGOTIATED,
                Session(policy),
                UdpOutput(wire.sender, wire.viewer.getsockname()),  # type: ignore[arg-type]
                lambda: None,
                packet_loop="c",
            )
        )
        fanout.add(senders[-1])
    sent = 0
    with caplog.at_level(logging.ERROR):
        for i in range(5):
            indices = packetizer.packetize(
                annexb(nal(5 if i == 0 else 1, 3000)), i * 3000, 0, i == 0
            )
            fanout.send(indices)
            sent += len(indices)
    for wire in wires:
        wire.drain()
    assert len(fanout) == 2 and senders[1] not in fanout
    assert caplog.text.count("a viewer's sender failed") == 1
    assert "srtp_protect failed with libsrtp status" in caplog.text
    assert len(wires[0].received) == len(wires[2].received) == sent
    assert wires[1].received == []


def test_an_address_the_c_loop_cannot_take_falls_back_to_the_python_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A link-local viewer address naming an interface this machine does not have: the viewer is
    served by the Python loop (whose sendto then reports what the kernel says), not refused."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    session = Session(Policy(bytes(30), Policy.SSRC_ANY_OUTBOUND))
    with caplog.at_level(logging.INFO):
        sender = RtpSender(
            "v",
            PacketRing(16, MAX),
            NEGOTIATED,
            session,
            UdpOutput(sock, ("fe80::1%nosuchif0", 9, 0, 0)),  # type: ignore[arg-type]
            lambda: None,
        )
    try:
        assert sender.packet_loop == "python"
        assert "viewer v: sent by the Python loop" in caplog.text
        output = UdpOutput(sock, ("fe80::1%nosuchif0", 9, 0, 0))  # type: ignore[arg-type]
        with pytest.raises(OSError):  # unless the C loop was asked for by name
            RtpSender(
                "w", PacketRing(16, MAX), NEGOTIATED, session, output, lambda: None, packet_loop="c"
            )
        output.close()
    finally:
        sender.close()
        sock.close()


def test_the_batch_s_sender_reports_are_the_python_loop_s(request: pytest.FixtureRequest) -> None:
    """One tick sends every C-loop viewer its RTCP SR + SDES (NativeBatch.report, instead of a
    timer per viewer): after SRTCP comes off, the bytes RtpSender.sender_report() builds, with
    the RTP time extrapolated from the newest access unit; and the viewer's receiver report that
    echoes it gives the round trip."""
    key = os.urandom(30)
    ring = PacketRing(1024, MAX)
    packetizer = H264Packetizer(ring, MAX)
    wires = {loop: Wire(socket.AF_INET) for loop in ("c", "python")}
    senders: dict[str, RtpSender] = {}
    request.addfinalizer(lambda: [x.close() for x in [*senders.values(), *wires.values()]])
    seed = seed_near_the_wrap()
    for loop, wire in wires.items():
        random.seed(seed)
        senders[loop] = RtpSender(
            loop,
            ring,
            NEGOTIATED,
            Session(Policy(key, Policy.SSRC_ANY_OUTBOUND)),
            UdpOutput(wire.sender, wire.viewer.getsockname()),  # type: ignore[arg-type]
            lambda: None,
            packet_loop=loop,
        )
    batch = native.NativeBatch()
    batch.add(senders["c"])
    now = 1_790_000_000_000_000_000
    assert batch.report() == 0  # nothing sent yet: no report
    for i in range(10):
        indices = packetizer.packetize(annexb(nal(5 if i == 0 else 1, 2500)), i * 3000, now, i == 0)
        senders["python"].send_range(indices)
        pin_clock(senders["c"], now)
        batch.send_range(indices)
        now += 33_333_333
    now += 12_345_678  # a report between two access units: RTP time extrapolated
    for sender in senders.values():
        pin_clock(sender, now)
    wires["c"].drain()  # the access units
    wires["c"].received.clear()
    assert batch.report() == 1
    wires["c"].drain()
    (srtcp,) = wires["c"].received
    inbound = Session(Policy(key, Policy.SSRC_ANY_INBOUND))
    expected = senders["python"].sender_report()
    assert expected is not None and inbound.unprotect_rtcp(srtcp) == expected

    sr = RtcpPacket.parse(expected)[0]
    lsr = (sr.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
    senders["c"].on_receiver_report(0, 0, 0, lsr, 0)
    assert senders["c"].stats.rtt is not None
