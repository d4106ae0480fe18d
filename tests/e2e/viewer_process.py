"""A WHEP viewer in a process of its own, for tests that kill it or run it in another network
namespace: prints `playing <local> <remote>` (the candidate types of the pair ICE nominated) once
it decodes.

    python -m tests.e2e.viewer_process URL [--ice-from-options]

With `--ice-from-options` it first asks the endpoint for its ICE servers (OPTIONS, `Link`
headers), as the daemon's own page does.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiortc import RTCIceServer

from appliance import rtc
from appliance.http import ice
from tests.e2e.peers import AiortcViewer


async def offered_servers(http: aiohttp.ClientSession, url: str) -> list[RTCIceServer]:
    """The endpoint's ICE servers, made into aiortc's as the daemon makes its own."""
    async with http.options(url) as response:
        return list(rtc.ice_configuration(ice.offered(response.links)).iceServers)


def nominated_types(viewer: AiortcViewer) -> tuple[str, str]:
    connection = viewer.pc.getTransceivers()[0].receiver.transport.transport._connection
    pair = connection._nominated[1]
    return pair.local_candidate.type, pair.remote_candidate.type


async def main(url: str, ice_from_options: bool) -> None:
    async with aiohttp.ClientSession() as http:
        servers = await offered_servers(http, url) if ice_from_options else []
        viewer = AiortcViewer(http, url, ice_servers=servers)
        await viewer.connect()
        await viewer.frames(5, timeout=60)
        print("playing", *nominated_types(viewer), flush=True)  # noqa: T201
        await viewer.frames(10**9, timeout=10**6)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], "--ice-from-options" in sys.argv[2:]))
