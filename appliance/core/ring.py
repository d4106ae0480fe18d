"""The packet ring: preallocated RTP payload slots written once per access unit, read by every viewer.

Core module: standard library only. One writer (the packetizer) and any number of readers, each with
its own absolute index; the writer never waits. A slot index `i` is valid while
`head - capacity <= i < head`; older packets have been overwritten. Besides the payload, each slot
records its length, the access unit's 90 kHz timestamp and capture time, and flags (marker: last
packet of the access unit; keyframe: first packet of an access unit a decoder can start from).
"""

from __future__ import annotations

from array import array

FLAG_MARKER = 0x01
FLAG_KEYFRAME = 0x02


class PacketRing:
    def __init__(self, capacity: int, slot_size: int) -> None:
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 2, got {capacity}")
        self.capacity = capacity
        self.slot_size = slot_size
        self._mask = capacity - 1
        self.buffer = bytearray(capacity * slot_size)
        self._view = memoryview(self.buffer)
        # One view per slot, made once: readers copy from these without making a view per packet.
        self.slot_views = [self._view[i * slot_size : (i + 1) * slot_size] for i in range(capacity)]
        self.length = array("I", bytes(4 * capacity))
        self.timestamp = array("q", bytes(8 * capacity))
        self.capture_ns = array("q", bytes(8 * capacity))
        self.flags = bytearray(capacity)
        self.head = 0  # absolute index of the next slot to write
        self.last_keyframe = -1  # absolute index of the newest keyframe start

    def offset(self, index: int) -> int:
        """Byte offset of slot `index` (absolute) in `buffer`."""
        return (index & self._mask) * self.slot_size

    def payload(self, index: int) -> memoryview:
        """The payload of slot `index` (a view into the ring, valid until the slot is reused)."""
        start = (index & self._mask) * self.slot_size
        return self._view[start : start + self.length[index & self._mask]]

    def valid(self, index: int) -> bool:
        return self.head - self.capacity <= index < self.head

    def commit(self, length: int, timestamp: int, capture_ns: int, flags: int) -> int:
        """Record the slot at `head` (its payload already written) and advance; returns its index."""
        index = self.head
        slot = index & self._mask
        self.length[slot] = length
        self.timestamp[slot] = timestamp
        self.capture_ns[slot] = capture_ns
        self.flags[slot] = flags
        if flags & FLAG_KEYFRAME:
            self.last_keyframe = index
        self.head = index + 1
        return index

    def slot(self, index: int) -> int:
        return index & self._mask
