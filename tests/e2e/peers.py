"""Real WebRTC peers for the end-to-end tests: an aiortc WHEP viewer, an aiortc WHIP publisher
(aiortc's own H.264 encoder and send path), and helpers for Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack

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
# A camera for WHIP publishing pages: Chromium's built-in test pattern, granted without a prompt.
FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


class AiortcPeer:
    """What the WHEP viewer and the WHIP publisher share: an aiortc peer connection (no ICE
    servers unless given), the endpoint, the bearer token, and the session resource to DELETE."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        token: str | None,
        ice_servers: Sequence[RTCIceServer] = (),
    ) -> None:
        self.http = http
        self.url = url
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
        self.location: str | None = None
        self.etag: str | None = None

    async def delete(self) -> int:
        assert self.location is not None
        async with self.http.delete(self.location, headers=self.auth) as response:
            return response.status

    async def close(self) -> None:
        await self.pc.close()


class AiortcViewer(AiortcPeer):
    """A WHEP viewer built on aiortc: recvonly H.264 video (and Opus audio with `audio=True`),
    decoded by aiortc with PyAV."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        token: str | None = None,
        audio: bool = False,
        ice_servers: Sequence[RTCIceServer] = (),
    ) -> None:
        super().__init__(http, url, token, ice_servers)
        self.audio = audio
        self.answer: str | None = None
        loop = asyncio.get_running_loop()
        self._track: asyncio.Future[Any] = loop.create_future()
        self._audio_track: asyncio.Future[Any] = loop.create_future()

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            future = self._audio_track if track.kind == "audio" else self._track
            if not future.done():
                future.set_result(track)

    async def offer(self) -> str:
        self.pc.addTransceiver("video", direction="recvonly")
        if self.audio:
            self.pc.addTransceiver("audio", direction="recvonly")
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

    async def latest(self, timeout: float = 20.0) -> Any:
        """A frame decoded after this call: what was decoded before and not asked for is
        dropped (aiortc queues every frame until it is read)."""
        track = await asyncio.wait_for(self._track, timeout)
        queue = track._queue
        while not queue.empty():
            queue.get_nowait()
        [frame] = await self.frames(1, timeout)
        return frame

    async def audio_frames(self, seconds: float, timeout: float = 20.0) -> list[Any]:
        """Decoded audio (av.AudioFrame) covering `seconds`."""
        track = await asyncio.wait_for(self._audio_track, timeout)
        frames: list[Any] = []

        async def collect() -> None:
            total = 0.0
            while total < seconds:
                frame = await track.recv()
                frames.append(frame)
                total += frame.samples / frame.sample_rate

        await asyncio.wait_for(collect(), timeout)
        return frames


class CountingTrack(VideoStreamTrack):
    """640x360 pictures at 30 fps whose brightness steps with each frame."""

    def __init__(self, width: int = 640, height: int = 360) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.count += 1
        picture = np.full((self.height, self.width, 3), (self.count * 8) % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class AiortcPublisher(AiortcPeer):
    """A WHIP publisher built on aiortc: its own H.264 (libx264) encoder and send path."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        super().__init__(http, url, token)
        self.track = CountingTrack()
        self.status: int | None = None
        self.body = ""

    async def offer(self) -> str:
        self.pc.addTransceiver(self.track, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def post(self, offer: str) -> int:
        """POST the offer; on 201, apply the answer. Returns the status."""
        async with self.http.post(
            self.url, data=offer, headers={"Content-Type": "application/sdp", **self.auth}
        ) as response:
            self.status = response.status
            self.body = await response.text()
            if response.status == 201:
                self.location = urljoin(self.url, response.headers["Location"])
                self.etag = response.headers.get("ETag")
        if self.status == 201:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.body, type="answer"))
        return self.status

    async def connect(self) -> None:
        status = await self.post(await self.offer())
        assert status == 201, f"WHIP POST: {status} {self.body}"


@contextlib.asynccontextmanager
async def chromium(*extra_args: str, executable: str = CHROMIUM) -> AsyncIterator[Any]:
    """A headless Debian Chromium driven by Playwright, with a fresh profile (`executable`: a
    wrapper that starts it elsewhere, in another network namespace)."""
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_ARGS, *extra_args],
            )
            try:
                yield context
            finally:
                await context.close()


@contextlib.asynccontextmanager
async def another_origin(app: web.Application) -> AsyncIterator[str]:
    """`app` served on loopback at a port of its own: another origin than the daemon's, for
    pages that use the daemon across origins. Yields its origin, http://127.0.0.1:<port>."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
