"""A WHEP viewer in a process of its own, for tests that kill it: prints `playing` once it decodes."""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from tests.e2e.peers import AiortcViewer


async def main(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        viewer = AiortcViewer(http, url)
        await viewer.connect()
        await viewer.frames(5)
        print("playing", flush=True)  # noqa: T201
        await viewer.frames(10**9, timeout=10**6)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
