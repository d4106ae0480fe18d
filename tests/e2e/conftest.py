from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

from appliance import config
from appliance.app import Running, running

DaemonFactory = Callable[..., AbstractAsyncContextManager[Running]]


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory) -> DaemonFactory:
    """Start a real daemon on loopback with the test source: `async with daemon(**overrides)`."""

    def start(**overrides: Any) -> AbstractAsyncContextManager[Running]:
        values = {
            "http.host": "127.0.0.1",
            "http.port": 0,
            "rtsp.port": 0,
            "video.source": "testsrc",
            "http.state_dir": str(tmp_path_factory.mktemp("state")),
            "video.width": 640,
            "video.height": 360,
            **overrides,
        }
        return running(config.load(None, env={}, overrides=values))

    return start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_until(
    done: Callable[[], Awaitable[bool]], timeout: float, what: str, poll: float = 0.05
) -> None:
    """Poll `done` until it is true; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await done():
        assert loop.time() < deadline, f"{what} (after {timeout:g} s)"
        await asyncio.sleep(poll)


async def wait_ready(d: Running, timeout: float = 10.0) -> None:
    async def ready() -> bool:
        return d.stream.ready

    await wait_until(ready, timeout, "the stream produced no keyframe", poll=0.02)
