"""The GStreamer pipeline source with Debian's GStreamer: real pipelines, real encoders."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from appliance.capture.gstreamer import GstSource, import_gst, redacted
from appliance.core import h264
from appliance.core.errors import DeviceError
from appliance.core.media import EncodedFrame

X264 = (
    "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=1000"
    " ! video/x-h264,profile=constrained-baseline"
)


async def collect(
    source: GstSource, until: int, timeout: float = 20.0
) -> tuple[list[EncodedFrame], asyncio.Task[None]]:
    frames: list[EncodedFrame] = []
    enough = asyncio.Event()

    def publish(frame: EncodedFrame) -> None:
        frames.append(frame)
        if len(frames) >= until:
            enough.set()

    task = asyncio.create_task(source.run(publish))
    waiter = asyncio.create_task(enough.wait())
    done, _ = await asyncio.wait(
        {task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    waiter.cancel()
    assert done, f"{len(frames)} access units in {timeout} s"
    if task in done:
        task.result()  # raises why it ended
    return frames, task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_x264_pipeline_delivers_access_units_on_the_daemon_clock() -> None:
    source = GstSource(X264)
    frames, task = await collect(source, 15)
    try:
        assert frames[0].keyframe  # h264parse starts at one; SPS and PPS in front of it
        first = frames[0].data
        assert h264.find_nal(first, h264.NAL_SPS) and h264.find_nal(first, h264.NAL_PPS)
        assert h264.profile_level_id(h264.find_nal(first, h264.NAL_SPS) or b"").startswith("42e0")
        assert all(b.pts > a.pts for a, b in zip(frames, frames[1:], strict=False))
        # 90 kHz at 30 fps: 3000 apart, as the camera's clock ticked
        steps = {b.pts - a.pts for a, b in zip(frames[5:], frames[6:], strict=False)}
        assert all(2900 <= s <= 3100 for s in steps), steps
        # Captured moments ago on the wall clock (base time + running time, not "when we got it")
        assert 0 < time.time_ns() - frames[-1].capture_ns < 2_000_000_000
        assert source.describe()["encoder"] == "x264enc" and source.describe()["state"] == "playing"
    finally:
        await stop(task)
    assert source.describe()["state"] == "stopped"


async def test_a_keyframe_request_reaches_the_encoder() -> None:
    source = GstSource(X264)  # key-int-max=1000: no keyframe of its own for 33 s
    frames, task = await collect(source, 10)
    try:
        assert [f.keyframe for f in frames[1:]] == [False] * (len(frames) - 1)
        asked_at, asked_ns = len(frames), time.time_ns()
        source.force_keyframe()
        for _ in range(100):
            if any(f.keyframe for f in frames[asked_at:]):
                break
            await asyncio.sleep(0.05)
        keyframe = next(f for f in frames[asked_at:] if f.keyframe)
        # The first picture x264enc takes after the event is a keyframe: captured within a frame
        # or two of the request (pictures already encoded and on their way come before it).
        assert keyframe.capture_ns - asked_ns < 100_000_000
    finally:
        await stop(task)


async def test_a_profile_browsers_cannot_decode_is_refused_with_the_fix() -> None:
    # No caps after x264enc: given videotestsrc's 4:4:4 pictures, it makes High 4:4:4.
    source = GstSource("videotestsrc is-live=true ! video/x-raw,width=160,height=120 ! x264enc")
    with pytest.raises(DeviceError, match="profile=constrained-baseline") as refused:
        await asyncio.wait_for(source.run(lambda f: None), 20)
    assert "profile_idc 244" in str(refused.value)


async def test_a_pipeline_that_does_not_parse_names_the_element() -> None:
    source = GstSource("videotestsrc ! nosuchencoder")
    with pytest.raises(DeviceError, match='video.pipeline: no element "nosuchencoder"'):
        await source.run(lambda f: None)


async def test_an_element_error_names_the_element() -> None:
    source = GstSource("filesrc name=camera location=/nonexistent/cam.h264")
    with pytest.raises(DeviceError, match=r"^camera: .*(not found|No such file)"):
        await asyncio.wait_for(source.run(lambda f: None), 20)


async def test_the_end_of_the_stream_ends_the_run() -> None:
    # Not live: paced by the clock, 10 pictures, then end of stream.
    source = GstSource(
        "videotestsrc num-buffers=10 ! video/x-raw,width=320,height=240,framerate=30/1"
        " ! x264enc tune=zerolatency speed-preset=ultrafast ! video/x-h264,profile=main"
    )
    got: list[EncodedFrame] = []
    started = time.monotonic()
    with pytest.raises(DeviceError, match=r"the pipeline ended \(end of stream\)"):
        await asyncio.wait_for(source.run(got.append), 20)
    assert len(got) == 10
    assert time.monotonic() - started >= 0.25  # paced (10 at 30 fps), not all at once


async def test_an_rtp_camera_passes_through_and_keyframe_requests_are_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The "camera": its own pipeline, sending H.264 over RTP to a UDP port (an IP camera does,
    # after RTSP). Ours depayloads it: no encoder, so nothing to ask for a keyframe.
    Gst, _ = import_gst()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    camera = Gst.parse_launch(
        "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1"
        " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15"
        " ! video/x-h264,profile=constrained-baseline"
        f" ! rtph264pay config-interval=-1 ! udpsink host=127.0.0.1 port={port}"
    )
    source = GstSource(
        f"udpsrc address=127.0.0.1 port={port} caps=application/x-rtp,media=video,"
        "encoding-name=H264,clock-rate=90000,payload=96 ! rtpjitterbuffer latency=50"
        " ! rtph264depay"
    )
    caplog.set_level(logging.INFO)
    camera.set_state(Gst.State.PLAYING)
    try:
        frames, task = await collect(source, 20)
        try:
            assert any(f.keyframe for f in frames)
            assert source.describe()["encoder"] == "none (passed through)"
            for _ in range(3):
                source.force_keyframe()
            said = [r for r in caplog.records if "no encoder to ask" in r.getMessage()]
            assert len(said) == 1
        finally:
            await stop(task)
    finally:
        camera.set_state(Gst.State.NULL)


def test_an_ip_camera_s_password_stays_out_of_the_log_and_status() -> None:
    source = GstSource(
        "rtspsrc location=rtsp://admin:s3cr%40t@192.168.1.20:554/h264 ! rtph264depay"
    )
    assert source.describe()["pipeline"] == (
        "rtspsrc location=rtsp://admin:***@192.168.1.20:554/h264 ! rtph264depay"
    )
    assert "s3cr" not in source.name
    assert redacted("souphttpsrc location=http://cam.lan/x.h264") == (
        "souphttpsrc location=http://cam.lan/x.h264"
    )


def test_gstreamer_is_found_from_the_system() -> None:
    Gst, GstVideo = import_gst()
    assert Gst.ElementFactory.find("x264enc") is not None
    assert GstVideo.video_event_new_upstream_force_key_unit is not None
