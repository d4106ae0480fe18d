"""Our RTP headers and RTCP reports, read back by aiortc's parsers (an independent implementation)."""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket, RtpPacket

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
