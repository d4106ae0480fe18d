"""Our RTP headers and RTCP reports, read back by aiortc's parsers (an independent implementation);
a receiver's RTCP as aiortc writes it, read by ours, and ours against aiortc's on mutated input."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
)

from appliance.core import rtp

IDS = {rtp.URI_MID: 9, rtp.URI_ABS_SEND_TIME: 2, rtp.URI_PLAYOUT_DELAY: 5}


def aiortc_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]
        )
    )
    return m


def test_header_with_extensions_parses_in_aiortc() -> None:
    layout = rtp.HeaderLayout.build(102, 0xDEADBEEF, IDS, mid="0")
    assert layout.size % 4 == 0
    buf = bytearray(64)
    n = layout.write(buf, 4, marker=True, seq=65535, timestamp=0x1_2345_6789, send_time=0xABCDEF)
    packet = RtpPacket.parse(bytes(buf[4 : 4 + n]) + b"payload", aiortc_map(IDS))
    assert (packet.version, packet.payload_type, packet.marker) == (2, 102, 1)
    assert (packet.sequence_number, packet.timestamp, packet.ssrc) == (
        65535,
        0x23456789,
        0xDEADBEEF,
    )
    assert packet.extensions.mid == "0"
    assert packet.extensions.abs_send_time == 0xABCDEF
    assert packet.payload == b"payload"


def test_header_rewrite_leaves_no_trace_of_the_previous_packet() -> None:
    layout = rtp.HeaderLayout.build(96, 1, IDS, mid="video")
    buf = bytearray(64)
    layout.write(buf, 0, marker=True, seq=1, timestamp=2, send_time=3)
    layout.write(buf, 0, marker=False, seq=4, timestamp=5, send_time=6)
    packet = RtpPacket.parse(bytes(buf[: layout.size]), aiortc_map(IDS))
    assert (packet.marker, packet.sequence_number, packet.timestamp) == (0, 4, 5)
    assert packet.extensions.abs_send_time == 6 and packet.extensions.mid == "video"


def test_playout_delay_is_zero_zero() -> None:
    layout = rtp.HeaderLayout.build(96, 1, {rtp.URI_PLAYOUT_DELAY: 5})
    assert layout.template[12:] == bytes([0xBE, 0xDE, 0, 1, 0x52, 0, 0, 0])


def test_abs_capture_time_carries_the_ntp_capture_time() -> None:
    layout = rtp.HeaderLayout.build(96, 1, {rtp.URI_ABS_CAPTURE_TIME: 7})
    buf = bytearray(32)
    layout.write(buf, 0, False, 0, 0, capture_ntp=0x0102030405060708)
    assert buf[12:24] == bytes([0xBE, 0xDE, 0, 3, 0x77, 1, 2, 3, 4, 5, 6, 7]) and buf[24] == 8


def test_no_extensions_is_a_plain_12_byte_header() -> None:
    layout = rtp.HeaderLayout.build(96, 7)
    assert layout.size == 12 and layout.template[0] == 0x80


@pytest.mark.parametrize(
    ("pt", "ids", "message"),
    [
        (128, {}, "payload type 128 is not 0..127"),
        (96, {rtp.URI_PLAYOUT_DELAY: 15}, "one-byte header extension id 15"),
    ],
)
def test_layout_refusals(pt: int, ids: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rtp.HeaderLayout.build(pt, 1, ids)


def test_ntp_and_abs_send_time() -> None:
    unix_ns = 1_700_000_000_500_000_000
    ntp = rtp.ntp_from_unix_ns(unix_ns)
    assert ntp >> 32 == 1_700_000_000 + rtp.NTP_UNIX_OFFSET
    assert abs((ntp & 0xFFFFFFFF) - (1 << 31)) <= 1  # half a second
    assert rtp.abs_send_time(unix_ns) == (ntp >> 14) & 0xFFFFFF


def test_rtcp_reports_parse_in_aiortc() -> None:
    data = rtp.sender_report(0x1234, 0x0102030405060708, 0x1_0000_0005, 17, 2**32 + 9)
    data += rtp.sdes_cname(0x1234, "viewer-cname")
    data += rtp.bye(0x1234)
    sr, sdes, bye = RtcpPacket.parse(data)
    assert sr.ssrc == 0x1234
    info = sr.sender_info
    assert (info.ntp_timestamp, info.rtp_timestamp) == (0x0102030405060708, 5)
    assert (info.packet_count, info.octet_count) == (17, 9)
    assert sdes.chunks[0].items == [(1, b"viewer-cname")]
    assert bye.sources == [0x1234]


def block(ssrc: int, lost: int = 0) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=ssrc, fraction_lost=lost & 0xFF, packets_lost=lost, highest_sequence=70000,
        jitter=33, lsr=0xABCD_0123, dlsr=98304,
    )  # fmt: skip


def fir(ssrcs: list[int]) -> bytes:
    """A FIR (RFC 5104 4.3.1): the header's media SSRC is 0, each FCI entry names one."""
    fci = b"".join(struct.pack("!IB3x", s, 5) for s in ssrcs)
    return struct.pack("!BBHII", 0x84, 206, 2 + 2 * len(ssrcs), 1, 0) + fci


def compound() -> bytes:
    """What a browser's compound RTCP may hold, written by aiortc's serializers."""
    sender_info = RtcpSenderInfo(
        ntp_timestamp=1 << 40, rtp_timestamp=9, packet_count=3, octet_count=4
    )
    return b"".join(
        [
            bytes(RtcpRrPacket(ssrc=1, reports=[block(0xAA, -5), block(0xBB, 2**23 - 1)])),
            bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=1, items=[(1, b"cname")])])),
            bytes(RtcpSrPacket(ssrc=1, sender_info=sender_info, reports=[block(0xCC, -(2**23))])),
            bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xAA, lost=[65535])),
            bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xAA, lost=[10, 12, 26])),
            bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=0xBB)),
            bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=b"REMB" + bytes(8))),
            fir([0xAA, 0xCC]),
            bytes(RtcpByePacket(sources=[1])),
        ]
    )


def test_feedback_reads_what_aiortc_writes() -> None:
    items = rtp.read_feedback(compound())
    report = (33, 0xABCD_0123, 98304)
    assert items == [
        (rtp.REPORT, 0xAA, 0xFB, -5, *report),
        (rtp.REPORT, 0xBB, 0xFF, 2**23 - 1, *report),
        (rtp.REPORT, 0xCC, 0x00, -(2**23), *report),
        (rtp.NACK, 0xAA, [65535]),
        (rtp.NACK, 0xAA, [10, 12, 26]),
        (rtp.PLI, 0xBB),
        (rtp.FIR, 0xAA),
        (rtp.FIR, 0xCC),
    ]


def test_feedback_nack_bitmask_wraps_and_padding_is_skipped() -> None:
    # PID 65534 with the bits for +1 and +3 (65535 and 1: the sequence number wraps).
    nack = struct.pack("!BBHIIHH", 0xA1, 205, 4, 1, 0xAA, 65534, 0b101) + b"\x00\x00\x00\x04"
    assert rtp.read_feedback(nack) == [(rtp.NACK, 0xAA, [65534, 65535, 1])]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x81\xc9\x00", "header truncated"),
        (b"\x41\xc9\x00\x07" + bytes(28), "version"),
        (b"\x81\xc9\x00\x08" + bytes(28), "past the end"),
        (b"\x82\xc9\x00\x07" + bytes(28), "count"),  # two blocks announced, one there
        (b"\xa1\xc9\x00\x07" + bytes(28), "padding"),  # padding bit, a zero count
        (b"\x81\xcd\x00\x01" + bytes(4), "feedback length"),
        (b"\x84\xce\x00\x03" + bytes(12), "FIR length"),
        (bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=2)) + b"\x80", "truncated"),
    ],
)
def test_feedback_refuses_a_malformed_packet_whole(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        rtp.read_feedback(data)


def aiortc_items(data: bytes) -> list[tuple[Any, ...]] | None:
    """What aiortc's parser made of `data`, as read_feedback's items; None where it refused."""
    try:
        packets = RtcpPacket.parse(data)
    except ValueError:
        return None
    items: list[tuple[Any, ...]] = []
    for p in packets:
        if isinstance(p, (RtcpRrPacket, RtcpSrPacket)):
            for r in p.reports:
                items.append(
                    (rtp.REPORT, r.ssrc, r.fraction_lost, r.packets_lost, r.jitter, r.lsr, r.dlsr)
                )
        elif isinstance(p, RtcpRtpfbPacket) and p.fmt == rtp.RTPFB_NACK:
            items.append((rtp.NACK, p.media_ssrc, [seq & 0xFFFF for seq in p.lost]))
        elif isinstance(p, RtcpPsfbPacket) and p.fmt == rtp.PSFB_PLI:
            items.append((rtp.PLI, p.media_ssrc))
        elif isinstance(p, RtcpPsfbPacket) and p.fmt == rtp.PSFB_FIR:
            if len(p.fci) % 8:
                return None  # aiortc does not read a FIR's FCI; ours refuses a ragged one
            items.extend((rtp.FIR, s) for (s,) in struct.iter_unpack("!I4x", p.fci))
    return items


def test_feedback_agrees_with_aiortc_on_mutated_packets() -> None:
    """20,000 mutations of a real compound packet (bytes flipped, cut, repeated, spliced): where
    aiortc's parser accepts one, ours reads the same items; ours refuses (ValueError, nothing
    else) only what aiortc refused too, or a FIR whose FCI is not whole entries."""
    rng = random.Random(5104)
    seed = compound()
    agreed = refused = 0
    for _ in range(20_000):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            at = rng.randrange(len(data)) if data else 0
            if op == 0 and data:
                data[at] = rng.randrange(256)
            elif op == 1:
                del data[at : at + rng.randint(1, 8)]
            elif op == 2:
                data[at:at] = data[at : at + rng.randint(1, 8)]
            else:
                data = data[: rng.randrange(len(data) + 1)] + seed[rng.randrange(len(seed)) :]
        theirs = aiortc_items(bytes(data))
        try:
            ours = rtp.read_feedback(bytes(data))
        except ValueError:
            assert theirs is None, bytes(data).hex()  # never stricter than aiortc, but on FIR
            refused += 1
            continue
        if theirs is not None:
            assert ours == theirs, bytes(data).hex()
            agreed += 1
    assert agreed > 1000 and refused > 1000, (agreed, refused)  # both sides were exercised
