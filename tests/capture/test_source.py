"""The source supervisor and the controls API, through a running daemon on loopback (no WebRTC)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from appliance import config
from appliance.app import running
from appliance.capture.sources import SourceSlot


def settings(state: Path, **extra: Any) -> config.Config:
    values = {
        "http.host": "127.0.0.1", "http.port": 0, "video.width": 320, "video.height": 240,
        "http.state_dir": str(state),
    }  # fmt: skip
    return config.load(None, env={}, overrides={**values, **extra})


async def test_a_missing_camera_keeps_the_daemon_up_and_says_why(tmp_path: Path) -> None:
    async with running(
        settings(tmp_path, **{"video.source": "v4l2", "video.device": "/dev/video-none"})
    ) as d:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(f"{d.url}/api/status") as r:
                    source = (await r.json())["source"]
                if source["restarts"] >= 1:
                    break
                await asyncio.sleep(0.05)
            assert source["running"] is False
            assert source["last_error"].startswith("/dev/video-none: no such device")
            async with http.get(f"{d.url}/healthz") as r:
                assert r.status == 503
            async with http.get(f"{d.url}/api/controls") as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "2"
                assert (await r.json())["error"] == "the camera is not running (restarting?)"
            async with http.post(
                f"{d.url}/cam/whep", data="v=0\r\n", headers={"Content-Type": "application/sdp"}
            ) as r:
                assert r.status == 503  # no picture yet: a viewer is told to come back


async def test_controls_api_on_the_test_source(tmp_path: Path) -> None:
    async with running(settings(tmp_path, **{"video.source": "testsrc"})) as d:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                if d.source.current is not None:
                    break
                await asyncio.sleep(0.05)
            async with http.get(f"{d.url}/api/controls") as r:
                assert r.status == 200
                assert await r.json() == {
                    "controls": [
                        {
                            "name": "brightness",
                            "type": "int",
                            "value": 128,
                            "default": 128,
                            "min": 0,
                            "max": 255,
                            "step": 1,
                        }
                    ]
                }
            for bad, message in [
                ({"brightness": 999}, "brightness takes 0 to 255; got 999"),
                ({"brightness": 1, "contrast": 1}, "no control named 'contrast'"),
            ]:
                async with http.patch(f"{d.url}/api/controls", json=bad) as r:
                    assert r.status == 400
                    assert message in (await r.json())["error"]
            assert d.source.current.controls()[0].value == 128  # all or none: nothing was set
            async with http.patch(f"{d.url}/api/controls", data="brightness=1") as r:
                assert r.status == 415
            for body in ("[1]", "{}", "{nope"):
                headers = {"Content-Type": "application/json"}
                async with http.patch(f"{d.url}/api/controls", data=body, headers=headers) as r:
                    assert r.status == 400, body
            async with http.get(f"{d.url}/api/status") as r:
                source = (await r.json())["source"]
            assert source["kind"] == "testsrc" and source["running"] is True
            assert source["mode"] == {"width": 320, "height": 240, "fps": 30}


async def test_snapshot_is_the_newest_picture_as_jpeg(tmp_path: Path) -> None:
    import time

    import av
    import numpy as np

    from appliance.capture.testsrc import read_stamp

    async with running(settings(tmp_path, **{"video.source": "testsrc", "video.gop": 30})) as d:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                if d.stream.frames >= 20:
                    break
                await asyncio.sleep(0.05)
            async with http.get(f"{d.url}/cam/snapshot.jpg") as r:
                assert r.status == 200 and r.content_type == "image/jpeg"
                assert r.headers["Cache-Control"] == "no-store"
                jpeg = await r.read()
            asked = time.time_ns() // 1_000_000
            frames = av.CodecContext.create("mjpeg", "r").decode(av.Packet(jpeg))
            picture = frames[0].reformat(format="gray").to_ndarray()
            assert picture.shape == (240, 320)
            stamp = read_stamp(picture, 320)  # the test source's capture time, read back
            assert stamp is not None and 0 <= (asked - stamp) % 2**32 < 1000
            assert float(np.std(picture)) > 10  # a picture, not a blank
            async with http.get(f"{d.url}/garage/snapshot.jpg") as r:
                assert r.status == 404


def test_camera_settings_are_kept_in_the_state_directory(tmp_path: Path, caplog: Any) -> None:
    saved = tmp_path / "controls.json"
    saved.write_text('{"brightness": 220, "white_balance_automatic": false}')
    assert SourceSlot(saved).wanted_controls == {
        "brightness": 220,
        "white_balance_automatic": False,
    }
    saved.write_text("[1, 2")  # torn by a power cut: ignored, said, nothing breaks
    assert SourceSlot(saved).wanted_controls == {}
    assert "camera settings in" in caplog.text and "ignored" in caplog.text
    assert SourceSlot(tmp_path / "none.json").wanted_controls == {}


def test_config_controls_are_the_base_and_only_api_values_are_kept(tmp_path: Path) -> None:
    saved = tmp_path / "controls.json"
    saved.write_text('{"brightness": 220}')
    slot = SourceSlot(saved, {"brightness": 140, "contrast": 40})
    assert slot.wanted_controls == {"brightness": 220, "contrast": 40}  # the API's value wins

    from appliance.capture.testsrc import TestSource
    from appliance.encoders.software import X264Encoder

    video = config.VideoConfig(width=320, height=240)
    slot.current = TestSource(320, 240, 30, X264Encoder(video), slot.wanted_controls)
    slot.set_controls({"brightness": 90})
    # the file holds what was set through the API, not the config's values: a config changed
    # later is not masked by old state
    assert json.loads(saved.read_text()) == {"brightness": 90}
    assert slot.wanted_controls == {"brightness": 90, "contrast": 40}
