"""A microphone through ALSA (the system's libasound, by ctypes), read on the event loop, encoded
to Opus.

Edge module. The PCM is opened non-blocking (S16_LE, `audio.rate`, `audio.channels`, periods of
`audio.period_ms`: `snd_pcm_set_params` with a buffer of four periods), its poll descriptors sit on
`loop.add_reader`, and each whole period is encoded at once (libopus takes about 50 us for 20 ms:
tests/perf/bench_audio.py).

Why not pyalsaaudio: PyPI ships it as source only (a compiler and libasound2-dev on every device,
and an arm64 build for the SD image), and Debian 12's python3-alsaaudio 0.8.4 fails every read()
under Python 3.11 ("PY_SSIZE_T_CLEAN macro must be defined"; seen in the test machine). The seven
libasound calls used here are the library's stable C API, and libasound2 is on every system that
has ALSA at all. Using the system's library also means the system's ALSA configuration (PyAV's
bundled libasound looks for it in a build-time path).

Timestamps: a period's pts counts samples on from the first one, which is placed on the monotonic
clock when ALSA has been drained (the newest sample read was captured "now"). The device's clock
and the monotonic clock drift apart by some parts per million; when the count is more than
`RESYNC_MS` away from the clock, it is set to the clock again (counted in `resyncs`), so that audio
stays in sync with video for days.

A PCM that delivers faster than real time (ALSA's userspace `file` and `null` plugins, which tests
use) is paced: the daemon never reads more than `AHEAD_MAX_MS` ahead of the clock. Real hardware
never is.

Failures end the source with a reason (the supervisor restarts it): the device cannot be opened
(missing, busy, a rate it cannot take), it went away (a USB microphone unplugged), or it sent
nothing for `STALL_S` seconds.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import time
from collections.abc import Callable
from typing import Any

from appliance.config import AudioConfig
from appliance.core.errors import DeviceError
from appliance.core.media import AUDIO_CLOCK_RATE, EncodedAudio, audio_pts_from_ns

RESYNC_MS = 40
AHEAD_MAX_MS = 100
STALL_S = 2.0
PERIODS = 4  # ALSA buffer: 4 periods (80 ms at 20 ms)

_CAPTURE = 1  # SND_PCM_STREAM_CAPTURE
_NONBLOCK = 1  # SND_PCM_NONBLOCK
_S16_LE = 2  # SND_PCM_FORMAT_S16_LE
_RW_INTERLEAVED = 3  # SND_PCM_ACCESS_RW_INTERLEAVED


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


_ERROR_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_lib: Any = None
_quiet: Any = None


def libasound() -> Any:
    """The system's libasound, its functions typed; DeviceError if there is none."""
    global _lib, _quiet
    if _lib is not None:
        return _lib
    path = ctypes.util.find_library("asound") or "libasound.so.2"
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        raise DeviceError(
            "audio capture needs ALSA's libasound2 (apt install libasound2)"
        ) from None
    p = ctypes.c_void_p
    lib.snd_pcm_open.argtypes = [ctypes.POINTER(p), ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.snd_pcm_set_params.argtypes = [p, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                       ctypes.c_uint, ctypes.c_int, ctypes.c_uint]  # fmt: skip
    lib.snd_pcm_get_params.argtypes = [p, ctypes.POINTER(ctypes.c_ulong),
                                       ctypes.POINTER(ctypes.c_ulong)]  # fmt: skip
    lib.snd_pcm_poll_descriptors_count.argtypes = [p]
    lib.snd_pcm_poll_descriptors.argtypes = [p, ctypes.POINTER(_PollFd), ctypes.c_uint]
    lib.snd_pcm_readi.argtypes = [p, ctypes.c_void_p, ctypes.c_ulong]
    lib.snd_pcm_readi.restype = ctypes.c_long
    lib.snd_pcm_recover.argtypes = [p, ctypes.c_int, ctypes.c_int]
    lib.snd_pcm_start.argtypes = [p]
    lib.snd_pcm_close.argtypes = [p]
    lib.snd_strerror.argtypes = [ctypes.c_int]
    lib.snd_strerror.restype = ctypes.c_char_p
    # libasound prints its own errors to stderr ("ALSA lib pcm.c:2666: Unknown PCM"); ours say
    # the same in one log line, with the device's name.
    _quiet = _ERROR_HANDLER(lambda *args: None)
    lib.snd_lib_error_set_handler(_quiet)
    _lib = lib
    return lib


class Pcm:
    """One ALSA capture PCM, non-blocking, interleaved S16_LE."""

    def __init__(self, device: str, rate: int, channels: int, period_frames: int) -> None:
        lib = libasound()
        self._lib = lib
        self.device = device
        self.channels = channels
        self.period_frames = period_frames
        self._handle = ctypes.c_void_p()
        err = lib.snd_pcm_open(ctypes.byref(self._handle), device.encode(), _CAPTURE, _NONBLOCK)
        if err < 0:
            raise DeviceError(f"cannot open ALSA capture device {device!r}: {self.strerror(err)}")
        latency_us = period_frames * PERIODS * 1_000_000 // rate
        err = lib.snd_pcm_set_params(
            self._handle, _S16_LE, _RW_INTERLEAVED, channels, rate, 1, latency_us
        )
        if err < 0:
            self.close()
            raise DeviceError(
                f"ALSA device {device!r} cannot capture {channels} channel(s) of 16-bit audio at "
                f"{rate} Hz ({self.strerror(err)}): set audio.rate and audio.channels to what it "
                'takes, or use a "plughw:" device, which converts'
            )
        count = lib.snd_pcm_poll_descriptors_count(self._handle)
        fds = (_PollFd * max(count, 1))()
        got = lib.snd_pcm_poll_descriptors(self._handle, fds, count)
        self.fds = [fds[i].fd for i in range(max(got, 0))]
        self._buffer = ctypes.create_string_buffer(period_frames * 2 * channels)
        lib.snd_pcm_start(self._handle)

    def strerror(self, err: int) -> str:
        return str(self._lib.snd_strerror(err).decode(errors="replace"))

    def read(self) -> bytes | None:
        """Up to a period of frames; b"" when there is nothing yet; None after an overrun (the
        PCM is prepared again). DeviceError when the device is gone."""
        n = self._lib.snd_pcm_readi(self._handle, self._buffer, self.period_frames)
        if n >= 0:
            return self._buffer.raw[: n * 2 * self.channels]
        if n == -errno.EAGAIN:
            return b""
        if n in (-errno.EPIPE, -errno.ESTRPIPE):
            if self._lib.snd_pcm_recover(self._handle, int(n), 1) == 0:
                self._lib.snd_pcm_start(self._handle)
                return None
        raise DeviceError(f"the microphone went away: {self.strerror(int(n))}")

    def close(self) -> None:
        if self._handle:
            self._lib.snd_pcm_close(self._handle)
            self._handle = ctypes.c_void_p()


def open_pcm(cfg: AudioConfig, period_frames: int) -> Pcm:
    """The capture PCM; DeviceError (naming the device and why) if it cannot be opened."""
    return Pcm(cfg.device, cfg.rate, cfg.channels, period_frames)


class AlsaSource:
    """An ALSA capture device as an audio source."""

    def __init__(self, cfg: AudioConfig, encoder: Any) -> None:
        self.cfg = cfg
        self.encoder = encoder
        self.name = f"alsa {cfg.device} {cfg.rate} Hz x{cfg.channels}"
        self.period_frames = cfg.rate * cfg.period_ms // 1000
        self.packets = 0
        self.overruns = 0
        self.resyncs = 0
        self.paced = 0

    def describe(self) -> dict[str, Any]:
        return {
            "source": "alsa",
            "device": self.cfg.device,
            "rate": self.cfg.rate,
            "channels": self.cfg.channels,
            "encoder": self.encoder.name,
            "packets": self.packets,
            "overruns": self.overruns,
            "resyncs": self.resyncs,
        }

    async def run(self, publish: Callable[[EncodedAudio], None]) -> None:
        loop = asyncio.get_running_loop()
        pcm = open_pcm(self.cfg, self.period_frames)
        rate = self.cfg.rate
        frame_bytes = 2 * self.cfg.channels
        period_bytes = self.period_frames * frame_bytes
        period_48k = self.period_frames * AUDIO_CLOCK_RATE // rate
        pending = bytearray()
        done: asyncio.Future[None] = loop.create_future()
        fds = pcm.fds
        started = audio_pts_from_ns(time.monotonic_ns())
        state: dict[str, Any] = {
            "pts": None,
            "read": 0,
            "last_data": loop.time(),
            "paused": None,
            "timer": None,
        }

        def fail(reason: str) -> None:
            if not done.done():
                done.set_exception(DeviceError(reason))

        def drain() -> None:
            """Read what ALSA holds, then time and encode the whole periods."""
            while True:
                now = audio_pts_from_ns(time.monotonic_ns())
                ahead = state["read"] * AUDIO_CLOCK_RATE // rate - (now - started)
                if ahead > AHEAD_MAX_MS * 48:  # faster than real time: wait for the clock
                    self.paced += 1
                    settle(now, drained=False)
                    pause(ahead / AUDIO_CLOCK_RATE)
                    return
                try:
                    data = pcm.read()
                except DeviceError as e:
                    fail(str(e))
                    return
                if data is None:  # an overrun: ALSA has been prepared again
                    self.overruns += 1
                elif data:
                    state["read"] += len(data) // frame_bytes
                    state["last_data"] = loop.time()
                    pending.extend(data)
                else:
                    settle(now, drained=True)
                    return

        def settle(now: int, drained: bool) -> None:
            """The newest sample read was captured just now: place the first one on the clock,
            or check the count against the clock; then encode every whole period."""
            pending_48k = len(pending) // frame_bytes * AUDIO_CLOCK_RATE // rate
            if state["pts"] is None:
                if not pending:
                    return
                state["pts"] = now - pending_48k
            elif drained and not self.paced:
                drift = now - (state["pts"] + pending_48k)
                if abs(drift) > RESYNC_MS * 48:
                    self.resyncs += 1
                    state["pts"] += drift
            while len(pending) >= period_bytes:
                pcm_period = bytes(pending[:period_bytes])
                del pending[:period_bytes]
                for packet in self.encoder.encode(pcm_period, state["pts"]):
                    self.packets += 1
                    publish(packet)
                state["pts"] += period_48k

        def watch() -> None:
            """Read when ALSA's descriptors say so; a PCM whose descriptor epoll refuses (the
            userspace `null` plugin's regular file) is read on a timer, twice a period."""
            try:
                for fd in fds:
                    loop.add_reader(fd, drain)
            except OSError:
                unwatch()
                state["timer"] = loop.call_later(self.cfg.period_ms / 2000, tick)

        def tick() -> None:
            state["timer"] = loop.call_later(self.cfg.period_ms / 2000, tick)
            drain()

        def unwatch() -> None:
            for fd in fds:
                loop.remove_reader(fd)
            if state["timer"] is not None:
                state["timer"].cancel()
                state["timer"] = None

        def pause(seconds: float) -> None:
            unwatch()
            state["paused"] = loop.call_later(seconds, resume)

        def resume() -> None:
            state["paused"] = None
            watch()
            drain()

        async def watch_stall() -> None:
            while not done.done():
                await asyncio.sleep(STALL_S / 4)
                if loop.time() - state["last_data"] > STALL_S:
                    fail(f"no audio from {self.cfg.device!r} for {STALL_S:g} s")

        watch()
        watchdog = loop.create_task(watch_stall())
        try:
            drain()
            await done
        finally:
            watchdog.cancel()
            if state["paused"] is not None:
                state["paused"].cancel()
            unwatch()
            pcm.close()
            self.encoder.close()
