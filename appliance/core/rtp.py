"""RTP and RTCP wire formats for the send path: headers written in place, reports built small,
and what a receiver's RTCP asks of us read (read_feedback).

Core module: bytes in, bytes out, standard library only. References: RFC 3550 (RTP, RTCP SR/RR/
SDES/BYE), RFC 4585 (NACK, PLI), RFC 5104 (FIR), RFC 8285 (one-byte header extensions), RFC 4588
(RTX), and the extensions libwebrtc reads: abs-send-time, playout-delay and abs-capture-time
(webrtc.org/experiments/rtp-hdrext).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
URI_ABS_CAPTURE_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"

# NTP epoch (1900) to Unix epoch (1970), in seconds
NTP_UNIX_OFFSET = 2_208_988_800

_SEQ_TS = struct.Struct("!HI")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_U16 = struct.Struct("!H")


def ntp_from_unix_ns(unix_ns: int) -> int:
    """64-bit NTP timestamp (32.32 fixed point, RFC 3550 section 4) of a Unix time in ns."""
    seconds, ns = divmod(unix_ns, 1_000_000_000)
    return ((seconds + NTP_UNIX_OFFSET) << 32) | ((ns << 32) // 1_000_000_000)


def abs_send_time(unix_ns: int) -> int:
    """abs-send-time: 24-bit 6.18 fixed-point seconds (the middle bits of the NTP timestamp)."""
    return (ntp_from_unix_ns(unix_ns) >> 14) & 0xFFFFFF


@dataclass(frozen=True, slots=True)
class HeaderLayout:
    """One viewer's RTP header: a prebuilt template and where its per-packet fields go.

    The template holds everything fixed for the viewer (version, extension bit, payload type,
    SSRC, the one-byte extension block with its `mid` and zero playout delay); `write()` copies it
    and fills in marker, sequence number, timestamp and the time-dependent extensions.
    """

    template: bytes
    payload_type: int
    abs_send_time_at: int  # offset of the 3-byte value, or -1
    abs_capture_time_at: int  # offset of the 8-byte value, or -1

    @property
    def size(self) -> int:
        return len(self.template)

    @classmethod
    def build(
        cls,
        payload_type: int,
        ssrc: int,
        extension_ids: Mapping[str, int] | None = None,
        mid: str | None = None,
    ) -> HeaderLayout:
        """The layout for these negotiated values. `extension_ids` maps URIs to this viewer's ids."""
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} is not 0..127")
        ids = dict(extension_ids or {})
        elements = bytearray()
        abs_send_at = abs_capture_at = -1

        def element(uri: str, data: bytes) -> int:
            ext_id = ids[uri]
            if not 1 <= ext_id <= 14:
                raise ValueError(f"one-byte header extension id {ext_id} for {uri} is not 1..14")
            elements.append((ext_id << 4) | (len(data) - 1))
            at = len(elements)
            elements.extend(data)
            return at

        if mid is not None and URI_MID in ids:
            element(URI_MID, mid.encode())
        if URI_ABS_SEND_TIME in ids:
            abs_send_at = element(URI_ABS_SEND_TIME, bytes(3))
        if URI_PLAYOUT_DELAY in ids:
            element(URI_PLAYOUT_DELAY, bytes(3))  # min = max = 0: render at once
        if URI_ABS_CAPTURE_TIME in ids:
            abs_capture_at = element(URI_ABS_CAPTURE_TIME, bytes(8))

        first = RTP_VERSION << 6
        header = bytearray(struct.pack("!BBHII", first, payload_type, 0, 0, ssrc))
        if elements:
            elements.extend(bytes(-len(elements) % 4))
            header[0] |= 0x10
            base = RTP_HEADER_SIZE + 4
            header += struct.pack("!HH", ONE_BYTE_PROFILE, len(elements) // 4) + elements
            abs_send_at = base + abs_send_at if abs_send_at >= 0 else -1
            abs_capture_at = base + abs_capture_at if abs_capture_at >= 0 else -1
        return cls(bytes(header), payload_type, abs_send_at, abs_capture_at)

    def write(
        self,
        buf: bytearray,
        offset: int,
        marker: int,
        seq: int,
        timestamp: int,
        send_time: int = 0,
        capture_ntp: int = 0,
    ) -> int:
        """Write the header at `buf[offset:]`; returns its size. `send_time` is abs-send-time."""
        size = len(self.template)
        buf[offset : offset + size] = self.template
        buf[offset + 1] = self.payload_type | (0x80 if marker else 0)
        _SEQ_TS.pack_into(buf, offset + 2, seq & 0xFFFF, timestamp & 0xFFFFFFFF)
        if self.abs_send_time_at >= 0:
            at = offset + self.abs_send_time_at
            buf[at] = (send_time >> 16) & 0xFF
            buf[at + 1] = (send_time >> 8) & 0xFF
            buf[at + 2] = send_time & 0xFF
        if self.abs_capture_time_at >= 0:
            _U64.pack_into(buf, offset + self.abs_capture_time_at, capture_ntp)
        return size


def fill_access_unit_header(
    layout: HeaderLayout, header: bytearray, timestamp: int, send_time: int, capture_ntp: int
) -> None:
    """Fill `header` (a copy of the layout's template, marker clear, sequence number 0) with what
    every packet of one access unit shares: timestamp, abs-send-time, abs-capture-time. A sender
    then only stamps each packet's sequence number (and the last one's marker)."""
    layout.write(header, 0, 0, 0, timestamp, send_time, capture_ntp)


def write_rtx_osn(buf: bytearray, offset: int, original_seq: int) -> None:
    """The RTX payload's 2-byte original sequence number (RFC 4588 section 4)."""
    _U16.pack_into(buf, offset, original_seq & 0xFFFF)


# RTCP packet types (RFC 3550 section 12.1)
RTCP_SR = 200
RTCP_SDES = 202
RTCP_BYE = 203


def sender_report(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    """An RTCP SR with no report blocks (RFC 3550 section 6.4.1): 28 bytes."""
    return struct.pack(
        "!BBHIQIII",
        0x80,
        RTCP_SR,
        6,
        ssrc,
        ntp,
        rtp_timestamp & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )


def sdes_cname(ssrc: int, cname: str) -> bytes:
    """An RTCP SDES packet with one chunk holding a CNAME item (RFC 3550 section 6.5)."""
    text = cname.encode()[:255]
    chunk = _U32.pack(ssrc) + bytes([1, len(text)]) + text + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return struct.pack("!BBH", 0x81, RTCP_SDES, len(chunk) // 4) + chunk


def bye(ssrc: int) -> bytes:
    """An RTCP BYE for one source (RFC 3550 section 6.6)."""
    return struct.pack("!BBHI", 0x81, RTCP_BYE, 1, ssrc)


# --- RTCP from a receiver ------------------------------------------------------------------------

RTCP_RR = 201
RTCP_RTPFB = 205  # transport-layer feedback (RFC 4585 6.2); FMT 1 is the Generic NACK
RTCP_PSFB = 206  # payload-specific feedback (RFC 4585 6.3): FMT 1 PLI; FMT 4 FIR (RFC 5104)
RTPFB_NACK = 1
PSFB_PLI = 1
PSFB_FIR = 4

# What read_feedback yields, first in each tuple; the second is always the SSRC it is about.
REPORT = 0  # (REPORT, ssrc, fraction_lost 0-255, packets_lost (signed), jitter, lsr, dlsr)
NACK = 1  # (NACK, media_ssrc, [lost sequence numbers])
PLI = 2  # (PLI, media_ssrc)
FIR = 3  # (FIR, ssrc): one per FCI entry (RFC 5104 4.3.1: the header's media SSRC is unused)

_HEADER = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IB3sIIII")  # a report block (RFC 3550 6.4.1)
_TWO_U32 = struct.Struct("!II")
_SEQ_PAIR = struct.Struct("!HH")


def read_feedback(data: bytes) -> list[tuple[Any, ...]]:
    """What a receiver tells a sender in one (compound) RTCP packet, already SRTCP-unprotected:
    every report block of its RRs and SRs, Generic NACKs, PLIs and FIRs, in order. Everything
    else (SDES, BYE, APP, REMB, transport-wide feedback, other FMTs) is skipped by its length.
    Raises ValueError for the whole packet when any part of it is malformed (a wrong version,
    a length past the end, invalid padding, a report or feedback of impossible length), as
    aiortc's parser did, so that a half-read packet never acts."""
    out: list[tuple[Any, ...]] = []
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < 4:
            raise ValueError("RTCP: header truncated")
        first, kind, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise ValueError("RTCP: version is not 2")
        start, end = pos + 4, pos + 4 + 4 * words
        if end > size:
            raise ValueError("RTCP: length past the end")
        pos = end
        if first & 0x20:  # padding: its count is the last byte
            pad = data[end - 1] if end > start else 0
            if not pad or pad > end - start:
                raise ValueError("RTCP: invalid padding")
            end -= pad
        count = first & 0x1F
        length = end - start
        if kind == RTCP_RR or kind == RTCP_SR:
            at = start + (4 if kind == RTCP_RR else 24)
            if length != at - start + 24 * count:
                raise ValueError("RTCP: report length does not match its count")
            for _ in range(count):
                ssrc, fraction, lost, _high, jitter, lsr, dlsr = _BLOCK.unpack_from(data, at)
                packets_lost = int.from_bytes(lost, "big", signed=True)
                out.append((REPORT, ssrc, fraction, packets_lost, jitter, lsr, dlsr))
                at += 24
        elif kind == RTCP_RTPFB or kind == RTCP_PSFB:
            if length < 8 or (kind == RTCP_RTPFB and length % 4):
                raise ValueError("RTCP: feedback length is invalid")
            media = _TWO_U32.unpack_from(data, start)[1]
            if kind == RTCP_RTPFB:
                if count == RTPFB_NACK:
                    out.append((NACK, media, _nacked(data, start + 8, end)))
            elif count == PSFB_PLI:
                out.append((PLI, media))
            elif count == PSFB_FIR:
                if (length - 8) % 8:
                    raise ValueError("RTCP: FIR length is invalid")
                for at in range(start + 8, end, 8):
                    out.append((FIR, _U32.unpack_from(data, at)[0]))
    return out


def _nacked(data: bytes, start: int, end: int) -> list[int]:
    """Generic NACK FCIs (RFC 4585 6.2.1): each a PID and a bitmask of the 16 that follow it."""
    lost: list[int] = []
    for at in range(start, end, 4):
        pid, mask = _SEQ_PAIR.unpack_from(data, at)
        lost.append(pid)
        bit = 1
        while mask:
            if mask & 1:
                lost.append((pid + bit) & 0xFFFF)
            mask >>= 1
            bit += 1
    return lost
