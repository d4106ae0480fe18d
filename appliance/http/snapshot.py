"""`GET /<stream>/snapshot.jpg`: the newest picture as a JPEG, made only when someone asks.

Edge module (PyAV). There is no second encoder running: on a request, the access units since the
last keyframe (kept by the stream) are decoded on a worker thread, and the newest picture is
encoded as a JPEG. Requests that arrive while one is being made share it, and a snapshot of the
same newest frame is served again from memory.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

from appliance.core.errors import SourceNotReady
from appliance.core.media import EncodedFrame
from appliance.core.stream import Stream

JPEG_QSCALE = 3  # 2 (best) .. 31


def encode_snapshot(aus: list[EncodedFrame]) -> bytes:
    """The JPEG of the last picture of a closed GOP (a keyframe first)."""
    import av

    decoder: Any = av.CodecContext.create("h264", "r")
    picture = None
    for au in aus:
        for frame in decoder.decode(av.Packet(au.data)):
            picture = frame
    for frame in decoder.decode(None):  # flush
        picture = frame
    if picture is None:
        raise SourceNotReady("no picture could be decoded yet")
    jpeg: Any = av.CodecContext.create("mjpeg", "w")
    jpeg.width, jpeg.height = picture.width, picture.height
    jpeg.pix_fmt = "yuvj420p"
    jpeg.time_base = Fraction(1, 30)
    jpeg.qscale = True  # fixed quality, as ffmpeg's -q:v
    jpeg.global_quality = JPEG_QSCALE * 118  # FF_QP2LAMBDA
    out = picture.reformat(format="yuvj420p")
    out.pts = 0
    return b"".join(bytes(p) for p in [*jpeg.encode(out), *jpeg.encode(None)])


class Snapshots:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._cached: tuple[int, bytes] | None = None  # (stream.frames, jpeg)
        self._pending: asyncio.Future[bytes] | None = None

    async def latest(self) -> bytes:
        stream = self.stream
        if not stream.ready or not stream.gop or not stream.gop[0].keyframe:
            raise SourceNotReady("no picture yet: the video source has not produced a keyframe")
        frames = stream.frames
        if self._cached is not None and self._cached[0] == frames:
            return self._cached[1]
        if self._pending is None:
            aus = list(stream.gop)
            self._pending = asyncio.ensure_future(asyncio.to_thread(encode_snapshot, aus))
            pending = self._pending

            def done(_: asyncio.Future[bytes]) -> None:
                self._pending = None
                if not pending.cancelled() and pending.exception() is None:
                    self._cached = (frames, pending.result())

            pending.add_done_callback(done)
        return await asyncio.shield(self._pending)
