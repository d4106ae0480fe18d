"""Encoders: one contract, `VideoEncoder`, that every H.264 encoder implements, and the choice of
one for a camera (`make_encoder`). Each encoder imports its library (PyAV, the V4L2 binding) when
it is made, so this module imports anywhere.

- software.py: libx264 through PyAV (Pi 5, x86: no H.264 hardware).
- v4l2m2m.py: the V4L2 memory-to-memory hardware encoder (Raspberry Pi 4, Jetson's V4L2 plugin).
- opus.py: libopus for the microphone (audio has its own, smaller contract: `encode(pcm, pts)`).
- worker.py: the encoder thread a camera's pictures go through.
"""

from __future__ import annotations

from typing import Any, Protocol

from appliance.config import VideoConfig
from appliance.core.media import EncodedFrame


class VideoEncoder(Protocol):
    """An H.264 encoder: pictures in, access units out (Annex-B, SPS/PPS before every IDR)."""

    name: str

    def encode_frame(self, frame: Any, pts: int, capture_ns: int) -> list[EncodedFrame]:
        """Encode one av.VideoFrame (any pixel format; converted if need be) at `pts` (90 kHz);
        the access units it completes. Called on the encoder's own thread."""
        ...

    def force_keyframe(self) -> None:
        """Make the next access unit an IDR. Thread-safe."""
        ...

    def close(self) -> None: ...


def make_encoder(video: VideoConfig) -> VideoEncoder:
    """The H.264 encoder for raw pictures: the V4L2 M2M hardware encoder or libx264."""
    choice = video.encoder
    if choice == "auto":
        from appliance.encoders.v4l2m2m import is_h264_encoder

        choice = "v4l2m2m" if is_h264_encoder(video.m2m_device) else "libx264"
    if choice == "v4l2m2m":
        from appliance.encoders.v4l2m2m import M2MEncoder

        return M2MEncoder(video)
    from appliance.encoders.software import X264Encoder

    return X264Encoder(video)
