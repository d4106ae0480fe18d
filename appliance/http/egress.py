"""WHIP egress: this daemon publishes a stream to a remote WHIP endpoint (RFC 9725 client).

This is how one camera reaches thousands of viewers: an SFU or CDN that speaks WHIP (LiveKit
Ingress, MediaMTX, Cloudflare Stream, Janus behind a WHIP gateway, another appliance) takes the
stream once and fans it out. The remote endpoint is one more fast-path sink of the stream: the same
packets every local viewer gets, its keyframe requests merged with theirs.

Each `[[egress]]` target runs its own loop: wait for the stream to be ready, ask the endpoint for
its ICE servers (OPTIONS, `Link` headers: a TURN server beside an SFU), POST the offer (with the
bearer token), apply the answer, stay connected; on any failure DELETE the session (best
effort), log why, and try again with backoff (1, 2, 5, 10, 30 s, or the server's Retry-After),
from 1 s again after 30 s of a good connection. Its state is in the status API and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from appliance import rtc
from appliance.config import Config, EgressTarget, IceServer
from appliance.core.streams import Streams
from appliance.http import ice

logger = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER = 30.0
HTTP_TIMEOUT = 10.0
RETRY_AFTER_MAX = 300.0


def display_url(url: str) -> str:
    """The URL without user info or query (where services put secrets), for logs and status."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class Egress:
    """One remote WHIP endpoint this daemon publishes to."""

    def __init__(self, target: EgressTarget, config: Config, streams: Streams) -> None:
        self.target = target
        self.url = display_url(target.url)
        self._config = config
        self._streams = streams
        self.stream_name = target.stream or config.stream.name
        self.state = "starting"
        self.attempts = 0
        self.connects = 0
        self.failures = 0
        self.last_error = ""
        self.connected_at: float | None = None
        self.endpoint_servers: list[IceServer] = []
        self.retry_at: float | None = None
        self.media: rtc.FastVideo | None = None
        self._retry_after: float | None = None

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        out: dict[str, Any] = {
            "url": self.url,
            "stream": self.stream_name,
            "state": self.state,
            "attempts": self.attempts,
            "connects": self.connects,
            "failures": self.failures,
            "connected_s": round(now - self.connected_at, 3) if self.connected_at else None,
            "retry_in_s": round(max(0.0, self.retry_at - now), 3) if self.retry_at else None,
            "last_error": self.last_error or None,
            # What the endpoint listed in its Link headers (URLs only: no credentials).
            "endpoint_ice_servers": [u for s in self.endpoint_servers for u in s.urls],
        }
        if self.media is not None:
            m = self.media.describe()
            out.update({k: m.get(k) for k in ("frames", "bytes", "packets", "plis", "nacks")})
        return out

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        connector = aiohttp.TCPConnector(ssl=True if self.target.verify_tls else False)
        async with aiohttp.ClientSession(connector=connector) as http:
            while True:
                self.state = "waiting for the stream"
                stream = await self._ready_stream()
                self.attempts += 1
                self.state = "connecting"
                reason = await self._publish_once(http, stream)
                if self.connected_at is not None and loop.time() - self.connected_at > (
                    STABLE_AFTER
                ):
                    failures = 0
                self.connected_at = None
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                if self._retry_after is not None:
                    delay = max(delay, min(self._retry_after, RETRY_AFTER_MAX))
                    self._retry_after = None
                failures += 1
                self.failures += 1
                self.last_error = reason
                self.state = "retrying"
                self.retry_at = loop.time() + delay
                logger.error("egress %s: %s; trying again in %.0f s", self.url, reason, delay)
                await asyncio.sleep(delay)
                self.retry_at = None

    async def _ready_stream(self) -> Any:
        while True:
            stream = self._streams.find(self.stream_name)
            if stream is not None and stream.ready:
                return stream
            await asyncio.sleep(0.25)

    async def _endpoint_servers(
        self, http: aiohttp.ClientSession, headers: dict[str, str]
    ) -> list[IceServer]:
        """The ICE servers the endpoint lists in `Link` headers for an OPTIONS (RFC 9725
        section 4.6): a TURN server beside an SFU is how a camera behind NAT reaches it. None
        when it lists none or does not answer OPTIONS; the POST is tried all the same."""
        try:
            async with http.options(
                self.target.url, headers=headers, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
            ) as response:
                servers = ice.offered(response.links) if response.status < 300 else []
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return []
        if servers != self.endpoint_servers:
            urls = ", ".join(u for s in servers for u in s.urls) or "none"
            logger.info("egress %s: the endpoint's ICE servers: %s", self.url, urls)
        self.endpoint_servers = servers
        return servers

    async def _publish_once(self, http: aiohttp.ClientSession, stream: Any) -> str:
        config = self._config
        auth = {"Authorization": f"Bearer {self.target.token}"} if self.target.token else {}
        # The endpoint's first: aiortc uses one STUN and one TURN server, the first it is given,
        # and a relay beside the endpoint is the one sure to reach it.
        servers = [
            *await self._endpoint_servers(http, auth),
            *ice.session_servers(config.webrtc.ice_servers, stream.name),
        ]
        pc, offer, media = await rtc.offer(stream, servers, "egress")
        media.join_when_connected(stream)  # the endpoint is one more sink of the stream's fan-out
        self.media = media
        location: str | None = None
        changed = asyncio.Event()
        pc.on("connectionstatechange", changed.set)
        try:
            headers = {"Content-Type": "application/sdp", **auth}
            try:
                async with http.post(
                    self.target.url,
                    data=offer.encode(),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
                ) as response:
                    answer = await response.text()
                    if response.status != 201:
                        self._retry_after = _retry_after(response.headers.get("Retry-After"))
                        first = answer.strip().splitlines()[0][:200] if answer.strip() else ""
                        return f"the server answered {response.status} {response.reason}: {first}"
                    if "Location" in response.headers:
                        location = urljoin(str(response.url), response.headers["Location"])
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                return f"cannot reach the server: {str(e) or type(e).__name__}"
            try:
                await rtc.accept_answer(pc, answer)
            except ValueError as e:
                return str(e)
            timeout = config.webrtc.connect_timeout
            deadline = asyncio.get_running_loop().time() + timeout
            while pc.connectionState != "connected":
                if pc.connectionState in ("failed", "closed"):
                    why = rtc.why_failed(pc, connected=False)
                    return f"the connection {pc.connectionState} before it was up: {why}"
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    why = rtc.why_failed(pc, connected=False)
                    return f"did not connect within {timeout:g} s: {why}"
                changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
            self.connected_at = asyncio.get_running_loop().time()
            self.connects += 1
            self.state = "connected"
            logger.info("egress %s: publishing stream %s", self.url, stream.name)
            while pc.connectionState == "connected":
                if self._streams.find(self.stream_name) is not stream:
                    return "the stream ended"
                changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), 1.0)
            if pc.connectionState == "failed":
                return f"the connection failed: {rtc.why_failed(pc, connected=True)}"
            return f"the connection {pc.connectionState}"
        finally:
            media.close()
            # DELETE before closing the connection: an endpoint that sees DTLS close first tears
            # the session down itself (simple-whip-server does), and then answers DELETE 404.
            # The connection is closed even when the DELETE is cut short (the daemon stopping).
            try:
                if location is not None:
                    await _delete(http, location, self.target.token)
            finally:
                await rtc.close_quietly(pc)

    def close(self) -> None:
        if self.media is not None:
            self.media.close()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the backoff will do


async def _delete(http: aiohttp.ClientSession, location: str, token: str) -> None:
    """End the remote session (RFC 9725 section 4.3); best effort, it expires anyway."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.delete(
            location, headers=headers, timeout=aiohttp.ClientTimeout(total=2.0)
        ) as response:
            await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        logger.info("egress: DELETE %s failed: %s", display_url(location), e)


class EgressSet:
    """Every configured egress target, each in its own task."""

    def __init__(self, config: Config, streams: Streams) -> None:
        self.targets = [Egress(t, config, streams) for t in config.egress]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for egress in self.targets:
            self._tasks.append(
                asyncio.get_running_loop().create_task(egress.run(), name=f"egress {egress.url}")
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def describe(self) -> list[dict[str, Any]]:
        return [e.describe() for e in self.targets]
