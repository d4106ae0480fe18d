"""The viewer page in headless Debian Chromium (Playwright), against a real daemon."""

from __future__ import annotations

import asyncio
import socket
import statistics
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from appliance.devices import clock
from tests.e2e.conftest import DaemonFactory, wait_ready, wait_until
from tests.e2e.peers import another_origin, chromium

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def wait_for(page, expression: str, timeout: float = 20.0) -> None:
    await page.wait_for_function(expression, timeout=timeout * 1000, polling=100)


async def viewer_state(page) -> dict:
    return await page.evaluate("() => JSON.parse(JSON.stringify(window.viewer))")


async def viewers(http: aiohttp.ClientSession, url: str) -> list[dict]:
    async with http.get(f"{url}/api/status") as response:
        return (await response.json())["viewers"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_page_plays_live_video_with_stamp_latency(daemon: DaemonFactory, http) -> None:
    async with daemon(**{"video.width": 1280, "video.height": 720}) as d, chromium() as browser:
        await wait_ready(d)
        page = await browser.new_page()
        await page.goto(f"{d.url}/")
        await wait_for(page, "window.viewer && window.viewer.framesPresented >= 60")
        state = await viewer_state(page)
        assert (state["width"], state["height"]) == (1280, 720)
        assert state["state"] == "connected"
        assert state["firstFrameMs"] is not None and state["firstFrameMs"] > 0
        latencies = state["latencies"]
        assert len(latencies) >= 30, state
        assert 0 < statistics.median(latencies) < 1000, latencies
        assert len(await viewers(http, d.url)) == 1
        overlay = await page.inner_text("#overlay")
        assert "1280×720" in overlay
        # The page says when the device's clock is not set, as the daemon's status does (this
        # machine's clock: unsynchronised in a container, synchronised where timesyncd runs).
        await wait_for(page, "window.viewer.clockSynchronised !== undefined")
        assert await page.is_visible("#clock") is (clock.synchronised() is False)


async def test_page_on_another_origin_plays_and_deletes_on_unload(
    daemon: DaemonFactory, http
) -> None:
    async with daemon() as d, chromium() as browser:
        await wait_ready(d)
        # A page served from a different origin (another port) that uses the daemon's viewer
        # module and WHEP endpoint: CORS must allow both.
        html = f"""<!doctype html><video id=video muted autoplay playsinline></video>
<div id=status></div><div id=overlay></div>
<script type=module>
import {{ startViewer }} from "{d.url}/web/viewer.js";
startViewer({{video: document.getElementById("video"), overlay: document.getElementById("overlay"),
              status: document.getElementById("status"), url: "{d.url}/cam/whep"}});
</script>"""

        async def page_handler(request: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        other = web.Application()
        other.router.add_get("/", page_handler)
        async with another_origin(other) as origin:
            page = await browser.new_page()
            await page.goto(f"{origin}/")
            await wait_for(page, "window.viewer && window.viewer.framesPresented >= 15")
            state = await viewer_state(page)
            assert (state["width"], state["height"]) == (640, 360)
            assert len(await viewers(http, d.url)) == 1
            await page.close(run_before_unload=True)
            for _ in range(50):
                if not await viewers(http, d.url):
                    break
                await asyncio.sleep(0.1)
            assert await viewers(http, d.url) == []


async def test_page_reconnects_after_daemon_restart(daemon: DaemonFactory) -> None:
    port = free_port()
    async with chromium() as browser:
        page = await browser.new_page()
        async with daemon(**{"http.port": port}) as d:
            await wait_ready(d)
            await page.goto(f"{d.url}/")
            await wait_for(page, "window.viewer && window.viewer.framesPresented >= 10")
        await wait_for(page, "window.viewer.state === 'retrying'")
        before = (await viewer_state(page))["framesPresented"]
        async with daemon(**{"http.port": port}) as d:
            await wait_ready(d)
            await wait_for(page, f"window.viewer.framesPresented >= {before + 10}", timeout=30)
            state = await viewer_state(page)
            assert state["state"] == "connected"
            assert state["sessions"] >= 2


async def test_main_profile_stream_plays_where_the_browser_offers_main(
    daemon: DaemonFactory, http
) -> None:
    """A Main-profile stream (a UVC camera's own H.264, or video.profile = "main") is answered with
    Main to a browser that offers it: Chromium offers 4d001f."""
    async with daemon(**{"video.profile": "main"}) as d, chromium() as browser:
        await wait_ready(d)
        assert d.stream.profile_level_id is not None
        assert d.stream.profile_level_id.startswith("4d00")
        page = await browser.new_page()
        await page.goto(f"{d.url}/")
        await wait_for(page, "window.viewer && window.viewer.framesPresented >= 30")
        state = await viewer_state(page)
        assert (state["width"], state["height"]) == (640, 360)
        assert len(await viewers(http, d.url)) == 1


async def test_protected_stream_asks_for_a_token_then_plays(daemon: DaemonFactory) -> None:
    token = "0123456789abcdef0123"
    tokens = [{"name": "family", "token": token, "rights": ["read"]}]
    async with (
        daemon(**{"auth.public_read": False, "auth.tokens": tokens}) as d,
        chromium() as browser,
    ):
        await wait_ready(d)
        page = await browser.new_page()
        await page.goto(f"{d.url}/")
        await wait_for(page, "window.viewer && window.viewer.state === 'unauthorized'")
        assert await page.is_visible("#login")
        assert "needs a token" in await page.inner_text("#status")
        await page.fill("#login input[name=token]", "not-the-token-at-all")
        await page.click("#login button")
        await wait_for(
            page, "window.viewer.state === 'unauthorized' && window.viewer.sessions >= 2"
        )
        await page.fill("#login input[name=token]", token)
        await page.click("#login button")
        await wait_for(page, "window.viewer.framesPresented >= 15")
        assert not await page.is_visible("#login")
        # The same tab keeps it, and a link can carry it in the fragment (never sent to the server).
        second = await browser.new_page()
        await second.goto(f"{d.url}/#token={token}")
        await wait_for(second, "window.viewer && window.viewer.framesPresented >= 5")
        assert "token" not in second.url


async def test_dtls_let_go_after_the_handshake_still_closes_both_ways_with_chromium(
    daemon: DaemonFactory,
) -> None:
    """Chromium's viewer proves its keys (its SRTCP), the daemon lets OpenSSL's DTLS connection go
    (rtc/dtls.py), and the end of a session still travels by DTLS close_notify both ways: the
    daemon's, sealed by RetiredDtls, ends Chromium's DTLS transport; Chromium's, read by it, ends
    the daemon's session at once (not 30 s later, when ICE consent would have run out)."""
    from appliance.rtc.dtls import RetiredDtls

    script = """async (url) => {
        const pc = new RTCPeerConnection({iceServers: []});
        pc.addTransceiver("video", {direction: "recvonly"});
        await pc.setLocalDescription(await pc.createOffer());
        await new Promise((done) => {
            if (pc.iceGatheringState === "complete") done();
            pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
        });
        const r = await fetch(url, {method: "POST", body: pc.localDescription.sdp,
                                    headers: {"Content-Type": "application/sdp"}});
        await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
        window.pc = pc;
        return r.headers.get("Location");
    }"""
    dtls_state = "() => window.pc.getReceivers()[0].transport.state"
    async with daemon() as d, chromium() as browser:
        await wait_ready(d)
        page = await browser.new_page()
        await page.goto(f"{d.url}/web/favicon.svg")  # the daemon's origin, and no player of its own
        for closer in ("daemon", "chromium"):
            location = await page.evaluate(script, f"{d.url}/cam/whep")
            session_id = location.rstrip("/").rsplit("/", 1)[-1]
            session = d.sessions.get(session_id)

            async def retired(session: Any = session) -> bool:
                dtls = session.pc.getTransceivers()[0].sender.transport
                return isinstance(dtls._ssl, RetiredDtls)

            await wait_until(retired, 15, "the daemon kept OpenSSL's DTLS connection")
            assert await page.evaluate(dtls_state) == "connected"
            if closer == "daemon":
                await d.sessions.close(session, "closed by the test")
                await wait_for(page, f"({dtls_state})() === 'closed'", timeout=5)
            else:
                await page.evaluate("() => window.pc.close()")

                async def gone(session_id: str = session_id) -> bool:
                    return session_id not in {s.id for s in d.sessions}

                await wait_until(gone, 5, "the daemon did not see Chromium's close_notify")
                assert session.closed_reason == "connection closed by the peer"


async def test_chromium_answers_our_consent_checks_and_its_checks_are_answered(
    daemon: DaemonFactory, http
) -> None:
    """ICE on a connection that is up, with an independent ICE agent: Chromium answers the
    daemon's consent checks (written, and their answers read, by core/stun.py; RFC 7675, every
    4 to 6 s), and its own checks on the nominated pair are answered there too. The viewer keeps
    playing throughout."""
    from appliance.rtc import internals

    async with daemon() as d, chromium() as browser:
        await wait_ready(d)
        page = await browser.new_page()
        await page.goto(f"{d.url}/")
        await wait_for(page, "window.viewer && window.viewer.framesPresented >= 10")
        consent, checks = internals.CONSENT.answered, internals.CHECKS_ANSWERED

        async def both_answered() -> bool:
            return internals.CONSENT.answered > consent and internals.CHECKS_ANSWERED > checks

        await wait_until(both_answered, 15, "no consent check answered by Chromium, or none of its")
        frames = (await viewer_state(page))["framesPresented"]
        await wait_for(page, f"window.viewer.framesPresented > {frames + 30}")
        assert (await viewer_state(page))["state"] == "connected"
        assert len(await viewers(http, d.url)) == 1
