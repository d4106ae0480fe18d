"""The stream: one encoder's output, handed to every viewer without ever waiting for one.

Core module: standard library only. The encoder (through the capture thread) calls `publish()` on
the event loop once per access unit. `publish()` packetizes the access unit once into the shared
packet ring and hands its packets to every fast-path sender at once (`PacketSink.send_range`,
which never waits). Viewers on aiortc's own path read through a bounded `Reader` instead. A reader
that falls `capacity` frames behind is emptied and resumes at the next keyframe, which it asks for;
the drop is counted and logged at most once a second. Keyframe requests (from joins and from
viewers' picture-loss reports) are merged, and forced at most once per `keyframe_interval_min`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from appliance.core import h264
from appliance.core.audio import AudioTrack
from appliance.core.fanout import FanOut, PacketSink
from appliance.core.media import EncodedFrame
from appliance.core.packetizer import H264Packetizer
from appliance.core.ring import PacketRing
from appliance.core.stats import DropReporter, RateMeter

logger = logging.getLogger(__name__)

# A forced keyframe that has not arrived after this long is asked for again.
KEYFRAME_REQUEST_TIMEOUT = 1.0
GOP_KEPT_MAX = 600  # access units; a longer GOP keeps its first 600 (snapshots lag)


# Bytes a payload leaves for the rest of a packet on the path: IPv6 + UDP (48), RTP (12), header
# extensions (28: mid, abs-send-time, playout-delay, abs-capture-time), RTX's OSN (2), SRTP tag (16).
PACKET_OVERHEAD = 48 + 12 + 28 + 2 + 16


def max_payload(mtu: int) -> int:
    """The largest RTP payload that fits an IP packet of `mtu` bytes with everything around it."""
    return mtu - PACKET_OVERHEAD


class ReaderClosed(Exception):
    """The reader was closed: its viewer left or the stream stopped."""


class Reader:
    """One viewer's bounded view of the stream. Starts at a keyframe; never blocks the stream."""

    def __init__(self, stream: Stream, name: str, capacity: int) -> None:
        self._stream = stream
        self.name = name
        self._capacity = capacity
        self._queue: deque[EncodedFrame] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._waiting_for_keyframe = True
        self._started = False
        self.frames = 0
        self.bytes = 0
        self.first_frame_at: float | None = None
        self.drops = DropReporter(logger, f"viewer {name}: too slow, frames")

    def _offer(self, frame: EncodedFrame) -> None:
        if not self._started:
            return
        if self._waiting_for_keyframe:
            if not frame.keyframe:
                return
            self._waiting_for_keyframe = False
        elif len(self._queue) >= self._capacity:
            self.drops.add(len(self._queue) + 1)
            self._queue.clear()
            if not frame.keyframe:
                self._waiting_for_keyframe = True
                self._stream.request_keyframe()
                return
        self._queue.append(frame)
        self._ready.set()

    async def get(self) -> EncodedFrame:
        """The next frame for this viewer; the first one is always a keyframe.

        The reader starts at its first call, so that a viewer still connecting queues nothing
        stale; that call asks the encoder for a keyframe.
        """
        if not self._started:
            self._started = True
            self._stream.request_keyframe()
        while not self._queue:
            if self._closed:
                raise ReaderClosed(self.name)
            self._ready.clear()
            await self._ready.wait()
        frame = self._queue.popleft()
        self.frames += 1
        self.bytes += len(frame.data)
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        return frame

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._ready.set()
            self._stream._remove(self)


class Stream:
    """One encoded video stream, with many readers."""

    def __init__(
        self,
        name: str,
        *,
        keyframe_interval_min: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        mtu: int = 1400,
        ring_packets: int = 2048,
    ) -> None:
        self.name = name
        self.max_payload = max_payload(mtu)
        self.ring = PacketRing(ring_packets, self.max_payload)
        self._packetizer = H264Packetizer(self.ring, self.max_payload)
        self._fanout = FanOut(name, "video")
        self.fanout_ns: deque[int] = deque(maxlen=1024)  # publish → last packet to the last viewer
        self._keyframe_interval_min = keyframe_interval_min
        self._clock = clock
        self._readers: set[Reader] = set()
        self._force_keyframe: Callable[[], None] | None = None
        self._keyframe_pending_since: float | None = None
        self._last_forced = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self.profile_level_id: str | None = None
        self.width = 0
        self.height = 0
        self.frames = 0
        self.bytes = 0
        self.keyframes = 0
        self.keyframes_forced = 0
        self.keyframe_requests = 0
        self.last_frame_at: float | None = None
        # Set by the first keyframe (with its SPS): from then on viewers can be answered.
        self.keyframed = asyncio.Event()
        self.first_keyframe_at: float | None = None
        # The access units since the last keyframe: what a decoder needs for the newest picture
        # (snapshots decode them on request; nothing is decoded when nobody asks).
        self.gop: list[EncodedFrame] = []
        self._meter = RateMeter()
        # Its audio, when the stream has some; sent to the same viewers.
        self.audio: AudioTrack | None = None

    def attach_encoder(self, force_keyframe: Callable[[], None] | None) -> None:
        """Where keyframe requests go: a thread-safe callable of the encoder, or None."""
        self._force_keyframe = force_keyframe

    def detach_encoder(self, force_keyframe: Callable[[], None]) -> None:
        """Forget `force_keyframe` if it is still the one attached (a publisher that left)."""
        if self._force_keyframe == force_keyframe:
            self._force_keyframe = None

    @property
    def has_encoder(self) -> bool:
        return self._force_keyframe is not None

    @property
    def ready(self) -> bool:
        """True once a keyframe has been seen, so that an answer can declare the real profile."""
        return self.profile_level_id is not None

    def publish(self, frame: EncodedFrame) -> None:
        """Hand one access unit to every reader. Called on the event loop; never waits."""
        self.frames += 1
        self.bytes += len(frame.data)
        self.last_frame_at = self._clock()
        self._meter.add(len(frame.data))
        if frame.keyframe:
            self.keyframes += 1
            self._keyframe_pending_since = None
            self.gop.clear()
        if len(self.gop) < GOP_KEPT_MAX:
            self.gop.append(frame)
            sps = h264.find_nal(frame.data, h264.NAL_SPS)
            if sps is not None:
                self.profile_level_id = h264.profile_level_id(sps)
                if self.first_keyframe_at is None:
                    self.first_keyframe_at = self.last_frame_at
                    self.keyframed.set()
        started = time.perf_counter_ns()
        indices = self._packetizer.packetize(
            frame.data, frame.pts, frame.capture_ns, frame.keyframe
        )
        if self._fanout:
            self._fanout.send(indices)
            self.fanout_ns.append(time.perf_counter_ns() - started)
        for reader in list(self._readers):
            reader._offer(frame)

    def add_sink(self, sink: PacketSink) -> None:
        """A fast-path viewer; it starts at the next keyframe, which is asked for now."""
        self._fanout.add(sink)
        self.request_keyframe()

    def remove_sink(self, sink: PacketSink) -> None:
        self._fanout.remove(sink)

    def ensure_audio(self, channels: int = 1) -> AudioTrack:
        """The stream's audio track, made now if it has none (a camera's microphone at start, the
        first WHIP publisher with sound)."""
        if self.audio is None:
            self.audio = AudioTrack(self.name, channels)
        return self.audio

    def drop_audio(self) -> None:
        """No audio from now on (the source has none): new viewers are offered none."""
        self.audio = None

    def subscribe(self, name: str, capacity: int = 8) -> Reader:
        """A new reader. It starts at its first `get()`, with a keyframe asked for then."""
        reader = Reader(self, name, capacity)
        self._readers.add(reader)
        return reader

    def _remove(self, reader: Reader) -> None:
        self._readers.discard(reader)

    @property
    def readers(self) -> int:
        return len(self._readers)

    def rates(self) -> tuple[float, float]:
        """(frames per second, bits per second) over the last two seconds."""
        return self._meter.rates()

    def request_keyframe(self) -> None:
        """Ask the encoder for a keyframe: merged with any request in flight, rate-limited."""
        self.keyframe_requests += 1
        if self._force_keyframe is None:
            return
        now = self._clock()
        pending = self._keyframe_pending_since
        if pending is not None and now - pending < KEYFRAME_REQUEST_TIMEOUT:
            return
        wait = self._last_forced + self._keyframe_interval_min - now
        self._keyframe_pending_since = now
        if wait <= 0:
            self._force()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._force)

    def _force(self) -> None:
        self._timer = None
        if self._force_keyframe is not None:
            self._last_forced = self._clock()
            self.keyframes_forced += 1
            self._force_keyframe()

    def close(self) -> None:
        """Stop: wake and close every reader, cancel a scheduled keyframe request."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for reader in list(self._readers):
            reader.close()
