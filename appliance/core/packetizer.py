"""H.264 access units into RTP payloads in the packet ring, once for every viewer (RFC 6184).

Core module: standard library only. Each NAL unit is located by offsets (no copy), then written into
ring slots exactly once: as a single NAL unit packet when it fits, aggregated with its small
neighbours into an STAP-A (SPS and PPS ride with the IDR), or cut into FU-A fragments. Every FU-A
fragment but the last is full size, so the packets of one NAL are the same length on the wire and a
viewer can hand them to the kernel in one segmented (GSO) send. Access unit delimiters and filler
data are dropped (RFC 6184 allows it; they carry nothing a receiver needs).
"""

from __future__ import annotations

from appliance.core import h264
from appliance.core.ring import FLAG_KEYFRAME, FLAG_MARKER, PacketRing

NAL_FILLER = 12
NAL_STAP_A = 24
NAL_FU_A = 28
_DROPPED = (h264.NAL_AUD, NAL_FILLER)


class H264Packetizer:
    """Writes access units into a PacketRing; payloads at most `max_payload` bytes."""

    def __init__(self, ring: PacketRing, max_payload: int) -> None:
        if not 16 <= max_payload <= ring.slot_size:
            raise ValueError(
                f"max_payload {max_payload} must be 16..{ring.slot_size} (the slot size)"
            )
        self.ring = ring
        self.max_payload = max_payload

    def packetize(self, au: bytes, timestamp: int, capture_ns: int, keyframe: bool) -> range:
        """Write one access unit; returns the absolute ring indices of its packets."""
        ring = self.ring
        first = ring.head
        self._flags = FLAG_KEYFRAME if keyframe else 0
        self._timestamp, self._capture_ns = timestamp, capture_ns
        data = memoryview(au)
        pending: list[tuple[int, int]] = []
        stap_size = 1
        limit = self.max_payload
        for start, end in h264.iter_nal_units(au):
            if au[start] & 0x1F in _DROPPED:
                continue
            size = end - start
            if size > limit:
                self._flush(data, pending)
                pending, stap_size = [], 1
                self._fu_a(data, start, end)
            elif pending and stap_size + 2 + size <= limit:
                pending.append((start, end))
                stap_size += 2 + size
            else:
                self._flush(data, pending)
                pending, stap_size = [(start, end)], 1 + 2 + size
        self._flush(data, pending)
        if ring.head > first:
            ring.flags[ring.slot(ring.head - 1)] |= FLAG_MARKER
        return range(first, ring.head)

    def _commit(self, length: int) -> None:
        self.ring.commit(length, self._timestamp, self._capture_ns, self._flags)
        self._flags = 0  # the keyframe flag marks only the access unit's first packet

    def _flush(self, data: memoryview, nals: list[tuple[int, int]]) -> None:
        if not nals:
            return
        ring = self.ring
        buf = ring.buffer
        at = ring.offset(ring.head)
        if len(nals) == 1:
            start, end = nals[0]
            buf[at : at + end - start] = data[start:end]
            self._commit(end - start)
            return
        # STAP-A (RFC 6184 5.7.1): F is the OR of the F bits, NRI the highest NRI
        f = nri = 0
        for start, _ in nals:
            f |= data[start] & 0x80
            nri = max(nri, data[start] & 0x60)
        buf[at] = f | nri | NAL_STAP_A
        pos = at + 1
        for start, end in nals:
            size = end - start
            buf[pos] = size >> 8
            buf[pos + 1] = size & 0xFF
            buf[pos + 2 : pos + 2 + size] = data[start:end]
            pos += 2 + size
        self._commit(pos - at)

    def _fu_a(self, data: memoryview, start: int, end: int) -> None:
        # FU-A (RFC 6184 5.8): the NAL header is replaced by FU indicator + FU header
        ring = self.ring
        buf = ring.buffer
        header = data[start]
        indicator = (header & 0xE0) | NAL_FU_A
        nal_type = header & 0x1F
        chunk = self.max_payload - 2
        pos = start + 1
        while pos < end:
            take = min(chunk, end - pos)
            fu_header = nal_type
            if pos == start + 1:
                fu_header |= 0x80  # start
            if pos + take == end:
                fu_header |= 0x40  # end
            at = ring.offset(ring.head)
            buf[at] = indicator
            buf[at + 1] = fu_header
            buf[at + 2 : at + 2 + take] = data[pos : pos + take]
            self._commit(2 + take)
            pos += take
