"""On a real Raspberry Pi (APPLIANCE_TEST_HARDWARE=1 sh tests/run.sh -m hardware): the Pi 4's
hardware H.264 encoder, a camera module through picamera2, and a USB microphone. Skipped
everywhere else."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from appliance import config
from appliance.capture import picamera
from appliance.capture.testsrc import TestPattern
from appliance.core import h264
from appliance.core.media import EncodedFrame
from appliance.encoders.v4l2m2m import M2MEncoder, is_h264_encoder

pytestmark = pytest.mark.hardware


def video(**extra: object) -> config.VideoConfig:
    values = {"video.width": 1280, "video.height": 720, "video.fps": 30, "video.gop": 60}
    return config.load(None, env={}, overrides={**values, **extra}).video


@pytest.mark.skipif(not is_h264_encoder("/dev/video11"), reason="no V4L2 M2M H.264 encoder (Pi 4)")
def test_pi4_encoder_makes_baseline_h264_and_forces_keyframes() -> None:
    import av

    cfg = video()
    encoder = M2MEncoder(cfg)
    pattern = TestPattern(cfg.width, cfg.height)
    out: list[EncodedFrame] = []
    try:
        for i in range(90):
            if i == 45:
                encoder.force_keyframe()
            frame = av.VideoFrame.from_ndarray(pattern.render(i, i), format="yuv420p")
            out += encoder.encode_frame(frame, i * 3000, i)
    finally:
        encoder.close()
    assert out[0].keyframe
    sps = h264.find_nal(out[0].data, h264.NAL_SPS)
    assert sps is not None and h264.profile_level_id(sps).startswith("42e0")
    keyframes = [i for i, f in enumerate(out) if f.keyframe]
    assert any(45 <= k <= 47 for k in keyframes), keyframes  # forced, not the GOP's (60)
    assert all(h264.find_nal(out[k].data, h264.NAL_SPS) for k in keyframes)  # inline SPS/PPS


@pytest.mark.skipif(not picamera.cameras(), reason="no camera module (picamera2)")
async def test_camera_module_streams_and_answers_keyframe_requests() -> None:
    source = picamera.PicameraSource(video(**{"video.source": "picamera2"}))
    frames: list[EncodedFrame] = []
    task = asyncio.create_task(source.run(frames.append))
    try:
        for _ in range(100):
            if len(frames) >= 30:
                break
            await asyncio.sleep(0.1)
        assert len(frames) >= 30 and frames[0].keyframe
        before = len(frames)
        source.force_keyframe()
        await asyncio.sleep(0.5)
        assert any(f.keyframe for f in frames[before:])
        names = {c.name for c in source.controls()}
        assert {"brightness", "exposure_time"} <= names
        source.set_controls({"brightness": 0.2})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.skipif(not os.path.exists("/dev/video0"), reason="no USB camera at /dev/video0")
def test_usb_camera_is_found_and_offers_a_mode() -> None:
    from appliance.capture.camera import find_camera
    from appliance.devices import v4l2 as dev

    node = find_camera()
    assert node is not None
    with dev.Device(node) as d:
        assert d.formats()
        assert d.controls()


@pytest.mark.skipif(not picamera.is_pi5(), reason="not a Raspberry Pi 5")
def test_pi5_has_no_h264_hardware_and_serve_picks_libx264() -> None:
    from appliance.capture.probe import probe

    report = probe(config.load(None, env={}))
    assert [e["name"] for e in report["encoders"] if e["hardware"]] == []
    assert report["selected"].get("encoder", "libx264").startswith("libx264")


def is_jetson() -> bool:
    from appliance.capture.probe import board

    return "jetson" in board().lower() or "nvidia" in board().lower()


@pytest.mark.skipif(not is_jetson(), reason="not a Jetson")
def test_jetson_probe_reports_nvenc_and_python() -> None:
    import sys

    from appliance.capture.probe import probe

    assert sys.version_info >= (3, 10)  # JetPack 6's Python
    report = probe(config.load(None, env={}))
    # NVENC is listed (reached through libv4l2's plugin, which the daemon does not drive yet:
    # CHECKLIST.md); the stream itself is encoded by libx264.
    assert any("NVENC" in e["name"] for e in report["encoders"])


def usb_microphone() -> str | None:
    """plughw:<card> of the first USB sound card that captures, from /proc/asound."""
    from appliance.capture.probe import sound_cards

    for card in sound_cards():
        if "usb" in card["name"].lower() or os.path.exists(
            f"/proc/asound/card{card['card']}/usbid"
        ):
            return f"plughw:{card['card']},0"
    return None


@pytest.mark.skipif(usb_microphone() is None, reason="no USB microphone")
async def test_usb_microphone_is_captured_in_real_time_and_encoded() -> None:
    from appliance.capture.alsa import AlsaSource
    from appliance.core.media import EncodedAudio
    from appliance.encoders.opus import OpusEncoder

    device = usb_microphone()
    assert device is not None
    audio = config.load(None, env={}, overrides={"audio.device": device}).audio
    source = AlsaSource(audio, OpusEncoder(audio))
    packets: list[EncodedAudio] = []
    task = asyncio.create_task(source.run(packets.append))
    try:
        await asyncio.sleep(3.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert 130 <= len(packets) <= 160, len(packets)  # 50 a second, in real time
    steps = {b.pts - a.pts for a, b in zip(packets, packets[1:], strict=False)}
    assert steps == {960}
    assert source.overruns == 0
