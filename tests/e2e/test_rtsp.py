"""RTSP out, read by clients nobody here wrote: Debian's ffprobe and ffmpeg, GStreamer's rtspsrc
(on the system Python), and PyAV's RTSP demuxer (FFmpeg's, in PyAV's wheels). The daemon runs
in process on the test source; each client reads `rtsp://127.0.0.1:<port>/cam`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import numpy as np
import pytest

from appliance.capture.testsrc import read_stamp
from tests.e2e.conftest import DaemonFactory, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WIDTH, HEIGHT = 640, 360
TOKEN = "rtsp-reader-token-0123456789"


async def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(subprocess.run, list(argv), capture_output=True, timeout=timeout)


async def test_ffprobe_lists_h264_of_the_stream_and_opus(daemon: DaemonFactory) -> None:
    async with daemon(**{"video.width": WIDTH, "video.height": HEIGHT}) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        out = await run(
            "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json",
            f"rtsp://127.0.0.1:{d.rtsp.port}/cam",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr.decode()
        streams = {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}
        video = streams["video"]
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", WIDTH, HEIGHT)
        assert video["profile"] == "Constrained Baseline"
        assert streams["audio"]["codec_name"] == "opus"


def stamps(raw: bytes) -> list[int]:
    """The capture-time stamps of 8-bit grey frames, in order (unreadable ones left out)."""
    size = WIDTH * HEIGHT
    out = []
    for at in range(0, len(raw) - size + 1, size):
        luma = np.frombuffer(raw, np.uint8, size, at).reshape(HEIGHT, WIDTH)
        value = read_stamp(luma, WIDTH)
        if value is not None:
            out.append(value)
    return out


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_ffmpeg_decodes_150_frames_with_stamps_in_order(
    daemon: DaemonFactory, transport: str
) -> None:
    async with daemon(**{"video.width": WIDTH, "video.height": HEIGHT}) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        out = await run(
            "ffmpeg", "-v", "error", "-rtsp_transport", transport,
            "-i", f"rtsp://127.0.0.1:{d.rtsp.port}/cam",
            "-an", "-frames:v", "150", "-f", "rawvideo", "-pix_fmt", "gray", "-",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr.decode()
        assert len(out.stdout) == 150 * WIDTH * HEIGHT, (len(out.stdout), out.stderr.decode())
        read = stamps(out.stdout)
        assert len(read) >= 140, len(read)
        assert read == sorted(read) and len(set(read)) >= 140  # each picture once, in order
        # Once the readers are gone (TEARDOWN), the server holds none.
        await asyncio.sleep(0.2)
        assert d.rtsp.readers == {}


async def test_a_token_is_the_password_and_none_is_401(daemon: DaemonFactory) -> None:
    tokens = [{"name": "nvr", "token": TOKEN, "rights": ["read"]}]
    settings = {
        "video.width": WIDTH, "video.height": HEIGHT, "auth.tokens": tokens,
        "auth.public_read": False,
    }  # fmt: skip
    async with daemon(**settings) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        port = d.rtsp.port
        refused = await run("ffprobe", "-v", "error", f"rtsp://127.0.0.1:{port}/cam")
        assert refused.returncode != 0 and b"401" in refused.stderr, refused.stderr
        wrong = await run("ffprobe", "-v", "error", f"rtsp://nvr:not-it@127.0.0.1:{port}/cam")
        assert wrong.returncode != 0 and b"401" in wrong.stderr, wrong.stderr
        # ffmpeg answers the Digest challenge (the stronger one offered first).
        ok = await run(
            "ffmpeg", "-v", "error", "-i", f"rtsp://nvr:{TOKEN}@127.0.0.1:{port}/cam",
            "-frames:v", "30", "-f", "null", "-",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr.decode()


def _gst_frames(url: str, protocol: str) -> int:
    """Frames decoded by GStreamer's rtspsrc in 5 s (the system Python's GStreamer)."""
    script = f"""
import gi, sys
gi.require_version("Gst", "1.0")
from gi.repository import Gst, GLib
Gst.init(None)
pipe = Gst.parse_launch(
    "rtspsrc location={url} protocols={protocol} latency=0 ! rtph264depay ! h264parse"
    " ! avdec_h264 ! fakesink name=sink signal-handoffs=true")
count = [0]
pipe.get_by_name("sink").connect("handoff", lambda *a: count.__setitem__(0, count[0] + 1))
pipe.set_state(Gst.State.PLAYING)
loop = GLib.MainLoop()
GLib.timeout_add(5000, loop.quit)
loop.run()
pipe.set_state(Gst.State.NULL)
print(count[0])
"""
    done = subprocess.run(
        ["/usr/bin/python3", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
async def test_gstreamer_rtspsrc_decodes(daemon: DaemonFactory, protocol: str) -> None:
    async with daemon(**{"video.width": WIDTH, "video.height": HEIGHT}) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        url = f"rtsp://127.0.0.1:{d.rtsp.port}/cam"
        frames = await asyncio.to_thread(_gst_frames, url, protocol)
        assert frames >= 60, frames  # 5 s at 30 fps, less the start


def _pyav_frames(url: str, transport: str, count: int) -> list[Any]:
    import av

    with av.open(url, options={"rtsp_transport": transport}, timeout=10) as container:
        frames = []
        for frame in container.decode(container.streams.video[0]):
            frames.append((frame.width, frame.height))
            if len(frames) >= count:
                return frames
    return frames


async def test_pyav_reads_both_transports_beside_each_other(daemon: DaemonFactory) -> None:
    async with daemon(**{"video.width": WIDTH, "video.height": HEIGHT}) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        url = f"rtsp://127.0.0.1:{d.rtsp.port}/cam"
        tcp, udp = await asyncio.gather(
            asyncio.to_thread(_pyav_frames, url, "tcp", 60),
            asyncio.to_thread(_pyav_frames, url, "udp", 60),
        )
        assert set(tcp) == set(udp) == {(WIDTH, HEIGHT)} and len(tcp) == len(udp) == 60
