"""One RTSP reader's track: the shared ring in, plain RTP out, over the reader's TCP connection
(interleaved, RFC 2326 section 10.12) or to its UDP port.

The same sink as a WebRTC viewer's sender (sender.py), without SRTP, RTX or header extensions:
for each access unit the stream has packetized, `send_range()` writes this reader's own RTP header
(its SSRC, sequence numbers and timestamp offset) and copies each payload once into a buffer of
its own, which goes out in one write (TCP) or in GSO batches of datagrams (UDP, as udp.py does for
WebRTC viewers). It never awaits and
never queues without bound: a TCP reader whose connection holds more than `max_backlog` bytes
unsent is dropped to the next keyframe (which it asks for), counted, and logged at most once a
second; the stream and the other readers never wait for it.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol

from appliance.core import rtp
from appliance.core.ring import FLAG_KEYFRAME, FLAG_MARKER, PacketRing
from appliance.core.stats import DropReporter
from appliance.send.sender import MAX_DATAGRAMS_BYTES, MAX_SEGMENTS
from appliance.send.udp import UdpOutput

logger = logging.getLogger(__name__)

_SEQ = struct.Struct("!H")
_FRAME = struct.Struct("!BBH")  # '$', channel, length


class Writer(Protocol):
    """What a TCP reader's connection is to this sender: asyncio's transport."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def get_write_buffer_size(self) -> int: ...


class PlainRtpSender:
    """Sends one track's ring packets to one RTSP reader. Runs on the event loop; never awaits."""

    def __init__(
        self,
        name: str,
        ring: PacketRing,
        payload_type: int,
        request_keyframe: Callable[[], None],
        *,
        tcp: Writer | None = None,
        channels: tuple[int, int] = (0, 1),
        udp: tuple[socket.socket, socket.socket] | None = None,
        addresses: tuple[Any, Any] | None = None,
        max_backlog: int = 1 << 20,
        needs_keyframe: bool = True,
    ) -> None:
        assert (tcp is None) != (udp is None or addresses is None)
        self.name = name
        self._ring = ring
        self._request_keyframe = request_keyframe
        self._tcp, self._channels = tcp, channels
        self._udp, self._addresses = udp, addresses
        self._max_backlog = max_backlog
        self.ssrc = random.getrandbits(32)
        self._layout = rtp.HeaderLayout.build(payload_type, self.ssrc)
        self._header = bytearray(self._layout.template)
        self._seq = random.getrandbits(16)
        self._ts_offset = random.getrandbits(32)
        # UDP: the batch of datagrams on its way to the kernel, and the socket it goes out of.
        self._output = UdpOutput(udp[0], addresses[0]) if udp and addresses else None
        self._batch = bytearray(MAX_DATAGRAMS_BYTES)
        self._batch_view = memoryview(self._batch)
        self._at = self._count = self._stride = 0
        self._run_closed = False
        self._waiting = needs_keyframe
        self._needs_keyframe = needs_keyframe
        self.paused = False
        self.closed = False
        self.packets = 0
        self.octets = 0  # payload octets (RTCP SR)
        self.bytes = 0
        self.frames = 0
        self._last_rtp_ts = 0
        self._last_capture_ns = 0
        self.drops = DropReporter(logger, f"rtsp reader {name}: too slow, frames dropped")

    @property
    def rtp_info(self) -> tuple[int, int]:
        """(next sequence number, its RTP timestamp) for PLAY's RTP-Info header."""
        ring = self._ring
        last = ring.head - 1
        ts = ring.timestamp[ring.slot(last)] if last >= 0 else 0
        return self._seq, (self._ts_offset + ts) & 0xFFFFFFFF

    def send_range(self, indices: range) -> None:
        """The packets of one access unit (absolute ring indices) to this reader."""
        if self.closed or self.paused or not indices:
            return
        ring = self._ring
        mask = ring.capacity - 1
        first = indices[0] & mask
        if self._waiting:
            if not ring.flags[first] & FLAG_KEYFRAME:
                return
            self._waiting = False
        if self._tcp is not None and self._tcp.get_write_buffer_size() > self._max_backlog:
            self.drops.add(1)
            if self._needs_keyframe:
                self._waiting = True
                self._request_keyframe()
            return
        header = self._header
        timestamp = (self._ts_offset + ring.timestamp[first]) & 0xFFFFFFFF
        self._last_rtp_ts = timestamp
        self._last_capture_ns = ring.capture_ns[first]
        self._layout.write(header, 0, 0, 0, timestamp)
        seq = self._seq
        octets = 0
        if self._tcp is not None:
            # One bytes object per access unit, joined from the headers and the ring's views:
            # the payload's one copy. The transport may keep it (what the kernel did not take).
            parts: list[bytes | memoryview] = []
            channel = self._channels[0]
            for index in indices:
                slot = index & mask
                size = ring.length[slot]
                _SEQ.pack_into(header, 2, seq & 0xFFFF)
                header[1] = (header[1] & 0x7F) | (0x80 if ring.flags[slot] & FLAG_MARKER else 0)
                parts.append(_FRAME.pack(0x24, channel, len(header) + size) + header)
                parts.append(ring.slot_views[slot][:size])
                seq += 1
                octets += size
            data = b"".join(parts)
            self.bytes += len(data)
            self._tcp.write(data)
        else:
            for index in indices:
                slot = index & mask
                size = ring.length[slot]
                _SEQ.pack_into(header, 2, seq & 0xFFFF)
                header[1] = (header[1] & 0x7F) | (0x80 if ring.flags[slot] & FLAG_MARKER else 0)
                self._add_datagram(header, ring.slot_views[slot], size)
                seq += 1
                octets += size
            self._flush_datagrams()
        self._seq = seq & 0xFFFF
        self.packets += len(indices)
        self.octets += octets
        self.frames += 1

    def _add_datagram(self, header: bytearray, payload: memoryview, size: int) -> None:
        """Lay one datagram after the others in the batch; full-size runs go out as one GSO
        `sendmsg` (the kernel cuts them), like a WebRTC viewer's (udp.py)."""
        wire = len(header) + size
        count, at = self._count, self._at
        if count and (
            self._run_closed
            or wire > self._stride
            or count == MAX_SEGMENTS
            or at + wire > MAX_DATAGRAMS_BYTES
        ):
            self._flush_datagrams()
            count, at = 0, 0
        if not count:
            self._stride = wire
        view = self._batch_view
        view[at : at + len(header)] = header
        view[at + len(header) : at + wire] = payload[:size]
        self._at, self._count = at + wire, count + 1
        if wire < self._stride:  # a shorter datagram can only end a GSO run
            self._run_closed = True

    def _flush_datagrams(self) -> None:
        count = self._count
        if not count:
            return
        assert self._output is not None
        error = self._output.send(self._batch_view[: self._at], self._stride if count > 1 else 0)
        if error:  # a full socket buffer or an unreachable port: dropped, counted
            self.drops.add(count)
        else:
            self.bytes += self._at
        self._at = self._count = 0
        self._run_closed = False

    def sender_report(self) -> bytes | None:
        """An RTCP SR mapping this reader's RTP time to the capture clock, or None before any
        packet went out."""
        if not self.packets:
            return None
        ntp = rtp.ntp_from_unix_ns(self._last_capture_ns)
        return rtp.sender_report(self.ssrc, ntp, self._last_rtp_ts, self.packets, self.octets)

    def send_rtcp(self, packet: bytes) -> None:
        """An RTCP packet on this track's RTCP channel (TCP) or from its RTCP port (UDP)."""
        if self.closed:
            return
        if self._tcp is not None:
            self._tcp.write(_FRAME.pack(0x24, self._channels[1], len(packet)) + packet)
        elif self._udp is not None and self._addresses is not None:
            try:
                self._udp[1].sendto(packet, self._addresses[1])
            except OSError:
                pass

    def resume(self) -> None:
        """Playing again after PAUSE: from the next keyframe, asked for now."""
        self.paused = False
        if self._needs_keyframe:
            self._waiting = True
            self._request_keyframe()

    def close(self) -> None:
        self.closed = True
        if self._output is not None:
            self._output.close()  # our duplicate of the session's socket; the session closes its own
            self._output = None
