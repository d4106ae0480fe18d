"""Opus through libopus (PyAV): PCM periods in, 48 kHz Opus packets out, one encode for every viewer.

Edge module (PyAV). A period of `period_ms` at the capture rate is resampled to 48 kHz when the
capture rate differs, and encoded as one Opus frame (`application=lowdelay`). The packets' pts are
libopus's: the input's pts less its lookahead (312 samples), which is where the decoded sample
that was captured at the input's pts will come out, so that audio and video stay in sync.
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

from appliance.config import AudioConfig
from appliance.core.errors import DeviceError
from appliance.core.media import AUDIO_CLOCK_RATE, EncodedAudio


class OpusEncoder:
    def __init__(self, cfg: AudioConfig) -> None:
        import av  # lazy: the edge imports its library, the core never does

        self._av = av
        self.channels = cfg.channels
        self.layout = "mono" if cfg.channels == 1 else "stereo"
        self.rate = cfg.rate
        self.samples = AUDIO_CLOCK_RATE * cfg.period_ms // 1000  # per Opus frame, at 48 kHz
        try:
            ctx: Any = av.CodecContext.create("libopus", "w")
        except Exception as e:  # pragma: no cover - every PyAV wheel ships libopus
            raise DeviceError(f"libopus is not available in this PyAV build: {e}") from e
        ctx.sample_rate = AUDIO_CLOCK_RATE
        ctx.layout = self.layout
        ctx.format = "s16"
        ctx.bit_rate = cfg.bitrate
        ctx.time_base = Fraction(1, AUDIO_CLOCK_RATE)
        ctx.options = {"application": "lowdelay", "frame_duration": str(cfg.period_ms)}
        self._ctx = ctx
        self._resampler = (
            av.AudioResampler(format="s16", layout=self.layout, rate=AUDIO_CLOCK_RATE)
            if cfg.rate != AUDIO_CLOCK_RATE
            else None
        )
        # Resampled audio is cut back into whole Opus frames, numbered on from the first pts.
        self._fifo = av.AudioFifo() if self._resampler else None
        self._next_pts: int | None = None
        self.name = f"libopus {cfg.bitrate // 1000} kbit/s {self.layout} {cfg.period_ms} ms"

    def encode(self, pcm: bytes, pts: int) -> list[EncodedAudio]:
        """Encode interleaved S16LE samples at the capture rate whose first sample is at `pts`
        (48 kHz, monotonic clock). Returns the packets that are ready (usually one)."""
        av = self._av
        samples = len(pcm) // (2 * self.channels)
        frame = av.AudioFrame(format="s16", layout=self.layout, samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = self.rate
        frame.time_base = Fraction(1, self.rate)
        frames = [frame]
        if self._resampler is not None and self._fifo is not None:
            if self._next_pts is None:
                self._next_pts = pts
            for resampled in self._resampler.resample(frame):
                resampled.pts = None
                self._fifo.write(resampled)
            frames = []
            while self._fifo.samples >= self.samples:
                chunk = self._fifo.read(self.samples)
                assert chunk is not None  # the FIFO holds that many
                chunk.pts = self._next_pts
                self._next_pts += self.samples
                frames.append(chunk)
        else:
            frame.pts = pts
        packets = []
        wall_minus_monotonic = time.time_ns() - time.monotonic_ns()
        for f in frames:
            for packet in self._ctx.encode(f):
                packets.append(
                    EncodedAudio(
                        bytes(packet),
                        int(packet.pts),
                        int(packet.pts) * 125_000 // 6 + wall_minus_monotonic,
                    )
                )
        return packets

    def close(self) -> None:
        self._ctx = None
