"""The built-in test source: the fake camera at the device seam.

It draws a moving test picture with a human-readable clock and the machine-readable capture-time stamp
of shared/LATENCY_STAMP.md, paced at the configured frame rate on its own thread, and hands each
picture to an encoder on that thread. Encoded frames reach the event loop with
`call_soon_threadsafe`; nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.core.controls import Control, ControlError
from appliance.core.media import (
    AUDIO_CLOCK_RATE,
    VIDEO_CLOCK_RATE,
    EncodedAudio,
    EncodedFrame,
    audio_pts_from_ns,
)
from appliance.encoders import VideoEncoder

logger = logging.getLogger(__name__)

BRIGHTNESS_DEFAULT = 128

Y_BLACK, Y_WHITE = 16, 235

# 5x7 bitmap font for the clock: each glyph is 7 rows of 5 bits.
_FONT = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    ":": ("00000", "01100", "01100", "00000", "01100", "01100", "00000"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
    " ": ("00000",) * 7,
}


def stamp_block_size(width: int) -> int:
    """Block size `b` of the capture-time stamp (LATENCY_STAMP.md)."""
    return max(8, width // 80)


def read_stamp(luma: np.ndarray[Any, Any], width: int) -> int | None:
    """Read the stamp back from a luma plane (as a viewer would); None when it is unreadable."""
    b = stamp_block_size(width)
    q = max(1, b // 4)
    value = 0
    for i in range(32):
        x0 = i * b + q
        row1 = float(luma[q : b - q, x0 : x0 + b // 2].mean())
        row2 = float(luma[b + q : 2 * b - q, x0 : x0 + b // 2].mean())
        if abs(row1 - row2) < 255 / 4:
            return None
        value = (value << 1) | (1 if row1 > row2 else 0)
    return value


FLASH_EVERY_MS = 1000  # the sync marks: a flash in the picture and a tone burst in the sound
TONE_MS = 100
TONE_HZ = 1000


def flash_box(width: int, height: int) -> tuple[int, int, int]:
    """(top, left, size) of the square that flashes white, bottom right."""
    size = (height // 6) & ~1
    return (height - size - 2 * max(2, height // 90)) & ~1, (width - size - 8) & ~1, size


class TestPattern:
    """Draws I420 pictures: gradient background, moving bar and box, clock, latency stamp, and a
    flash (a white square, bottom right) in the first frame of each wall-clock second, when the
    test tone starts its burst (ToneSource): what A/V sync is measured against."""

    __test__ = False  # not a pytest test class

    def __init__(self, width: int, height: int, fps: int = 30) -> None:
        self.width, self.height = width, height
        self._frame_ms = max(1, 1000 // fps)
        self._b = stamp_block_size(width)
        xs = np.linspace(40, 200, width, dtype=np.float32)
        ys = np.linspace(0, 40, height, dtype=np.float32)[:, None]
        self._bg_y = (xs[None, :] * 0.6 + ys).astype(np.uint8)
        self._bg_u = np.full((height // 2, width // 2), 140, np.uint8)
        self._bg_v = np.full((height // 2, width // 2), 118, np.uint8)
        self._buf = np.empty((height * 3 // 2, width), np.uint8)
        self._scale = max(2, height // 90)
        self._glyphs = {
            ch: np.kron(
                np.array([[c == "1" for c in row] for row in rows], dtype=bool),
                np.ones((self._scale, self._scale), dtype=bool),
            )
            for ch, rows in _FONT.items()
        }

    def render(self, index: int, capture_ms: int) -> np.ndarray[Any, Any]:
        """The picture for frame `index`, stamped with `capture_ms` (Unix ms). Reuses one buffer."""
        w, h = self.width, self.height
        y = self._buf[:h]
        u = self._buf[h : h + h // 4].reshape(h // 2, w // 2)
        v = self._buf[h + h // 4 :].reshape(h // 2, w // 2)
        np.copyto(y, self._bg_y)
        np.copyto(u, self._bg_u)
        np.copyto(v, self._bg_v)
        self._draw_motion(y, u, v, index)
        self._draw_clock(y, u, v, capture_ms, index)
        self._draw_stamp(y, u, v, capture_ms)
        self._draw_flash(y, u, v, capture_ms)
        return self._buf

    def _draw_flash(self, y: Any, u: Any, v: Any, capture_ms: int) -> None:
        top, left, size = flash_box(self.width, self.height)
        lit = capture_ms % FLASH_EVERY_MS < self._frame_ms
        y[top : top + size, left : left + size] = Y_WHITE if lit else Y_BLACK
        u[top // 2 : (top + size) // 2, left // 2 : (left + size) // 2] = 128
        v[top // 2 : (top + size) // 2, left // 2 : (left + size) // 2] = 128

    def _draw_motion(self, y: Any, u: Any, v: Any, index: int) -> None:
        w, h = self.width, self.height
        bar = max(8, w // 40) & ~1
        x = (index * max(2, w // 160) * 2) % (w - bar) & ~1
        y[:, x : x + bar] = 200
        u[:, x // 2 : (x + bar) // 2] = 60
        v[:, x // 2 : (x + bar) // 2] = 200
        size = (h // 6) & ~1
        period = 2 * (h - size)
        top = index * 4 % period
        top = (top if top < h - size else period - top) & ~1
        left = (w // 2 + int(w / 4 * np.sin(index / 25.0))) & ~1
        left = min(max(left, 0), w - size)
        y[top : top + size, left : left + size] = 150
        u[top // 2 : (top + size) // 2, left // 2 : (left + size) // 2] = 200
        v[top // 2 : (top + size) // 2, left // 2 : (left + size) // 2] = 80

    def _draw_clock(self, y: Any, u: Any, v: Any, capture_ms: int, index: int) -> None:
        t = time.localtime(capture_ms // 1000)
        text = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{capture_ms % 1000:03d} {index % 100000:5d}"
        s = self._scale
        gw, gh = 6 * s, 7 * s
        x0 = max(0, (self.width - gw * len(text)) // 2) & ~1
        y0 = (self.height - gh - 4 * s) & ~1
        if x0 + gw * len(text) > self.width or y0 < 2 * self._b:
            return
        y[y0 - s : y0 + gh + s, x0 - s : x0 + gw * len(text)] = Y_BLACK
        u[(y0 - s) // 2 : (y0 + gh + s) // 2, (x0 - s) // 2 : (x0 + gw * len(text)) // 2] = 128
        v[(y0 - s) // 2 : (y0 + gh + s) // 2, (x0 - s) // 2 : (x0 + gw * len(text)) // 2] = 128
        for i, ch in enumerate(text):
            glyph = self._glyphs[ch]
            region = y[y0 : y0 + glyph.shape[0], x0 + i * gw : x0 + i * gw + glyph.shape[1]]
            region[glyph] = Y_WHITE

    def _draw_stamp(self, y: Any, u: Any, v: Any, capture_ms: int) -> None:
        b = self._b
        if 32 * b > self.width or 2 * b > self.height:
            return
        value = capture_ms & 0xFFFFFFFF
        bits = (value >> np.arange(31, -1, -1, dtype=np.uint64)) & 1
        row = np.repeat(np.where(bits == 1, Y_WHITE, Y_BLACK).astype(np.uint8), b)
        y[0:b, : 32 * b] = row
        y[b : 2 * b, : 32 * b] = Y_WHITE + Y_BLACK - row
        u[0:b, : 16 * b] = 128
        v[0:b, : 16 * b] = 128


class TestSource:
    """The test pattern at `fps`, encoded on the source's own thread."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        width: int,
        height: int,
        fps: int,
        encoder: VideoEncoder,
        controls: dict[str, Any] | None = None,
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.encoder = encoder
        self.name = f"testsrc {width}x{height}@{fps}"
        self.late_frames = 0
        self.frames = 0
        # One control, as a camera's: brightness, an offset to every pixel's luma below the
        # stamp rows (so that a page's sliders and the control API can be tried without a camera)
        self.brightness = BRIGHTNESS_DEFAULT
        if controls:
            try:
                self.set_controls({k: v for k, v in controls.items() if k == "brightness"})
            except ControlError as e:
                logger.warning("test source: %s", e)

    def force_keyframe(self) -> None:
        self.encoder.force_keyframe()

    def describe(self) -> dict[str, Any]:
        return {
            "source": "testsrc",
            "mode": {"width": self.width, "height": self.height, "fps": self.fps},
            "encoder": self.encoder.name,
            "frames": self.frames,
            "late_frames": self.late_frames,
        }

    def controls(self) -> list[Control]:
        return [
            Control(
                "brightness", "int", 0, 255, 1, BRIGHTNESS_DEFAULT, value=float(self.brightness)
            )
        ]

    def set_controls(self, values: dict[str, Any]) -> list[Control]:
        """All or none: every value is checked before any is set."""
        known = {c.name: c for c in self.controls()}
        checked = {}
        for name, value in values.items():
            if name not in known:
                raise ControlError(
                    f"no control named {name[:40]!r}; the test source has brightness"
                )
            checked[name] = int(known[name].validate(value))
        if "brightness" in checked:
            self.brightness = checked["brightness"]
        return self.controls()

    async def run(self, publish: Callable[[EncodedFrame], None]) -> None:
        """Capture until cancelled. Raises if the capture thread fails."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        done: asyncio.Future[None] = loop.create_future()

        def finish(error: BaseException | None) -> None:
            if not done.done():
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)

        def deliver(frame: EncodedFrame) -> None:
            if not stop.is_set():
                publish(frame)

        def thread_main() -> None:
            error: BaseException | None = None
            try:
                self._capture(stop, lambda f: loop.call_soon_threadsafe(deliver, f))
            except BaseException as e:  # handed to the loop, re-raised by run()
                error = e
            if not loop.is_closed():
                loop.call_soon_threadsafe(finish, error)

        thread = threading.Thread(target=thread_main, name="testsrc", daemon=True)
        thread.start()
        try:
            await done
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
            self.encoder.close()

    def _capture(self, stop: threading.Event, hand_off: Callable[[EncodedFrame], Any]) -> None:
        import av  # on the source's thread: this module imports without PyAV

        pattern = TestPattern(self.width, self.height, self.fps)
        interval = 1.0 / self.fps
        t0 = time.monotonic()
        index = 0
        while not stop.is_set():
            due = t0 + index * interval
            delay = due - time.monotonic()
            if delay > 0:
                if stop.wait(delay):
                    break
            elif delay < -interval:
                skipped = int(-delay / interval)
                self.late_frames += skipped
                index += skipped
                continue
            capture_ns = time.time_ns()
            now = time.monotonic()
            picture = pattern.render(index, capture_ns // 1_000_000)
            if self.brightness != BRIGHTNESS_DEFAULT:
                below_stamp = picture[2 * pattern._b : self.height]
                shift = self.brightness - BRIGHTNESS_DEFAULT
                table = np.clip(np.arange(256) + shift, 0, 255).astype(np.uint8)
                np.take(table, below_stamp, out=below_stamp)
            pts = round(now * VIDEO_CLOCK_RATE)  # the monotonic clock, as every source
            frame_in = av.VideoFrame.from_ndarray(picture, format="yuv420p")
            for frame in self.encoder.encode_frame(frame_in, pts, capture_ns):
                hand_off(frame)
            index += 1
            self.frames += 1


def tone(first_wall_ns: int, samples: int, channels: int, rate: int = 48_000) -> bytes:
    """S16LE samples from the wall-clock time of the first one: a TONE_HZ sine (half scale) in
    the first TONE_MS of each second, silence otherwise. The phase follows the wall clock, so
    that consecutive periods join without a click."""
    t_ns = first_wall_ns + np.arange(samples, dtype=np.int64) * 1_000_000_000 // rate
    in_second = t_ns % (FLASH_EVERY_MS * 1_000_000)
    on = in_second < TONE_MS * 1_000_000
    phase = 2 * np.pi * TONE_HZ * (in_second.astype(np.float64) / 1e9)
    mono = (np.sin(phase) * 16384 * on).astype("<i2")
    return (np.repeat(mono, channels) if channels > 1 else mono).tobytes()


MAX_LAG_S = 0.2  # the tone skips what is older than this rather than make it late


class ToneSource:
    """The test source's sound: `tone()` in real time, a period at a time, encoded to Opus on the
    event loop. The tone bursts start on whole wall-clock seconds, with the picture's flash."""

    __test__ = False  # not a pytest test class

    def __init__(self, channels: int, period_ms: int, encoder: Any) -> None:
        self.channels = channels
        self.period = AUDIO_CLOCK_RATE * period_ms // 1000
        self.encoder = encoder
        self.name = f"testsrc tone {TONE_HZ} Hz"
        self.packets = 0
        self.skipped = 0  # samples not made because the event loop was held up

    def describe(self) -> dict[str, Any]:
        return {
            "source": "testsrc",
            "encoder": self.encoder.name,
            "packets": self.packets,
            "skipped_samples": self.skipped,
        }

    async def run(self, publish: Callable[[EncodedAudio], None]) -> None:
        start_ns = time.monotonic_ns()
        wall_minus_monotonic = time.time_ns() - start_ns
        pts0 = audio_pts_from_ns(start_ns)
        n = 0
        try:
            while True:
                # A period is "captured" once its last sample's time has passed.
                end_ns = start_ns + (n + self.period) * 1_000_000_000 // AUDIO_CLOCK_RATE
                delay = (end_ns - time.monotonic_ns()) / 1e9
                # Yield every period, also when behind: a machine too slow to make the sound
                # in real time (an emulated Pi) must still serve HTTP and ping the watchdog.
                await asyncio.sleep(max(delay, 0.0))
                if delay < -MAX_LAG_S:  # held up: skip to the present, as a device's overrun would
                    late = int(-delay * AUDIO_CLOCK_RATE) // self.period * self.period
                    self.skipped += late
                    n += late
                first_ns = start_ns + n * 1_000_000_000 // AUDIO_CLOCK_RATE
                pcm = tone(first_ns + wall_minus_monotonic, self.period, self.channels)
                for packet in self.encoder.encode(pcm, pts0 + n):
                    self.packets += 1
                    publish(packet)
                n += self.period
        finally:
            self.encoder.close()
