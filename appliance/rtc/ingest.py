"""WHIP ingest's media: a publisher's H.264 and Opus from aiortc's receivers into a stream, not
decoded. aiortc does ICE, DTLS, SRTP, NACK, RTCP and the jitter buffer; its reassembled access
units come here (internals.tap_receiver) and go to `Stream.publish()`, to be packetized once into
the same ring and fan-out as the camera's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc import RTCRtpReceiver

from appliance.core import h264
from appliance.core.audio import AudioTrack
from appliance.core.media import (
    AUDIO_CLOCK_RATE,
    VIDEO_CLOCK_RATE,
    EncodedAudio,
    EncodedFrame,
    Timeline,
)
from appliance.core.stream import Stream
from appliance.rtc import internals


class _DecoderQueue:
    """What replaces an aiortc receiver's decoder queue: `put()` takes each reassembled frame
    (a JitterFrame, its timestamp unwrapped from 0) on the event loop; `get()` returns None, so
    that aiortc's decoder thread exits at once. A publisher's frames are placed on the daemon's
    clocks (`media.Timeline`): the first at "now", the later ones at the publisher's spacing."""

    def __init__(self, clock_rate: int) -> None:
        self.timeline = Timeline(clock_rate)
        self.active = True

    def get(self, *args: Any, **kwargs: Any) -> None:
        return None


class IngestAudio(_DecoderQueue):
    """A publisher's Opus, into the stream's audio track as it arrives, not decoded. Placed on the
    clock as the video is, each at its first packet's arrival (the publisher's sender reports are
    not used: the two are as far apart as their arrival makes them)."""

    def __init__(self, track: AudioTrack) -> None:
        super().__init__(AUDIO_CLOCK_RATE)
        self.track = track
        self.packets = 0

    def put(self, item: Any) -> None:
        if item is None or not self.active:
            return
        _codec, frame = item
        if not frame.data:
            return
        pts, capture_ns = self.timeline.place(frame.timestamp)
        self.packets += 1
        self.track.publish(EncodedAudio(frame.data, pts, capture_ns))

    def close(self) -> None:
        self.active = False


class IngestVideo(_DecoderQueue):
    """A publisher's video, from aiortc's jitter buffer into a stream, not decoded (WHIP ingest).

    Timestamps: the stream's pts and capture times continue on the daemon's clocks. The first
    keyframe is placed at "now", and later access units keep the publisher's own spacing (its RTP
    timestamps), so a new publisher (a reconnect, a replacement) continues the stream's timeline.
    Access units before the first keyframe are dropped, with a keyframe asked for.
    """

    def __init__(self, stream: Stream, name: str, ssrc: int | None) -> None:
        super().__init__(VIDEO_CLOCK_RATE)
        self.stream = stream
        self.name = name
        self.receiver: RTCRtpReceiver | None = None
        self._ssrc = ssrc
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames = 0
        self.bytes = 0
        self.keyframes = 0
        self.plis_sent = 0
        self.first_frame_at: float | None = None
        self.on_close: list[Any] = []
        self.audio: IngestAudio | None = None

    def put(self, item: Any) -> None:
        if item is None or not self.active:
            return
        _codec, jitter_frame = item
        data: bytes = jitter_frame.data
        if not data:
            return
        keyframe = h264.is_keyframe(data)
        if self.first_frame_at is None:
            if not keyframe:
                self.request_keyframe()
                return
            self.first_frame_at = time.monotonic()
        pts, capture_ns = self.timeline.place(jitter_frame.timestamp)
        self.frames += 1
        self.bytes += len(data)
        self.keyframes += keyframe
        self.stream.publish(EncodedFrame(data, pts, keyframe, capture_ns))

    def request_keyframe(self) -> None:
        """Send a PLI to the publisher (the stream merges and rate-limits the requests)."""
        receiver = self.receiver
        if receiver is None or not self.active:
            return
        ssrc = self._ssrc
        if ssrc is None:
            sources = receiver.getSynchronizationSources()
            if not sources:
                return
            ssrc = sources[0].source
        self.plis_sent += 1
        task = asyncio.get_running_loop().create_task(internals.send_pli(receiver, ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def describe(self) -> dict[str, Any]:
        return {
            "path": "ingest",
            "first_frame_at": self.first_frame_at,
            "frames": self.frames,
            "bytes": self.bytes,
            "keyframes": self.keyframes,
            "plis_sent": self.plis_sent,
            "audio_packets": self.audio.packets if self.audio is not None else None,
        }

    def close(self) -> None:
        if not self.active:
            return
        self.active = False
        if self.audio is not None:
            self.audio.close()
        for task in self._tasks:
            task.cancel()
        for callback in self.on_close:
            callback(self)
