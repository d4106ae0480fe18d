"""The audio track of a stream: Opus packets in, RTP payloads out to every viewer, once.

Core module: standard library only. The same design as the video path (stream.py, packetizer.py),
smaller: RFC 7587 puts one Opus packet in one RTP payload, so "packetizing" is one copy into a
preallocated ring slot; each fast-path viewer's sender (send.RtpSender, as for video) then adds
its own header and SRTP, through the same fan-out as video (fanout.py). Every slot is flagged as
a start point (audio has no keyframes), and none
carries the marker bit (RFC 7587 section 4.1: it marks only the first packet after a silence the
encoder did not send, which ours never skips).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from appliance.core.fanout import FanOut, PacketSink
from appliance.core.media import EncodedAudio
from appliance.core.ring import FLAG_KEYFRAME, PacketRing
from appliance.core.stats import RateMeter

logger = logging.getLogger(__name__)

OPUS_MAX_PACKET = 1275  # bytes (RFC 6716 section 3.4, R1..R2)
AUDIO_RING_PACKETS = 256  # about 5 s of 20 ms packets, for late joiners' first sender report


class AudioTrack:
    """One encoded audio track, sent alongside a stream's video."""

    def __init__(
        self, name: str = "", channels: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.channels = channels
        self.ring = PacketRing(AUDIO_RING_PACKETS, OPUS_MAX_PACKET)
        self._fanout = FanOut(name, "audio")
        self._clock = clock
        self.packets = 0
        self.bytes = 0
        self.last_packet_at: float | None = None
        self._meter = RateMeter()

    def publish(self, packet: EncodedAudio) -> None:
        """One Opus packet to every viewer. Called on the event loop; never waits."""
        data = packet.data
        size = len(data)
        if not 0 < size <= OPUS_MAX_PACKET:
            logger.warning("audio: dropped a packet of %d bytes (Opus allows 1 to 1275)", size)
            return
        ring = self.ring
        start = ring.offset(ring.head)
        ring.buffer[start : start + size] = data
        index = ring.commit(size, packet.pts, packet.capture_ns, FLAG_KEYFRAME)
        self.packets += 1
        self.bytes += size
        self.last_packet_at = self._clock()
        self._meter.add(size)
        self._fanout.send(range(index, index + 1))

    def add_sink(self, sink: PacketSink) -> None:
        self._fanout.add(sink)

    def remove_sink(self, sink: PacketSink) -> None:
        self._fanout.remove(sink)

    @property
    def sinks(self) -> int:
        return len(self._fanout)

    def rates(self) -> tuple[float, float]:
        """(packets per second, bits per second) over the last two seconds."""
        return self._meter.rates()
