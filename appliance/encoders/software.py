"""Software H.264 through libx264 (PyAV), for machines without a hardware encoder (Pi 5, x86).

`encode()` is synchronous and meant to run on the capture thread, never on the event loop.
`force_keyframe()` may be called from any thread: the next picture is encoded as an IDR.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from appliance.config import VideoConfig
from appliance.core import h264
from appliance.core.errors import DeviceError
from appliance.core.media import VIDEO_CLOCK_RATE, EncodedFrame

_X264_PROFILES = {
    "constrained-baseline": "baseline",
    "baseline": "baseline",
    "main": "main",
    "high": "high",
}


class X264Encoder:
    """libx264, zero latency (no B-frames, no lookahead), fixed GOP, SPS/PPS before every IDR."""

    def __init__(self, cfg: VideoConfig) -> None:
        import av  # lazy: the edge imports its library, the core never does

        self._av = av
        self.level_idc = h264.min_level(cfg.width, cfg.height, cfg.fps, cfg.bitrate)
        try:
            ctx: Any = av.CodecContext.create("libx264", "w")
        except Exception as e:  # pragma: no cover - every PyAV wheel ships libx264
            raise DeviceError(f"libx264 is not available in this PyAV build: {e}") from e
        ctx.width = cfg.width
        ctx.height = cfg.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        ctx.framerate = Fraction(cfg.fps, 1)
        ctx.bit_rate = cfg.bitrate
        ctx.gop_size = cfg.gop
        ctx.options = {
            "preset": cfg.preset,
            "tune": "zerolatency",
            "profile": _X264_PROFILES[cfg.profile],
            "level": f"{self.level_idc // 10}.{self.level_idc % 10}",
            "forced-idr": "1",
            "x264-params": f"keyint={cfg.gop}:min-keyint={cfg.gop}:scenecut=0",
            "maxrate": str(cfg.bitrate),
            "bufsize": str(cfg.bitrate // 2),
        }
        self._ctx = ctx
        self._force = False
        self.name = f"libx264 {cfg.preset}"

    def force_keyframe(self) -> None:
        """Encode the next picture as an IDR. Thread-safe (a flag read by the encoding thread)."""
        self._force = True

    def encode_frame(self, frame: Any, pts: int, capture_ns: int) -> list[EncodedFrame]:
        """Encode one `av.VideoFrame` in any pixel format (converted to I420 first if need be)."""
        av = self._av
        ctx = self._ctx
        if frame.format.name != "yuv420p" or (frame.width, frame.height) != (ctx.width, ctx.height):
            frame = frame.reformat(width=ctx.width, height=ctx.height, format="yuv420p")
        frame.pts = pts
        frame.time_base = self._ctx.time_base
        if self._force:
            self._force = False
            frame.pict_type = av.video.frame.PictureType.I
        return [
            EncodedFrame(
                data=bytes(packet),
                pts=packet.pts,
                keyframe=packet.is_keyframe,
                capture_ns=capture_ns,
            )
            for packet in self._ctx.encode(frame)
        ]

    def close(self) -> None:
        self._ctx = None
