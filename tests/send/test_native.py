"""The C packet loop (send/packetloop.c) against the Python one, on the wire: the same access units
through two senders alike (same SRTP key, same SSRC, sequence numbers, timestamp offset and
clock), one on each loop, and every datagram their viewers receive compared byte for byte. Real
sockets, real libsrtp: both profiles WebRTC negotiates, IPv4 and IPv6, GSO batches and their
limits, the 16-bit sequence-number wrap, keyframe waits, and retransmissions mapped back through
the spans each loop records."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator

import pytest
from pylibsrtp import Policy, Session

from appliance.core import rtp
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
    wires = {loop: Wire(family) for loop in ("c", "python")}
    senders: dict[str, RtpSender] = {}
    request.addfinalizer(lambda: [x.close() for x in [*senders.values(), *wires.values()]])
    seed = seed_near_the_wrap()
    for loop, wire in wires.items():
        random.seed(seed)  # the same sequence number and timestamp offset on both
        senders[loop] = RtpSender(
            f"viewer-{loop}",
            ring,
            NEGOTIATED,
            Session(Policy(key, Policy.SSRC_ANY_OUTBOUND, srtp_profile=srtp_profile)),
            UdpOutput(wire.sender, wire.viewer.getsockname()),  # type: ignore[arg-type]
            lambda: None,
            packet_loop=loop,
        )
    assert {loop: s.packet_loop for loop, s in senders.items()} == {"c": "c", "python": "python"}
    now = [1_790_000_000_123_456_789]
    for sender in senders.values():
        sender.clock_ns = lambda: now[0]

    packets = 0
    longest = 0
    for i, (au, keyframe) in enumerate(access_units()):
        if i == 0:  # before the first keyframe: nothing is sent, by either
            p_frame = packetizer.packetize(annexb(nal(1, 900)), 0, 0, False)
            for sender in senders.values():
                sender.send_range(p_frame)
        capture_ns = now[0] - 40_000_000 + i * 33_333_333
        indices = packetizer.packetize(au, 1000 + i * 3000, capture_ns, keyframe)
        for sender in senders.values():
            sender.send_range(indices)
        for wire in wires.values():
            wire.drain()
        now[0] += 33_366_667
        packets += len(indices)
        longest = max(longest, len(indices))
    assert longest > MAX_SEGMENTS  # an access unit took more than one GSO batch

    c, python = wires["c"].received, wires["python"].received
    assert len(c) == len(python) == packets
    assert c == python
    seqs = [int.from_bytes(d[2:4], "big") for d in c]
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
    assert len(wires["c"].received) == 2
    assert wires["c"].received == wires["python"].received

    # and a viewer unprotects them: real SRTP, not just equal bytes
    inbound = Session(Policy(key, Policy.SSRC_ANY_INBOUND, srtp_profile=srtp_profile))
    assert inbound.unprotect(c[0])[12:] and inbound.unprotect(c[-1])
    for loop, sender in senders.items():
        assert sender.stats.packets == packets and sender.stats.send_drops == 0, loop
    assert senders["c"].stats.octets == senders["python"].stats.octets
    assert senders["c"].stats.bytes == senders["python"].stats.bytes
    assert senders["c"].sends()[1] == senders["python"].sends()[1] == packets + 2  # and the RTX


def test_the_loop_for_this_machine_was_built_and_loads() -> None:
    """tests/run.sh's editable install runs the build hook (image/build_native.py): the C loop is
    there, loaded, and says so once in the log."""
    assert native.library_path().exists(), native.WHY_NOT
    assert native.LIB is not None, native.WHY_NOT
