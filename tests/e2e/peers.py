"""Real WebRTC peers for the end-to-end tests: an aiortc WHEP viewer, and helpers for Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


class AiortcViewer:
    """A WHEP viewer built on aiortc: recvonly H.264 video, frames decoded by aiortc with PyAV."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self.http = http
        self.url = url
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None
        self.etag: str | None = None
        self.answer: str | None = None
        self._track: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if not self._track.done():
                self._track.set_result(track)

    async def offer(self) -> str:
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def connect(self) -> None:
        offer = await self.offer()
        async with self.http.post(
            self.url, data=offer, headers={"Content-Type": "application/sdp", **self.auth}
        ) as response:
            body = await response.text()
            assert response.status == 201, f"WHEP POST: {response.status} {body}"
            self.location = urljoin(self.url, response.headers["Location"])
            self.etag = response.headers.get("ETag")
            self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def frames(self, count: int, timeout: float = 20.0) -> list[Any]:
        """The next `count` decoded video frames (av.VideoFrame)."""
        track = await asyncio.wait_for(self._track, timeout)
        frames = []

        async def collect() -> None:
            while len(frames) < count:
                frames.append(await track.recv())

        await asyncio.wait_for(collect(), timeout)
        return frames

    async def delete(self) -> int:
        assert self.location is not None
        async with self.http.delete(self.location, headers=self.auth) as response:
            return response.status

    async def close(self) -> None:
        await self.pc.close()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A headless Debian Chromium driven by Playwright, with a fresh profile."""
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield context
            finally:
                await context.close()
