"""`video.source = "gstreamer"` on real boards (APPLIANCE_TEST_HARDWARE=1 sh tests/run.sh -m
hardware): a Jetson's NVENC and Argus CSI camera, a USB camera into NVENC, and a Pi 4's
v4l2h264enc. Each test skips where its elements are missing; the pipelines are the README's."""

from __future__ import annotations

import asyncio
import os

import pytest

from appliance.capture.gstreamer import GstSource, available_elements
from appliance.core.media import EncodedFrame
from tests.capture.test_gstreamer import collect, stop

pytestmark = pytest.mark.hardware

HAVE = available_elements(("nvarguscamerasrc", "nvv4l2h264enc", "nvvidconv", "v4l2h264enc"))
NVENC = (
    "nvvidconv ! nvv4l2h264enc insert-sps-pps=1 idrinterval=3000 ! video/x-h264,profile=baseline"
)
PIPELINES = {
    "jetson-nvenc": (
        ("nvvidconv", "nvv4l2h264enc"),
        "videotestsrc is-live=true ! video/x-raw,width=1280,height=720,framerate=30/1 ! " + NVENC,
    ),
    "jetson-csi": (
        ("nvarguscamerasrc", "nvv4l2h264enc"),
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,"
        "framerate=30/1 ! " + NVENC,
    ),
    "jetson-usb": (
        ("nvvidconv", "nvv4l2h264enc"),
        f"v4l2src device={os.environ.get('APPLIANCE_TEST_CAMERA', '/dev/video0')}"
        " ! video/x-raw,width=1280,height=720 ! " + NVENC,
    ),
    "pi4-v4l2h264enc": (
        ("v4l2h264enc",),
        "videotestsrc is-live=true ! video/x-raw,width=1280,height=720,framerate=30/1,format=I420"
        " ! v4l2h264enc extra-controls=controls,video_gop_size=3000"
        " ! video/x-h264,level=(string)4,profile=constrained-baseline",
    ),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
async def test_board_pipeline_streams_and_makes_a_keyframe_on_request(name: str) -> None:
    needs, pipeline = PIPELINES[name]
    missing = [element for element in needs if not HAVE.get(element)]
    if missing:
        pytest.skip(f"no {', '.join(missing)} here")
    source = GstSource(pipeline)
    frames, task = await collect(source, 30, timeout=30)
    try:
        assert frames[0].keyframe and source.encoders
        asked_at = len(frames)
        source.force_keyframe()
        await collect_more(frames, asked_at + 5)
        assert True in [f.keyframe for f in frames[asked_at : asked_at + 3]]
    finally:
        await stop(task)


async def collect_more(frames: list[EncodedFrame], until: int) -> None:
    for _ in range(200):
        if len(frames) >= until:
            return
        await asyncio.sleep(0.02)
