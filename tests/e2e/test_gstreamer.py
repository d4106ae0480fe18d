"""`video.source = "gstreamer"` in the running daemon, watched by aiortc: an encoder pipeline whose
keyframes come on request, an IP camera (GStreamer's own RTSP server) passed through without
re-encoding, both played in Chromium too, and a pipeline that ends, restarted by the supervisor."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import DaemonFactory, wait_ready, wait_until
from tests.e2e.peers import AiortcViewer, chromium
from tests.e2e.test_browser import free_port, viewer_state, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CAMERA = Path(__file__).with_name("gst_rtsp_camera.py")
X264 = (
    "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=3000"
    " ! video/x-h264,profile=constrained-baseline"
)


async def watch(http: aiohttp.ClientSession, url: str, count: int = 10) -> set[tuple[int, int]]:
    viewer = AiortcViewer(http, url)
    try:
        await viewer.connect()
        frames = await viewer.frames(count, timeout=30)
        return {(f.width, f.height) for f in frames}
    finally:
        await viewer.close()


async def test_an_encoder_pipeline_plays_and_makes_keyframes_on_request(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    overrides = {"video.source": "gstreamer", "video.pipeline": X264, "audio.source": "none"}
    async with daemon(**overrides) as d:
        await wait_ready(d, 20)
        assert d.source.describe()["encoder"] == "x264enc"
        # key-int-max=3000: x264enc makes no keyframe of its own for 100 s. Each viewer that
        # joins gets one, through the force-key-unit event the stream's request became.
        before = d.stream.keyframes
        assert await watch(http, f"{d.url}/cam/whep") == {(320, 240)}
        first = d.stream.keyframes
        assert first > before
        await asyncio.sleep(d.config.stream.keyframe_interval_min + 0.1)
        assert await watch(http, f"{d.url}/cam/whep") == {(320, 240)}
        assert d.stream.keyframes > first


@pytest.fixture
def ip_camera() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        ["/usr/bin/python3", str(CAMERA), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        proc.kill()
        proc.communicate()


async def test_an_ip_camera_is_passed_through_without_encoding(
    daemon: DaemonFactory, http: aiohttp.ClientSession, ip_camera: str
) -> None:
    pipeline = f"rtspsrc location={ip_camera} protocols=tcp latency=50 ! rtph264depay"
    overrides = {"video.source": "gstreamer", "video.pipeline": pipeline, "audio.source": "none"}
    async with daemon(**overrides) as d:
        await wait_ready(d, 30)
        described = d.source.describe()
        assert described["encoder"] == "none (passed through)", described
        assert await watch(http, f"{d.url}/cam/whep") == {(320, 240)}
        assert d.stream.profile_level_id.startswith("42e0")  # the camera's own SPS


async def test_chromium_plays_the_ip_camera_and_the_encoder_pipeline(
    daemon: DaemonFactory, ip_camera: str
) -> None:
    passthrough = f"rtspsrc location={ip_camera} protocols=tcp latency=50 ! rtph264depay"
    for pipeline in (passthrough, X264):
        overrides = {"video.source": "gstreamer", "video.pipeline": pipeline}
        async with daemon(**overrides, **{"audio.source": "none"}) as d, chromium() as browser:
            await wait_ready(d, 30)
            page = await browser.new_page()
            await page.goto(f"{d.url}/")
            await wait_for(page, "window.viewer && window.viewer.framesPresented >= 30")
            state = await viewer_state(page)
            assert (state["width"], state["height"]) == (320, 240), pipeline


async def test_a_pipeline_that_ends_is_restarted_and_says_why(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    # Not live, 45 pictures: 1.5 s of video, then the end of the stream, again and again.
    pipeline = (
        "videotestsrc num-buffers=45 ! video/x-raw,width=320,height=240,framerate=30/1"
        " ! x264enc tune=zerolatency speed-preset=ultrafast ! video/x-h264,profile=main"
    )
    overrides = {"video.source": "gstreamer", "video.pipeline": pipeline, "audio.source": "none"}
    async with daemon(**overrides) as d:
        await wait_ready(d, 20)

        async def restarted() -> bool:
            return d.source.restarts >= 1 and d.source.current is not None

        await wait_until(restarted, 30, "the supervisor did not restart the ended pipeline", 0.1)
        assert d.source.last_error == "the pipeline ended (end of stream)"
        async with http.get(f"{d.url}/api/status") as r:
            source = (await r.json())["source"]
        assert source["kind"] == "gstreamer" and source["restarts"] >= 1
