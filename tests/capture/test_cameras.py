"""Several cameras in one daemon ([[camera]]): each its own stream, supervisor, encoder, controls,
snapshot, status and metrics; one that fails never disturbs another. The cameras here are the
built-in test source and a V4L2 device that is not there; real V4L2 drivers (two vivid and a
v4l2loopback) are in tests/vm/test_cameras.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np

from appliance import config
from appliance.app import running
from tests.e2e.conftest import wait_until

CAMERAS = """
[[camera]]
name = "front"
source = "testsrc"
width = 320
height = 240
preset = "ultrafast"
[[camera]]
name = "back"
source = "testsrc"
width = 256
height = 144
preset = "ultrafast"
controls = {brightness = 60}
[[camera]]
name = "gone"
source = "v4l2"
device = "/dev/video-none"
[http]
host = "127.0.0.1"
port = 0
[audio]
source = "none"
[rtsp]
port = 0
"""


def settings(tmp_path: Path, text: str = CAMERAS) -> config.Config:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return config.load(path, env={}, overrides={"http.state_dir": str(tmp_path / "state")})


async def snapshot_luma(http: aiohttp.ClientSession, url: str) -> np.ndarray[Any, Any]:
    async with http.get(url) as r:
        assert r.status == 200, await r.text()
        jpeg = await r.read()
    [frame] = av.CodecContext.create("mjpeg", "r").decode(av.Packet(jpeg))
    return frame.reformat(format="gray").to_ndarray()


async def test_each_camera_is_its_own_stream(tmp_path: Path) -> None:
    async with running(settings(tmp_path)) as d, aiohttp.ClientSession() as http:
        assert [c.name for c in d.cameras] == ["front", "back", "gone"]

        async def pictures() -> bool:
            return all(d.streams.get(n).frames >= 10 for n in ("front", "back"))

        await wait_until(pictures, 30, "the test cameras sent no pictures", 0.05)
        async with http.get(f"{d.url}/api/status") as r:
            st = await r.json()
        streams = {s["name"]: s for s in st["streams"]}
        assert list(streams) == ["front", "back", "gone"]
        assert (streams["front"]["width"], streams["front"]["height"]) == (320, 240)
        assert (streams["back"]["width"], streams["back"]["height"]) == (256, 144)
        assert streams["front"]["state"] == streams["back"]["state"] == "live"
        assert st["stream"]["name"] == "front"  # the first camera, as a one-camera daemon's

        # The missing camera is down, says why, and is retried; the others never noticed.
        async def down() -> bool:
            async with http.get(f"{d.url}/api/status") as r:
                gone = next(s for s in (await r.json())["streams"] if s["name"] == "gone")
            return bool(gone["state"] == "down" and gone["source"]["restarts"] >= 1)

        await wait_until(down, 10, "the missing camera was not reported down", 0.1)
        async with http.get(f"{d.url}/api/status") as r:
            gone = next(s for s in (await r.json())["streams"] if s["name"] == "gone")
        assert gone["why"].startswith("/dev/video-none: no such device")
        async with http.get(f"{d.url}/healthz") as r:
            assert r.status == 503
            assert (await r.text()).startswith("camera gone: source down: /dev/video-none")

        # Snapshots are per camera, at each camera's size.
        assert (await snapshot_luma(http, f"{d.url}/front/snapshot.jpg")).shape == (240, 320)
        assert (await snapshot_luma(http, f"{d.url}/back/snapshot.jpg")).shape == (144, 256)

        # Controls are per camera: "back" started at its config's brightness; setting "front"
        # changes its picture and no other's.
        async with http.get(f"{d.url}/api/controls?camera=back") as r:
            assert [c["value"] for c in (await r.json())["controls"]] == [60]
        async with http.get(f"{d.url}/api/controls?camera=gone") as r:
            assert r.status == 503  # down: come back later
        async with http.get(f"{d.url}/api/controls?camera=attic") as r:
            assert r.status == 404
            assert (
                "no camera named 'attic'; cameras: front, back, gone" in (await r.json())["error"]
            )
        lower = slice(40, 200)  # below the stamp rows, above the clock
        front = float((await snapshot_luma(http, f"{d.url}/front/snapshot.jpg"))[lower].mean())
        back = float((await snapshot_luma(http, f"{d.url}/back/snapshot.jpg"))[40:120].mean())
        async with http.patch(f"{d.url}/api/controls?camera=front", json={"brightness": 220}) as r:
            assert r.status == 200, await r.text()
        await asyncio.sleep(0.5)  # a few pictures later
        front_after = (await snapshot_luma(http, f"{d.url}/front/snapshot.jpg"))[lower].mean()
        back_after = (await snapshot_luma(http, f"{d.url}/back/snapshot.jpg"))[40:120].mean()
        assert float(front_after) > front + 40, (front, front_after)
        assert abs(float(back_after) - back) < 3, (back, back_after)

        # Metrics carry every camera.
        async with http.get(f"{d.url}/metrics") as r:
            metrics = await r.text()
        assert 'appliance_source_up{stream="front"} 1' in metrics
        assert 'appliance_source_up{stream="gone"} 0' in metrics

    # Each camera keeps its own settings: the first where a one-camera daemon kept them.
    state = tmp_path / "state"
    assert (state / "controls.json").read_text().strip() == '{\n "brightness": 220\n}'
    assert not (state / "controls-back.json").exists()  # never changed through the API


async def test_streams_list_for_the_pages(tmp_path: Path) -> None:
    text = CAMERAS + (
        "[auth]\npublic_read = false\n"
        '[[auth.tokens]]\ntoken = "front-viewer-token-0123"\nstreams = ["front"]\n'
        '[[auth.tokens]]\ntoken = "the-admin-token-0123456"\nrights = ["admin"]\n'
    )
    async with running(settings(tmp_path, text)) as d, aiohttp.ClientSession() as http:
        async with http.get(f"{d.url}/api/streams") as r:
            assert r.status == 401  # no token, nothing public
            assert r.headers["WWW-Authenticate"].startswith('Bearer realm="appliance"')
        viewer = {"Authorization": "Bearer front-viewer-token-0123"}
        async with http.get(f"{d.url}/api/streams", headers=viewer) as r:
            listed = await r.json()
        assert listed["admin"] is False
        assert [s["name"] for s in listed["streams"]] == ["front"]  # only what it may watch
        [front] = listed["streams"]
        host = d.url.split("//")[1].rsplit(":", 1)[0]
        assert front["urls"] == {
            "page": "/front/",
            "whep": "/front/whep",
            "snapshot": "/front/snapshot.jpg",
            "rtsp": f"rtsp://{host}:{d.rtsp.port}/front",
        }
        assert "source" not in front  # a viewer does not see the device's details
        admin = {"Authorization": "Bearer the-admin-token-0123456"}
        async with http.get(f"{d.url}/api/streams", headers=admin) as r:
            listed = await r.json()
        assert listed["admin"] is True
        assert [s["name"] for s in listed["streams"]] == ["front", "back", "gone"]
        async with http.get(f"{d.url}/api/health", headers=viewer) as r:
            assert r.status == 403

        async def warned() -> bool:  # the down camera's error, among the recent warnings
            async with http.get(f"{d.url}/api/health", headers=admin) as r:
                health = await r.json()
            return any("camera gone: video source" in w["message"] for w in health["warnings"])

        await wait_until(warned, 10, "the camera's error is not among the warnings", 0.1)
        async with http.get(f"{d.url}/api/health", headers=admin) as r:
            health = await r.json()
        assert health["daemon_uptime_s"] > 0 and health["memory"]["total"] > 0
        assert health["disk"]["free"] > 0 and health["memory"]["daemon_rss"] > 10_000_000
        assert {w["level"] for w in health["warnings"]} <= {"warning", "error"}
