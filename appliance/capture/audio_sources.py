"""Which audio source runs, and the supervisor that keeps it running beside the video.

Edge module. `audio.source = "auto"` is decided once the video source is known: the ALSA device
(`audio.device`) if it opens for capture, else the test tone when the video is the test pattern,
else no audio. A microphone that is missing or goes away is logged and tried again with the same
backoff as a camera; the video and every viewer carry on meanwhile (they hear silence).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from appliance.capture.sources import SOURCE_BACKOFF, STABLE_AFTER, SourceSlot
from appliance.config import Config
from appliance.core.audio import AudioTrack
from appliance.core.errors import DeviceError
from appliance.core.media import EncodedAudio

logger = logging.getLogger(__name__)


class AudioSource(Protocol):
    name: str

    async def run(self, publish: Callable[[EncodedAudio], None]) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class AudioSlot:
    """The audio source that runs now (None between restarts), for the status API."""

    def __init__(self) -> None:
        self.current: AudioSource | None = None
        self.kind = ""
        self.restarts = 0
        self.last_error = ""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind or "none", "restarts": self.restarts}
        if self.current is not None:
            out.update(self.current.describe())
        out["running"] = self.current is not None
        if self.last_error:
            out["last_error"] = self.last_error
        return out


def resolve_audio(config: Config, video_kind: str) -> tuple[str, str]:
    """("alsa" | "testsrc" | "none", why) for the configured audio source."""
    audio = config.audio
    if audio.source != "auto":
        return audio.source, "configured"
    from appliance.capture.alsa import open_pcm

    try:
        open_pcm(audio, audio.rate * audio.period_ms // 1000).close()
        return "alsa", f"ALSA device {audio.device!r} captures"
    except DeviceError as e:
        problem = str(e)
    if video_kind == "testsrc":
        return "testsrc", f"the video is the test pattern; no microphone ({problem})"
    return "none", f"no microphone: {problem}"


def open_audio(config: Config, kind: str) -> AudioSource:
    from appliance.encoders.opus import OpusEncoder

    audio = config.audio
    if kind == "alsa":
        from appliance.capture.alsa import AlsaSource

        return AlsaSource(audio, OpusEncoder(audio))
    from appliance.capture.testsrc import ToneSource

    # The tone is made at 48 kHz, whatever audio.rate says.
    return ToneSource(audio.channels, audio.period_ms, OpusEncoder(replace(audio, rate=48_000)))


async def supervise_audio(
    config: Config,
    track: AudioTrack,
    slot: AudioSlot,
    video: SourceSlot,
    detach: Callable[[], None],
) -> None:
    """Run the audio source; when it fails, log why and start it again after a backoff.
    `detach()` takes the audio track off the stream when "auto" finds no audio at all."""
    if config.audio.source == "none":
        detach()
        return
    if config.audio.source == "auto":
        await video.resolved.wait()  # "auto" depends on which video source runs
    kind, why = await asyncio.to_thread(resolve_audio, config, video.kind)
    slot.kind = kind
    logger.info("audio source: %s (%s)", kind, why)
    if kind == "none":
        detach()
        return
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            source = open_audio(config, kind)
            slot.current = source
            logger.info("audio %s: starting", source.name)
            await source.run(track.publish)
            reason = "ended"
        except asyncio.CancelledError:
            raise
        except DeviceError as e:
            reason = str(e)
        except Exception as e:
            logger.exception("audio source %s crashed", kind)
            reason = f"failed: {e!r}"
        finally:
            slot.current = None
        if loop.time() - started > STABLE_AFTER:
            failures = 0
        slot.last_error = reason
        delay = SOURCE_BACKOFF[min(failures, len(SOURCE_BACKOFF) - 1)]
        failures += 1
        slot.restarts += 1
        logger.error(
            "audio source %s: %s; the video goes on; trying again in %.0f s", kind, reason, delay
        )
        await asyncio.sleep(delay)
