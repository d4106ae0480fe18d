"""One viewer's RTP sender on the fast path: the shared ring in, SRTP datagrams out.

For every access unit the stream has packetized into the ring, `send_range()` writes this viewer's
own RTP header (its SSRC, sequence numbers, timestamp offset, payload type and the extension ids it
negotiated) into the viewer's send buffer, copies the payload after it (the one copy per packet per
viewer), protects the packet in place with the viewer's SRTP session, and hands runs of equal-size
packets to the kernel in one `sendmsg` with UDP GSO (`UDP_SEGMENT`). Nothing here awaits: a header
is never written and protected across a suspension point, and the stream never waits for a viewer.
A send the kernel refuses (socket buffer full) is dropped and counted; the viewer then resumes at
the next keyframe, which it asks for. Retransmissions (NACK) come from the shared ring, as RTX when
negotiated.

The per-packet loop runs in C where it was built (send/packetloop.c through send/native.py, for a
viewer on a plain UDP path): the same packets, byte for byte, at about a third of the CPU. The
Python loop here is the fallback and the reference; tests/send/test_native.py compares the two.

The send buffer is shared by every sender of the process with the same packet size (`_shared_buffer`):
a sender fills, protects and hands it to the kernel (which copies it) without a suspension point in
between, so no other sender can find it half written, and a viewer costs no 58 KiB buffer of its own.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.core import rtp
from appliance.core.media import VIDEO_CLOCK_RATE
from appliance.core.ring import FLAG_KEYFRAME, FLAG_MARKER, PacketRing
from appliance.core.stats import DropReporter
from appliance.send import native
from appliance.send.srtp import TRAILER_ROOM, InPlaceProtector, SrtpError
from appliance.send.udp import Output, UdpOutput, gso_unavailable

logger = logging.getLogger(__name__)

MAX_SEGMENTS = 40  # and at most 64 KiB per call: the kernel refuses more (EMSGSIZE)
MAX_DATAGRAMS_BYTES = 65_000
SPANS = 256  # access units remembered for NACK: over 8 s at 30 fps, longer than the ring holds
_U16 = struct.Struct("!H")
_BUFFERS: dict[int, bytearray] = {}


def _shared_buffer(room: int) -> bytearray:
    """The send buffer of every sender whose packets need `room` bytes each (see the module's
    docstring: safe because nothing awaits between writing it and the kernel copying it)."""
    buffer = _BUFFERS.get(room)
    if buffer is None:
        buffer = _BUFFERS[room] = bytearray(room * MAX_SEGMENTS)
    return buffer


@dataclass
class SenderStats:
    packets: int = 0
    octets: int = 0  # payload octets, as RTCP SR counts them
    bytes: int = 0  # datagram bytes, SRTP included
    frames: int = 0
    retransmits: int = 0
    retransmits_refused: int = 0  # NACKed packets over the viewer's retransmission budget
    nacks: int = 0
    plis: int = 0
    firs: int = 0
    send_drops: int = 0
    send_error: str | None = None  # why the kernel last refused a send
    fraction_lost: float = 0.0
    packets_lost: int = 0
    jitter: int = 0
    rtt: float | None = None
    first_frame_at: float | None = None  # time.monotonic() of the first access unit sent


class RetransmitBudget:
    """How many bytes one viewer may have resent per second: `SHARE` of what it was sent in the
    last second (resent bytes included), and at least `FLOOR`. Real loss (a few percent) is
    repaired in full; a viewer that NACKs the whole ring over and over (measured: ×74 its own
    traffic before this budget) gets at most 1 / (1 - SHARE) = 4/3 of its bitrate, so one viewer
    cannot starve the uplink."""

    SHARE = 0.25
    FLOOR = 16_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window = clock()
        self._sent_at_window = 0
        self.left = float(self.FLOOR)

    def roll(self, sent: int) -> None:
        """Start a new one-second window when the last one is over (`sent`: bytes sent so far)."""
        now = self._clock()
        if now - self._window < 1.0:
            return
        elapsed = now - self._window
        per_second = (sent - self._sent_at_window) / elapsed
        self._window, self._sent_at_window = now, sent
        self.left = max(float(self.FLOOR), self.SHARE * per_second)


@dataclass(frozen=True)
class Negotiated:
    """What this viewer's SDP settled, as the sender needs it."""

    payload_type: int
    ssrc: int
    extension_ids: dict[str, int]
    mid: str | None
    cname: str
    rtx_payload_type: int | None = None
    rtx_ssrc: int | None = None


class _Spans:
    """The Python loop's record of the access units sent (the C loop keeps its own, alike)."""

    def __init__(self) -> None:
        self.span_seq = array("l", [0]) * SPANS
        self.span_index = array("q", [0]) * SPANS
        self.span_count = array("l", [0]) * SPANS
        self.span_next = 0
        self.spans = 0


@functools.lru_cache(maxsize=64)
def _batch_positions(
    stride: int, count: int, header: int, slot: int
) -> list[tuple[int, int, int, int]]:
    """Per place in a batch: where the packet, its sequence number, its payload and the copied
    slot's end are in the send buffer (computed once, and shared by senders alike, not per
    packet). Read only."""
    return [
        (k * stride, k * stride + 2, k * stride + header, k * stride + header + slot)
        for k in range(count)
    ]


class RtpSender:
    """Sends the ring's packets to one viewer. All methods run on the event loop and never await."""

    def __init__(
        self,
        name: str,
        ring: PacketRing,
        negotiated: Negotiated,
        session: Any,
        output: Output,
        request_keyframe: Callable[[], None],
        clock_rate: int = VIDEO_CLOCK_RATE,
        packet_loop: str = "auto",
    ) -> None:
        """`packet_loop`: "auto" (C where it was built and the output is a plain socket),
        "c" (an error where it cannot be) or "python"."""
        self.name = name
        self._clock_rate = clock_rate
        self._ring = ring
        self._n = negotiated
        self._layout = rtp.HeaderLayout.build(
            negotiated.payload_type, negotiated.ssrc, negotiated.extension_ids, negotiated.mid
        )
        self._rtx_layout = (
            rtp.HeaderLayout.build(
                negotiated.rtx_payload_type,
                negotiated.rtx_ssrc,
                negotiated.extension_ids,
                negotiated.mid,
            )
            if negotiated.rtx_payload_type is not None and negotiated.rtx_ssrc is not None
            else None
        )
        header_room = max(self._layout.size, self._rtx_layout.size if self._rtx_layout else 0)
        # A ring slot holds the largest payload: room for any one packet after the longest header
        # (an RTX header is 2 bytes longer), with its SRTP tag.
        self._max_payload = ring.slot_size
        self._room = header_room + 2 + ring.slot_size + TRAILER_ROOM
        self._buffer = _shared_buffer(self._room)
        self._view = memoryview(self._buffer)
        self._slot_size = ring.slot_size
        self._protector = InPlaceProtector(session, self._buffer, self._room, 1)
        self._stride = 0  # size of a full packet on the wire, known after the first protect
        self._batch = 1
        self._output = output
        self._request_keyframe = request_keyframe
        self._seq = random.getrandbits(16)
        self._rtx_seq = random.getrandbits(16)
        self._ts_offset = random.getrandbits(32)
        self._au_header = bytearray(self._layout.template)
        self._positions = self._batch_positions(0, 1)
        self._spans: Any = _Spans()
        self._waiting_for_keyframe = True
        self._last_sr_mid32 = 0
        self._capture_ns = -1
        self._capture_ntp = 0
        self._stats = SenderStats()
        self.drops = DropReporter(logger, f"viewer {name}: packets the kernel refused")
        self.refused = DropReporter(logger, f"viewer {name}: retransmissions over budget")
        self._budget = RetransmitBudget()
        self.closed = False
        self.clock_ns = time.time_ns  # the wall clock of abs-send-time (tests fix it)
        self.native: native.NativeLoop | None = None
        self.batch_type: type[native.NativeBatch] | None = None  # core/fanout.py's Batch
        if packet_loop == "c" or (
            packet_loop == "auto" and isinstance(output, UdpOutput) and native.available()
        ):
            if not isinstance(output, UdpOutput):
                raise ValueError("the C packet loop sends from a plain socket only")
            try:
                self.native = native.NativeLoop(
                    session,
                    output.sock,
                    output.address,
                    self._layout,
                    ring,
                    self._buffer,
                    self._seq,
                    self._ts_offset,
                    clock_rate,
                    rtp.sdes_cname(negotiated.ssrc, negotiated.cname),
                )
            except (ValueError, OSError) as e:  # an address or header the C loop cannot take
                if packet_loop == "c":
                    raise
                logger.info("viewer %s: sent by the Python loop: %s", name, e)
        if self.native is not None:
            # The C loop keeps the counters, the keyframe wait and the spans NACKs map back through.
            self._spans = self.native.v
            self.batch_type = native.NativeBatch  # every viewer of a fan-out in one C call

    @property
    def packet_loop(self) -> str:
        """Which loop sends this viewer's packets: "c" or "python"."""
        return "python" if self.native is None else "c"

    @property
    def stats(self) -> SenderStats:
        """What was sent and received; on the C loop, its counters read now."""
        stats = self._stats
        if self.native is not None:
            v = self.native.v
            stats.packets, stats.frames = v.packets, v.frames
            stats.octets, stats.bytes = v.octets, v.bytes
        return stats

    def sends(self) -> tuple[int, int]:
        """(system calls, datagrams) this sender's packets took so far."""
        calls = getattr(self._output, "calls", 0)
        datagrams = getattr(self._output, "datagrams", 0)
        if self.native is not None:
            calls += self.native.v.calls
            datagrams += self.native.v.datagrams
        return calls, datagrams

    @property
    def ssrc(self) -> int:
        return self._n.ssrc

    def send_range(self, indices: range) -> None:
        """Send the packets of one access unit (absolute ring indices) to this viewer."""
        if self.closed or not indices:
            return
        if self.native is not None:  # the C loop (a fan-out sends its whole NativeBatch instead)
            if self.clock_ns is not time.time_ns:
                self.native.v.now_ns = self.clock_ns()
            if self.native.send(indices[0], len(indices)):
                self.attend()
            return
        ring = self._ring
        mask = ring.capacity - 1
        first = indices[0] & mask
        if self._waiting_for_keyframe:
            if not ring.flags[first] & FLAG_KEYFRAME:
                return
            self._waiting_for_keyframe = False
        capture_ns = ring.capture_ns[first]
        if capture_ns != self._capture_ns:
            self._capture_ns = capture_ns
            self._capture_ntp = rtp.ntp_from_unix_ns(capture_ns)
        # One header for the whole access unit; per packet only the sequence number changes.
        au_header = self._au_header
        rtp.fill_access_unit_header(
            self._layout,
            au_header,
            self._ts_offset + ring.timestamp[first],
            rtp.abs_send_time(self.clock_ns()),
            self._capture_ntp,
        )
        header = len(au_header)
        buf, length, slot_views = self._buffer, ring.length, ring.slot_views
        protect, pack_seq = self._protector.protect, _U16.pack_into
        flags = ring.flags
        seq = first_seq = self._seq
        stride = self._stride
        positions = self._positions
        octets = 0
        k = 0  # packets in the current batch
        for index in indices:
            slot = index & mask
            at, at_seq, at_payload, at_end = positions[k]
            buf[at:at_payload] = au_header
            pack_seq(buf, at_seq, seq)
            if flags[slot] & FLAG_MARKER:
                buf[at + 1] |= 0x80  # the access unit's last packet (video)
            # The payload's one copy. The whole slot is copied (no view made per packet): what
            # lies past the payload is overwritten by the tag and the next packet.
            buf[at_payload:at_end] = slot_views[slot]
            size = length[slot]
            if stride:
                wire = protect(k, header + size)
            else:
                wire = self._protect_first(header + size, header)
                stride, positions = self._stride, self._positions
            seq = (seq + 1) & 0xFFFF
            octets += size
            k += 1
            if wire != stride or k == self._batch:
                self._flush(k, wire)
                k = 0
        if k:
            self._flush(k, stride)
        self._seq = seq
        self._record_span(first_seq, indices[0], len(indices))
        stats = self._stats
        stats.packets += len(indices)
        stats.octets += octets
        stats.frames += 1
        if stats.first_frame_at is None:
            stats.first_frame_at = time.monotonic()

    def attend(self) -> None:
        """What the C loop's last access unit for this viewer needs (it lists the viewer only
        then): the first frame's time, GSO found missing, sends refused (the C loop already waits
        for a keyframe; ask for one), libsrtp failing (raised: the fan-out drops the viewer)."""
        assert self.native is not None
        v = self.native.v
        if v.first_frame and self._stats.first_frame_at is None:
            self._stats.first_frame_at = time.monotonic()
        if v.gso_error:
            gso_unavailable(os.strerror(v.gso_error))
        if v.dropped:
            self._count_refused(v.dropped, v.error)
            if v.want_keyframe:
                self._request_keyframe()
        if v.srtp_status:
            raise SrtpError(v.srtp_status)

    def _protect_first(self, length: int, header: int) -> int:
        """Protect the first packet ever, at position 0; its tag length fixes the full packet size."""
        wire = self._protector.protect(0, length)
        self._stride = header + self._max_payload + (wire - length)
        self._batch = max(1, min(MAX_SEGMENTS, MAX_DATAGRAMS_BYTES // self._stride))
        self._protector.set_stride(self._stride, self._batch)
        self._positions = self._batch_positions(self._stride, self._batch)
        return wire

    def _batch_positions(self, stride: int, count: int) -> list[tuple[int, int, int, int]]:
        return _batch_positions(stride, count, self._layout.size, self._slot_size)

    def _record_span(self, first_seq: int, first_index: int, count: int) -> None:
        # Within an access unit, sequence numbers and ring indices advance together: one span
        # per access unit is enough to map a NACKed sequence number back to its ring slot.
        spans = self._spans
        at = spans.span_next
        spans.span_seq[at] = first_seq
        spans.span_index[at] = first_index
        spans.span_count[at] = count
        spans.span_next = (at + 1) % SPANS
        spans.spans = min(spans.spans + 1, SPANS)

    def _ring_index(self, seq: int) -> int | None:
        """The ring index sent with sequence number `seq`, newest first; None if not remembered."""
        spans = self._spans
        for back in range(1, spans.spans + 1):
            at = (spans.span_next - back) % SPANS
            offset = (seq - spans.span_seq[at]) & 0xFFFF
            if offset < spans.span_count[at]:
                return int(spans.span_index[at] + offset)
        return None

    def _flush(self, count: int, last: int) -> None:
        total = (count - 1) * self._stride + last
        error = self._output.send(self._view[:total], self._stride if count > 1 else 0)
        if not error:
            self._stats.bytes += total
            return
        self._count_refused(count, error)
        if not self._waiting_for_keyframe:  # resume at the next keyframe, and ask for one
            self._waiting_for_keyframe = True
            self._request_keyframe()

    def _count_refused(self, count: int, error: int) -> None:
        """The kernel did not take `count` packets."""
        self._stats.send_error = os.strerror(error)
        self._stats.send_drops += count
        self.drops.add(count)

    # --- RTCP from the viewer ---------------------------------------------------------------

    def on_nack(self, lost: list[int]) -> None:
        """Retransmit what the ring still holds of the lost sequence numbers (RFC 4585 Generic
        NACK), within this viewer's budget: a viewer that NACKs everything gets a share of its
        own bitrate again, not the ring's worth (RetransmitBudget)."""
        self.stats.nacks += 1
        budget = self._budget
        budget.roll(self.stats.bytes)
        refused = 0
        for seq in lost:
            index = self._ring_index(seq)
            if index is None or not self._ring.valid(index):
                continue
            if budget.left <= 0:
                refused += 1
                continue
            budget.left -= self._retransmit(index, seq)
        if refused:
            self.stats.retransmits_refused += refused
            self.refused.add(refused)

    def _retransmit(self, index: int, seq: int) -> int:
        """Send one packet again; the bytes it cost on the wire."""
        ring, buf = self._ring, self._buffer
        slot = ring.slot(index)
        size = ring.length[slot]
        marker = ring.flags[slot] & FLAG_MARKER
        timestamp = self._ts_offset + ring.timestamp[slot]
        send_time = rtp.abs_send_time(self.clock_ns())
        if self._rtx_layout is not None:
            header = self._rtx_layout.write(buf, 0, marker, self._rtx_seq, timestamp, send_time)
            rtp.write_rtx_osn(buf, header, seq)
            header += 2
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        else:
            header = self._layout.write(buf, 0, marker, seq, timestamp, send_time)
        buf[header : header + size] = ring.slot_views[slot][:size]
        wire = self._protector.protect(0, header + size)
        if not self._output.send(self._view[:wire], 0):
            self._stats.retransmits += 1
            if self.native is not None:
                self.native.v.bytes += wire
            else:
                self._stats.bytes += wire
        return wire

    def on_keyframe_request(self, fir: bool) -> None:
        if fir:
            self.stats.firs += 1
        else:
            self.stats.plis += 1
        self._request_keyframe()

    def on_receiver_report(
        self, fraction_lost: int, packets_lost: int, jitter: int, lsr: int, dlsr: int
    ) -> None:
        """A report block about our SSRC (RFC 3550 6.4.1): loss, jitter, and the round trip."""
        s = self.stats
        s.fraction_lost = fraction_lost / 256
        s.packets_lost = packets_lost
        s.jitter = jitter
        last_sr = self._last_sr_mid32 if self.native is None else self.native.v.last_sr_mid32
        if lsr and lsr == last_sr:
            now_mid32 = (rtp.ntp_from_unix_ns(time.time_ns()) >> 16) & 0xFFFFFFFF
            s.rtt = max(0.0, ((now_mid32 - lsr - dlsr) & 0xFFFFFFFF) / 65536)

    # --- RTCP to the viewer -----------------------------------------------------------------

    @property
    def reports_in_batch(self) -> bool:
        """Whether its fan-out's batch sends this viewer's sender reports (NativeBatch.report),
        rather than its own RTCP task (`sender_report()`)."""
        return self.native is not None

    def sender_report(self) -> bytes | None:
        """SR + SDES for this viewer (None before the first packet). The RTP timestamp is the
        stream's clock now, extrapolated from the newest access unit's timestamp and capture time.
        (The C loop's pl_report_all writes the same bytes.)"""
        if not self.stats.packets:
            return None
        ring = self._ring
        newest = ring.slot(ring.head - 1)
        now_ns = self.clock_ns()
        elapsed = (now_ns - ring.capture_ns[newest]) * self._clock_rate // 1_000_000_000
        rtp_now = self._ts_offset + ring.timestamp[newest] + elapsed
        ntp = rtp.ntp_from_unix_ns(now_ns)
        self._last_sr_mid32 = (ntp >> 16) & 0xFFFFFFFF
        if self.native is not None:  # where the RTT is read from on the C loop
            self.native.v.last_sr_mid32 = self._last_sr_mid32
        return rtp.sender_report(
            self._n.ssrc, ntp, rtp_now, self.stats.packets, self.stats.octets
        ) + rtp.sdes_cname(self._n.ssrc, self._n.cname)

    def bye(self) -> bytes:
        return rtp.bye(self._n.ssrc)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.native is not None:
                self.native.close()  # before its socket goes
            self._output.close()
