"""Audio next to the video, against real peers: aiortc decodes the Opus and finds the tone,
Chromium plays it (its own audio statistics), and real ALSA (a userspace `file` PCM) is captured.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.e2e.conftest import DaemonFactory, wait_ready, wait_until
from tests.e2e.peers import AiortcViewer, chromium
from tests.e2e.test_browser import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def pcm_of(frames: list[Any]) -> tuple[np.ndarray[Any, Any], int]:
    """The decoded audio as one mono float array in [-1, 1], and its sample rate."""
    rate = frames[0].sample_rate
    chunks = []
    for frame in frames:
        samples = frame.to_ndarray()  # packed s16: shape (1, samples * channels)
        channels = len(frame.layout.channels)
        chunks.append(samples.reshape(-1, channels)[:, 0].astype(np.float64) / 32768)
    return np.concatenate(chunks), rate


def bursts(mono: np.ndarray[Any, Any], rate: int) -> list[tuple[int, int]]:
    """(start, end) sample indices of the loud stretches (10 ms RMS windows over 0.05)."""
    window = rate // 100
    rms = np.sqrt(np.mean(mono[: len(mono) // window * window].reshape(-1, window) ** 2, axis=1))
    loud = rms > 0.05
    out = []
    start = None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        elif not on and start is not None:
            out.append((start * window, i * window))
            start = None
    return out


def peak_hz(mono: np.ndarray[Any, Any], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rate)[int(np.argmax(spectrum))])


async def test_aiortc_viewer_decodes_the_opus_and_finds_the_test_tone(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon(**{"audio.source": "testsrc"}) as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep", audio=True)
        try:
            await viewer.connect()
            assert viewer.answer is not None
            sections = viewer.answer.split("\r\nm=")
            audio = next(s for s in sections if s.startswith("audio "))
            video = next(s for s in sections if s.startswith("video "))
            assert "a=sendonly" in audio and "opus/48000/2" in audio
            # One msid stream for both tracks: the viewer plays them as one, in sync.
            msid = {line.split()[0] for line in audio.split("\r\n") if line.startswith("a=msid:")}
            assert msid and msid == {
                line.split()[0] for line in video.split("\r\n") if line.startswith("a=msid:")
            }
            frames = await viewer.audio_frames(3.5)
            mono, rate = pcm_of(frames)
            assert rate == 48000
            found = bursts(mono, rate)
            assert len(found) >= 3, found
            # Whole bursts: not cut by the recording's first or last 20 ms (a burst in progress
            # when the first packet arrives starts a frame or so late: (480, 2880) once).
            edge = rate // 50
            whole = [b for b in found if edge < b[0] and b[1] < len(mono) - edge]
            for start, end in whole:
                assert 0.08 <= (end - start) / rate <= 0.12, (start, end)  # 100 ms bursts
                assert abs(peak_hz(mono[start:end], rate) - 1000) < 15
            onsets = [start / rate for start, _ in whole]
            gaps = np.diff(onsets)
            assert all(abs(g - 1.0) < 0.03 for g in gaps), gaps  # one a second
            state = (await (await http.get(f"{d.url}/api/status")).json())["audio"]
            assert state["kind"] == "testsrc" and state["running"] and state["codec"] == "opus"
            assert (await viewer.frames(5))[-1].width == 640  # and the video, of course
        finally:
            await viewer.close()


async def test_chromium_plays_the_sound_with_the_picture(daemon: DaemonFactory) -> None:
    async with daemon(**{"audio.source": "testsrc"}) as d, chromium() as browser:
        await wait_ready(d)
        page = await browser.new_page()
        await page.goto(f"{d.url}/")
        await page.wait_for_function(
            "window.viewer && window.viewer.audio && window.viewer.framesPresented > 10",
            timeout=20000,
            polling=100,
        )
        assert await page.is_visible("#unmute")
        await page.click("#unmute")  # the user's gesture that lets sound play
        await page.wait_for_function(
            "window.viewer.audioEnergy > 0.05 && window.viewer.audioSamples > 96000",
            timeout=20000,
            polling=100,
        )
        state = await page.evaluate("() => JSON.parse(JSON.stringify(window.viewer))")
        assert state["muted"] is False
        # Little concealment: the packets arrive in time and in order.
        assert state["concealedSamples"] / state["audioSamples"] < 0.05, state
        # The sender reports that map each track's RTP time to the wall clock (what lip sync
        # rests on) reached Chromium: sent for every viewer at once by the C loop's tick.
        reports = await page.evaluate(
            """async () => {
                const stats = await window.viewerClient.pc.getStats();
                const out = {};
                stats.forEach((s) => {
                    if (s.type === "remote-outbound-rtp") out[s.kind] = s.reportsSent;
                });
                return out;
            }"""
        )
        assert reports.get("video", 0) >= 1 and reports.get("audio", 0) >= 1, reports


async def test_the_picture_alone_on_request(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon(**{"audio.source": "testsrc"}) as d, chromium() as browser:
        await wait_ready(d)
        page = await browser.new_page()
        await page.goto(f"{d.url}/?audio=0")
        await page.wait_for_function(
            "window.viewer && window.viewer.framesPresented > 10", timeout=20000, polling=100
        )
        assert await page.evaluate("window.viewer.audio") is False
        assert not await page.is_visible("#unmute")
        async with http.get(f"{d.url}/api/status") as r:
            (viewer,) = (await r.json())["viewers"]
        assert "audio" not in viewer  # no audio sender for this viewer


async def test_no_microphone_leaves_the_video_running(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon(**{"audio.source": "alsa", "audio.device": "hw:9,0"}) as d:
        await wait_ready(d)

        async def failed() -> bool:
            audio = (await (await http.get(f"{d.url}/api/status")).json())["audio"]
            return bool(audio.get("last_error")) and audio["running"] is False

        await wait_until(failed, 10, "the missing microphone was not reported")
        audio = (await (await http.get(f"{d.url}/api/status")).json())["audio"]
        assert "cannot open ALSA capture device 'hw:9,0'" in audio["last_error"], audio
        viewer = AiortcViewer(http, f"{d.url}/cam/whep", audio=True)
        try:
            await viewer.connect()
            assert len(await viewer.frames(10)) == 10
        finally:
            await viewer.close()
    async with daemon(**{"audio.source": "none"}) as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep", audio=True)
        try:
            await viewer.connect()
            assert viewer.answer is not None
            assert viewer.answer.count("a=sendonly") == 1  # the video only
            assert len(await viewer.frames(5)) == 5
        finally:
            await viewer.close()


@pytest.fixture
def alsa_file_pcm(tmp_path: Path) -> dict[str, str]:
    """An ALSA configuration with a capture PCM "tone440" that reads a 440 Hz sine from a file
    (ALSA's own `file` plugin over `null`): real libasound, no sound card."""
    seconds = 30
    t = np.arange(48000 * seconds) / 48000
    (tmp_path / "tone440.raw").write_bytes((np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2"))
    rc = tmp_path / "asoundrc"
    rc.write_text(
        'pcm.tone440 {\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
        f'  infile "{tmp_path}/tone440.raw"\n  format "raw"\n}}\n'
    )
    return {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{rc}"}


async def test_alsa_capture_through_a_userspace_pcm(
    alsa_file_pcm: dict[str, str], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "appliance.toml"
    config.write_text(
        '[video]\nsource = "testsrc"\nwidth = 320\nheight = 240\n'
        '[audio]\nsource = "alsa"\ndevice = "tone440"\n'
        f'[http]\nstate_dir = "{tmp_path}/state"\n'
    )
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **alsa_file_pcm}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance", *args, env=env)
    url = f"http://127.0.0.1:{port}"
    try:

        async def capturing() -> bool:
            try:
                async with http.get(f"{url}/api/status") as r:
                    audio = (await r.json())["audio"]
            except aiohttp.ClientError:
                return False
            return bool(audio["running"] and audio.get("packets", 0) > 25)

        await wait_until(capturing, 15, "the ALSA capture did not start")
        viewer = AiortcViewer(http, f"{url}/cam/whep", audio=True)
        try:
            await viewer.connect()
            frames = await viewer.audio_frames(2.0)
            mono, rate = pcm_of(frames[10:])  # past the decoder's start
            assert abs(peak_hz(mono, rate) - 440) < 5
            assert np.sqrt(np.mean(mono**2)) > 0.1  # the sine, not silence
        finally:
            await viewer.close()
        async with http.get(f"{url}/api/status") as r:
            audio = (await r.json())["audio"]
        assert audio["kind"] == "alsa" and audio["device"] == "tone440", audio
        # The file PCM delivers as fast as it is read; the source paced it to real time.
        assert 40 <= audio["packets_per_s"] <= 60, audio
    finally:
        proc.terminate()
        await proc.wait()


async def test_stereo_is_declared_and_mono_is_not(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    for channels, stereo in ((2, True), (1, False)):
        async with daemon(**{"audio.source": "testsrc", "audio.channels": channels}) as d:
            await wait_ready(d)
            viewer = AiortcViewer(http, f"{d.url}/cam/whep", audio=True)
            try:
                await viewer.connect()
                assert viewer.answer is not None
                assert ("stereo=1;sprop-stereo=1" in viewer.answer) is stereo
                frames = await viewer.audio_frames(1.5)
                mono, rate = pcm_of(frames)
                assert len(bursts(mono, rate)) >= 1  # the tone, in either layout
            finally:
                await viewer.close()
