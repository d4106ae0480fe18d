"""The device's pages in headless Debian Chromium (Playwright), against a real daemon with three
cameras (two test sources and one whose device is missing): the home page, a stream's page with
its tools, controls and health, what a read-only token sees, and publish.html's reasons.

Screenshots at desktop and phone sizes are kept in $APPLIANCE_ARTIFACTS/pages (default
`.artifacts/pages` in the checkout) for a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance import config
from appliance.app import Running, running
from tests.capture.test_cameras import CAMERAS as THREE_CAMERAS
from tests.e2e.conftest import wait_until
from tests.e2e.peers import another_origin, chromium

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ARTIFACTS = Path(os.environ.get("APPLIANCE_ARTIFACTS", Path(__file__).parents[2] / ".artifacts"))
ADMIN = "the-admin-token-0123456"
VIEWER = "front-viewer-token-0123"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# The three cameras of tests/capture/test_cameras.py, with an admin and a one-stream viewer
CAMERAS = (
    THREE_CAMERAS
    + """
[auth]
public_read = PUBLIC
[[auth.tokens]]
token = "ADMIN"
rights = ["admin"]
[[auth.tokens]]
token = "VIEWER"
streams = ["front"]
"""
)


def camera_config(public: bool) -> str:
    text = CAMERAS.replace("PUBLIC", str(public).lower())
    return text.replace('"ADMIN"', f'"{ADMIN}"').replace('"VIEWER"', f'"{VIEWER}"')


@contextlib.asynccontextmanager
async def three_cameras(tmp_path: Path, public: bool = True) -> AsyncIterator[Running]:
    path = tmp_path / "appliance.toml"
    path.write_text(camera_config(public))
    cfg = config.load(path, env={}, overrides={"http.state_dir": str(tmp_path / "state")})
    async with running(cfg) as d:

        async def pictures() -> bool:
            return all(d.streams.get(n).ready for n in ("front", "back"))

        await wait_until(pictures, 30, "the test cameras sent no pictures", 0.05)
        yield d


class Console:
    """The page's console errors and uncaught exceptions: a page that works has none."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))


async def wait_for(page: Any, expression: str, timeout: float = 30.0) -> None:
    await page.wait_for_function(expression, timeout=timeout * 1000, polling=100)


async def shoot(page: Any, name: str) -> None:
    ARTIFACTS.joinpath("pages").mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "pages" / f"{name}.png"))


async def fits_the_width(page: Any) -> list[str]:
    """What sticks out sideways (a phone would scroll the whole page): nothing, on a good page."""
    return list(
        await page.evaluate(
            """() => [...document.querySelectorAll("body *")]
                .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
                .filter((e) => e.getClientRects().length)
                .map((e) => `${e.tagName}#${e.id}.${e.className} in ${e.parentElement.className}`
                  + ` ${e.getBoundingClientRect().right}`)"""
        )
    )


MEAN_LUMA = """() => {
  const video = document.getElementById("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const g = canvas.getContext("2d");
  g.drawImage(video, 0, 0);
  const rows = g.getImageData(0, 40, canvas.width, 160).data;
  let sum = 0;
  for (let i = 0; i < rows.length; i += 4) sum += 0.299 * rows[i] + 0.587 * rows[i + 1] + 0.114 * rows[i + 2];
  return sum / (rows.length / 4);
}"""


async def test_home_page_lists_every_stream_with_a_picture(tmp_path: Path) -> None:
    async with three_cameras(tmp_path) as d, chromium() as browser:
        for size, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
            page = await browser.new_page()
            console = Console(page)
            await page.set_viewport_size(size)
            await page.goto(f"{d.url}/")
            await wait_for(page, "window.page && window.page.view === 'home'")
            await wait_for(
                page,
                "[...document.querySelectorAll('.card img')]"
                ".filter((i) => i.complete && i.naturalWidth > 0).length === 2",
            )
            cards = await page.eval_on_selector_all(
                ".card",
                "cards => cards.map(c => ({name: c.dataset.stream, href: c.getAttribute('href'),"
                " state: c.querySelector('.badge').textContent,"
                " why: c.querySelector('.why').textContent,"
                " picture: c.querySelector('img') ? c.querySelector('img').naturalWidth : 0}))",
            )
            assert [c["name"] for c in cards] == ["front", "back", "gone"]
            assert [c["href"] for c in cards] == ["/front/", "/back/", "/gone/"]
            assert [c["state"] for c in cards] == ["live", "live", "down"]
            assert [c["picture"] for c in cards] == [320, 256, 0]  # each its own picture
            assert cards[2]["why"].startswith("/dev/video-none: no such device")
            assert await fits_the_width(page) == []
            await shoot(page, f"home-{label}")
            assert console.errors == []
            # The card leads to the stream's page, which plays it.
            await page.click(".card[data-stream=back]")
            await wait_for(page, "window.viewer && window.viewer.framesPresented >= 5")
            assert (await page.evaluate("() => window.viewer.width")) == 256
            await page.close()


async def test_stream_page_tools_controls_and_health(tmp_path: Path) -> None:
    async with three_cameras(tmp_path) as d, chromium() as browser:
        page = await browser.new_page()
        console = Console(page)
        await page.set_viewport_size(DESKTOP)
        await page.goto(f"{d.url}/front/#token={ADMIN}")
        await wait_for(page, "window.viewer && window.viewer.framesPresented >= 10")
        assert "token" not in page.url  # the fragment is kept in the tab, not in the address

        # The URLs to copy.
        await wait_for(page, "document.querySelectorAll('#link-rows input').length === 4")
        links = await page.eval_on_selector_all(
            "#link-rows .row", "rows => rows.map(r => r.querySelector('input').value)"
        )
        host = d.url.split("//")[1].rsplit(":", 1)[0]
        assert links == [
            f"{d.url}/front/whep",
            f"rtsp://{host}:{d.rtsp.port}/front",
            f"{d.url}/front/snapshot.jpg",
            f"{d.url}/front/",
        ]

        # Stats on request.
        assert not await page.is_visible("#overlay")
        await page.click("#stats")
        await wait_for(page, "document.getElementById('overlay').textContent.includes('320×240')")

        # Fullscreen, and back.
        await page.click("#fullscreen")
        await wait_for(
            page, "document.fullscreenElement && document.fullscreenElement.id === 'stage'"
        )
        await page.click("#fullscreen")
        await wait_for(page, "document.fullscreenElement === null")

        # Snapshot: a JPEG download named after the stream.
        async with page.expect_download() as info:
            await page.click("#snapshot")
        download = await info.value
        assert download.suggested_filename.startswith("front-")
        assert download.suggested_filename.endswith(".jpg")
        jpeg = await asyncio.to_thread(Path(await download.path()).read_bytes)
        assert jpeg[:2] == b"\xff\xd8" and len(jpeg) > 1000

        # The controls, built from the daemon's list; a change shows in the decoded picture.
        slider = "[data-control=brightness] input[type=range]"
        await page.wait_for_selector(slider)
        attrs = await page.eval_on_selector(slider, "s => [s.min, s.max, s.step, s.value]")
        assert attrs == ["0", "255", "1", "128"]
        before = await page.evaluate(MEAN_LUMA)
        await page.fill(slider, "230")
        await wait_for(page, f"({MEAN_LUMA})() > {before + 40}")
        async with page.expect_response(
            lambda r: "/api/controls" in r.url and r.request.method == "PATCH"
        ):
            number = "[data-control=brightness] input[type=number]"
            await page.fill(number, "999")
            await page.dispatch_event(number, "change")
        error = "[data-control=brightness] .error"
        await wait_for(page, f"document.querySelector('{error}').textContent !== ''")
        assert await page.inner_text(error) == "brightness takes 0 to 255; got 999"
        assert await page.eval_on_selector(slider, "s => s.value") == "230"  # what the camera has

        # Health, for an admin.
        await wait_for(page, "window.page.health !== null")
        assert await page.is_visible("#health-badge")
        await page.click("#health summary")
        health = await page.inner_text("#health-body")
        assert "Memory" in health and "Disk" in health and "Up" in health
        assert "camera gone: video source" in health  # the down camera's error, among warnings
        await shoot(page, "stream-desktop")
        await page.set_viewport_size(PHONE)
        assert await fits_the_width(page) == []
        await shoot(page, "stream-phone")
        console_errors = console.errors
        # the refused 999 is a 400 the browser itself reports; nothing else may be there
        assert [e for e in console_errors if "400 (Bad Request)" not in e] == [], console_errors
        assert len(console_errors) <= 1


async def test_read_only_token_sees_the_stream_and_no_controls(tmp_path: Path) -> None:
    async with three_cameras(tmp_path, public=False) as d, chromium() as browser:
        page = await browser.new_page()
        console = Console(page)
        # At /, a token that may watch one stream gets that stream.
        await page.goto(f"{d.url}/#token={VIEWER}")
        await wait_for(page, "window.viewer && window.viewer.framesPresented >= 5")
        state = await page.evaluate(
            "() => ({view: page.view, stream: page.stream, admin: page.admin})"
        )
        assert state == {"view": "stream", "stream": "front", "admin": False}
        await wait_for(page, "document.querySelectorAll('#link-rows input').length === 4")
        assert not await page.is_visible("#controls")
        assert not await page.is_visible("#health")
        assert not await page.is_visible("#health-badge")
        assert console.errors == []
        await shoot(page, "stream-read-only")


async def test_publish_page_says_why_it_has_no_camera(tmp_path: Path) -> None:
    async with three_cameras(tmp_path) as d:
        port = d.url.rsplit(":", 1)[1]
        # Another machine's view: a name, over plain HTTP, is not a secure context.
        async with chromium("--host-resolver-rules=MAP camera.test 127.0.0.1") as browser:
            page = await browser.new_page()
            await page.goto(f"http://camera.test:{port}/web/publish.html")
            await wait_for(page, "window.publisher && window.publisher.state === 'no camera'")
            assert await page.evaluate("() => window.publisher.reason") == "insecure"
            text = await page.inner_text("#status")
            assert "only over HTTPS or on localhost" in text
            assert "http.tls_self_signed = true" in text
            assert f"https://camera.test:{port}/web/publish.html" in text
            await shoot(page, "publish-insecure")


async def test_pages_from_another_origin_with_a_token(tmp_path: Path) -> None:
    """The daemon's pages served by another site (its own copy of index.html, the daemon's
    modules), pointed at the device with ?device=, allowed by http.cors_origins."""
    from aiohttp import web

    served: dict[str, str] = {}

    async def page_handler(request: web.Request) -> web.Response:
        return web.Response(text=served["index"], content_type="text/html")

    other = web.Application()
    other.router.add_get("/{tail:.*}", page_handler)
    async with another_origin(other) as origin:
        path = tmp_path / "appliance.toml"
        text = camera_config(public=False)
        path.write_text(text.replace("[http]\n", f'[http]\ncors_origins = ["{origin}"]\n'))
        cfg = config.load(path, env={}, overrides={"http.state_dir": str(tmp_path / "state")})
        async with running(cfg) as d, chromium() as browser:
            index = (Path(__file__).parents[2] / "web/index.html").read_text()
            served["index"] = index.replace('"/web/', f'"{d.url}/web/')

            async def pictures() -> bool:
                return all(d.streams.get(n).ready for n in ("front", "back"))

            await wait_until(pictures, 30, "the test cameras sent no pictures", 0.05)
            page = await browser.new_page()
            console = Console(page)
            await page.goto(f"{origin}/?device={d.url}#token={ADMIN}")
            await wait_for(
                page,
                "[...document.querySelectorAll('.card img')]"
                ".filter((i) => i.complete && i.naturalWidth > 0).length === 2",
            )
            href = await page.get_attribute(".card[data-stream=front]", "href")
            assert href == f"/front/?device={d.url.replace(':', '%3A').replace('/', '%2F')}"
            await page.click(".card[data-stream=front]")
            await wait_for(page, "window.viewer && window.viewer.framesPresented >= 5")
            await page.wait_for_selector("[data-control=brightness] input[type=range]")
            assert page.url.startswith(origin)  # the other site's page, the device's data
            assert console.errors == []
