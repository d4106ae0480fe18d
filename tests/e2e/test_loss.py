"""Through 2 % packet loss on the wire: NACKs are answered from the shared ring, video keeps playing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.e2e.conftest import DaemonFactory, wait_ready
from tests.e2e.loss import packet_loss
from tests.e2e.peers import AiortcViewer, chromium

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def viewers(http: aiohttp.ClientSession, url: str) -> list[dict]:
    async with http.get(f"{url}/api/status") as response:
        return (await response.json())["viewers"]


async def test_aiortc_viewer_recovers_lost_packets(daemon: DaemonFactory, http) -> None:
    async with daemon(**{"video.width": 1280, "video.height": 720}) as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await viewer.connect()
            await viewer.frames(5)
            with packet_loss(2) as dropped:
                frames = await viewer.frames(150, timeout=30)
                lost = dropped()
            assert len(frames) == 150
            assert lost > 0
            (v,) = await viewers(http, d.url)
            assert v["nacks"] > 0 and v["retransmits"] > 0, v
        finally:
            await viewer.close()


async def test_chromium_recovers_with_nack_and_does_not_freeze(daemon: DaemonFactory, http) -> None:
    async with daemon(**{"video.width": 1280, "video.height": 720}) as d, chromium() as browser:
        await wait_ready(d)
        page = await browser.new_page()
        await page.goto(f"{d.url}/")
        # Playing for 3 s first: the start (the jitter buffer settling) is not what this measures.
        await page.wait_for_function(
            "window.viewer && window.viewer.framesPresented >= 90", polling=100
        )
        stats = """async () => {
            let out = null;
            (await window.viewerClient.pc.getStats()).forEach((s) => {
                if (s.type === "inbound-rtp" && s.kind === "video") out = s;
            });
            return {nackCount: out.nackCount, pliCount: out.pliCount, freezeCount: out.freezeCount,
                    framesDecoded: out.framesDecoded, packetsLost: out.packetsLost,
                    totalFreezesDuration: out.totalFreezesDuration};
        }"""
        before = await page.evaluate(stats)
        with packet_loss(2) as dropped:
            await asyncio.sleep(8)
            lost = dropped()
        after = await page.evaluate(stats)
        assert lost > 0
        assert after["nackCount"] > before["nackCount"], (before, after)
        assert after["framesDecoded"] - before["framesDecoded"] >= 8 * 25, (before, after)
        # Repaired, not frozen over: a retransmission can itself be lost (2 % of them are) and
        # be asked for again, which Chromium may count as one short freeze (a frame later than
        # 150 ms over the mean; seen once in CI). A freeze per lost packet, or a long one, fails.
        freezes = after["freezeCount"] - before["freezeCount"]
        frozen = after["totalFreezesDuration"] - before["totalFreezesDuration"]
        assert freezes <= 1 and frozen < 0.5, (before, after)
        (v,) = await viewers(http, d.url)
        assert v["retransmits"] > 0, v
