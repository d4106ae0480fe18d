"""WHIP and WHEP clients other people wrote, as their authors publish them on npm, against the
daemon: in headless Chromium on a page from another origin (every request cross-origin, as from a
site that embeds the camera), and in Node on werift (WebRTC in pure TypeScript): a WHEP viewer,
and Eyevinn's WHIP client publishing what FFmpeg's RTP muxer encodes. (@roamhq/wrtc, Node's
libwebrtc, has no H.264: the daemon answers its offer 406, as it should.)

tests/run.sh installs them (tests/e2e/npm: `npm ci`, pinned by its package-lock.json) and bundles
the browser's share with esbuild into tests/e2e/npm/dist/peers.js. Each case checks what the
client decoded (size, and the test source's capture-time stamp where it is the daemon's camera),
what the client did with the daemon's answers (ETag, trickle PATCH, ICE restart), and that it
ended its session with DELETE.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiohttp import web

from appliance.capture.testsrc import read_stamp
from tests.e2e.conftest import DaemonFactory, wait_ready, wait_until
from tests.e2e.peers import FAKE_CAMERA, AiortcViewer, another_origin, chromium
from tests.e2e.test_peers import FFMPEG_WHIP, watch_ffmpeg_greys
from tests.e2e.test_whip import (
    ADMIN,
    PUBLISH,
    READ,
    TOKENS,
    status,
    wait_published,
    wait_publisher_gone,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NPM = Path(__file__).with_name("npm")
BUNDLE = NPM / "dist" / "peers.js"
NODE = "node"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    assert BUNDLE.is_file() and (NPM / "node_modules").is_dir(), (
        "the npm peers are not installed: tests/run.sh runs npm ci and esbuild in tests/e2e/npm"
    )


def harness_origin() -> AbstractAsyncContextManager[str]:
    """tests/e2e/npm served on its own port: another origin than the daemon's."""
    app = web.Application()
    app.router.add_static("/", NPM)
    return another_origin(app)


@asynccontextmanager
async def daemon_and_page(daemon: DaemonFactory, *chromium_args: str) -> AsyncIterator[Any]:
    """A daemon with tokens, and Chromium's harness page from another origin: (daemon, page)."""
    async with (
        daemon(**{"auth.tokens": TOKENS}) as d,
        harness_origin() as origin,
        chromium(*chromium_args) as browser,
    ):
        page = await browser.new_page()
        await page.goto(f"{origin}/harness.html")
        await page.wait_for_function("window.harnessReady === true", timeout=20_000)
        yield d, page


async def seen(page: Any) -> dict[str, Any]:
    return dict(await page.evaluate("() => JSON.parse(JSON.stringify(window.seen))"))


async def requests(page: Any) -> list[dict[str, Any]]:
    return list(await page.evaluate("() => JSON.parse(JSON.stringify(window.requests))"))


async def wait_frames(page: Any, count: int, timeout: float = 20) -> None:
    await page.wait_for_function(
        f"window.seen && window.seen.frames >= {count}", timeout=timeout * 1000, polling=100
    )


async def viewers(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    return list((await status(http, url, ADMIN))["viewers"])


def assert_live_camera(view: dict[str, Any]) -> None:
    """The daemon's test source, decoded: its size, and its stamp read back from the picture."""
    assert (view["width"], view["height"]) == (640, 360), view
    assert len(view["latencies"]) >= 10, view
    assert 0 < statistics.median(view["latencies"]) < 1000, view["latencies"]


async def test_medooze_whep_client_views_trickles_and_survives_a_refused_ice_restart(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_and_page(daemon) as (d, page):
        await wait_ready(d)
        await page.evaluate(
            """async ({daemon, token}) => {
                const video = await window.watch(daemon);
                const pc = new RTCPeerConnection({iceServers: []});
                pc.addTransceiver("video", {direction: "recvonly"});
                pc.addTransceiver("audio", {direction: "recvonly"});
                const stream = new MediaStream();
                pc.ontrack = (event) => {
                    stream.addTrack(event.track);
                    video.srcObject = stream;
                    video.play().catch(() => {});
                };
                window.client = new window.peers.WHEPClient();
                await window.client.view(pc, `${daemon}/cam/whep`, token);
            }""",
            {"daemon": d.url, "token": READ},
        )
        await wait_frames(page, 30)
        assert_live_camera(await seen(page))
        made = await requests(page)
        assert [r["status"] for r in made if r["method"] == "POST"] == [201]
        # It trickles its candidates after the POST (no If-Match: it never reads the ETag).
        patches = [r for r in made if r["method"] == "PATCH"]
        assert patches and all(r["status"] == 204 for r in patches), made

        # Its ICE restart (PATCH, If-Match: *, new credentials) is refused with 422, as RFC 9725
        # says for a server that takes trickle but not restarts: restart() rejects, and the
        # session goes on as it was.
        refused = await page.evaluate(
            "async () => { try { await window.client.restart(); return 'done'; }"
            " catch (e) { return String(e); } }"
        )
        assert "422" in refused, refused
        before = (await seen(page))["frames"]
        await wait_frames(page, before + 30)
        assert len(await viewers(http, d.url)) == 1

        await page.evaluate("async () => { await window.client.stop(); }")
        deletes = [r for r in await requests(page) if r["method"] == "DELETE"]
        assert [r["status"] for r in deletes] == [200]
        assert await viewers(http, d.url) == []


async def test_eyevinn_webrtc_player_plays_from_another_origin_and_deletes_on_unload(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_and_page(daemon) as (d, page):
        await wait_ready(d)
        await page.evaluate(
            """async ({daemon, token}) => {
                const video = await window.watch(daemon);
                window.player = new window.peers.WebRTCPlayer({
                    video, type: "whep", iceServers: [],
                });
                // Its authKey is the whole Authorization value.
                await window.player.load(new URL(`${daemon}/cam/whep`), `Bearer ${token}`);
                video.play().catch(() => {});
            }""",
            {"daemon": d.url, "token": READ},
        )
        await wait_frames(page, 30)
        assert_live_camera(await seen(page))
        posts = [r for r in await requests(page) if r["method"] == "POST"]
        assert [r["status"] for r in posts] == [201]  # no fallback to its server-offer mode
        [viewer] = await viewers(http, d.url)
        assert viewer["audio"] is not None  # it asked for sound too, and got it

        await page.evaluate("async () => { await window.player.unload(); }")

        async def gone() -> bool:
            return await viewers(http, d.url) == []

        await wait_until(gone, 10, "the player's session outlived its unload()")
        assert [r["status"] for r in await requests(page) if r["method"] == "DELETE"] == [200]


async def test_eyevinn_whip_client_publishes_from_another_origin_with_trickle(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon_and_page(daemon, *FAKE_CAMERA) as (d, page):
        await page.evaluate(
            """async ({daemon, token}) => {
                const media = await navigator.mediaDevices.getUserMedia(
                    {video: {width: 640, height: 360}, audio: false});
                window.client = new window.peers.WHIPClient({
                    endpoint: `${daemon}/door/whip`,
                    opts: {authkey: token, iceServers: [], debug: false},
                });
                await window.client.ingest(media);
            }""",
            {"daemon": d.url, "token": PUBLISH},
        )
        await wait_published(http, d.url, "door", ADMIN)
        viewer = AiortcViewer(http, f"{d.url}/door/whep", READ)
        try:
            await viewer.connect()
            frames = await viewer.frames(10)
            assert {(f.width, f.height) for f in frames} == {(640, 360)}
        finally:
            await viewer.close()
        made = await requests(page)
        # OPTIONS first: it reads Access-Control-Allow-Methods for PATCH, and so trickles.
        assert [r["status"] for r in made if r["method"] == "OPTIONS"] == [204]
        assert [r["status"] for r in made if r["method"] == "POST"] == [201]
        # Each candidate in a PATCH that carries its non-standard ETag request header: the
        # preflight allows it, and the daemon takes the candidate.
        patches = [r for r in made if r["method"] == "PATCH"]
        assert patches, made
        assert all(r["status"] == 204 and "ETag" in r["headers"] for r in patches), patches

        await page.evaluate("async () => { await window.client.destroy(); }")

        await wait_publisher_gone(http, d.url, "door", ADMIN)
        assert [r["status"] for r in await requests(page) if r["method"] == "DELETE"] == [200]


async def test_a_node_viewer_on_werift_receives_what_pyav_decodes_and_deletes(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    """werift (WebRTC in pure TypeScript) does ICE, DTLS, SRTP and depacketizes H.264 itself; it
    writes the Annex B stream out, and PyAV decodes it here: the test source's size and its
    capture-time stamp, read back from the pictures."""
    node = shutil.which(NODE)
    assert node is not None, "node is not installed (tests/run.sh installs nodejs)"
    async with daemon(**{"auth.tokens": TOKENS}) as d:
        await wait_ready(d)
        started_ms = time.time() * 1000
        process = await asyncio.create_subprocess_exec(
            node, "whep_viewer.mjs", f"{d.url}/cam/whep", READ, "4",
            cwd=NPM, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        report = json.loads(err.decode().strip().splitlines()[-1])
        assert report["post"] == 201 and report["etag"] and report["del"] == 200, report
        assert report["packets"] > 30, report

        codec = av.CodecContext.create("h264", "r")
        pictures = [f for packet in codec.parse(out) for f in codec.decode(packet)]
        assert len(pictures) >= 60, len(pictures)  # 4 s at 30 fps, from its first keyframe
        assert {(p.width, p.height) for p in pictures} == {(640, 360)}
        stamps = [read_stamp(p.to_ndarray(format="gray"), 640) for p in pictures]
        readable = [s for s in stamps if s is not None]
        assert len(readable) >= len(pictures) * 0.9
        assert readable == sorted(readable)  # capture times, in order
        assert 0 <= (readable[0] - int(started_ms)) % 2**32 < 10_000  # taken since we started
        assert await viewers(http, d.url) == []


async def test_eyevinn_whip_client_in_node_on_werift_publishes_to_viewers(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    """Eyevinn's WHIP client outside a browser, as its authors allow (`peerConnectionFactory`),
    on werift: FFmpeg's RTP muxer feeds it H.264, werift sends it with its own SRTP."""
    node = shutil.which(NODE)
    assert node is not None, "node is not installed (tests/run.sh installs nodejs)"
    async with daemon(**{"auth.tokens": TOKENS}) as d:
        publisher = await asyncio.create_subprocess_exec(
            node, "whip_publisher.mjs", f"{d.url}/door/whip", PUBLISH, "8",
            cwd=NPM, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert publisher.stdout is not None
        line = await asyncio.wait_for(publisher.stdout.readline(), 20)
        port = json.loads(line)["port"]
        encoder = await asyncio.create_subprocess_exec(
            sys.executable, str(FFMPEG_WHIP), f"rtp://127.0.0.1:{port}", "10", "--rtp",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await wait_published(http, d.url, "door", ADMIN)
        await watch_ffmpeg_greys(http, f"{d.url}/door/whep")
        out, err = await asyncio.wait_for(publisher.communicate(), 30)
        assert publisher.returncode == 0, err.decode()
        report = json.loads(out.decode().strip().splitlines()[-1])
        assert report["state"] in ("connected", "completed") and report["forwarded"] > 100, report
        assert report["resource"].startswith(f"{d.url}/door/whip/") and report["etag"], report
        await asyncio.wait_for(encoder.wait(), 30)

        await wait_publisher_gone(http, d.url, "door", ADMIN)
