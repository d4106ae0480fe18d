"""Where the daemon listens by default, and what its start-up log tells the owner to open."""

from __future__ import annotations

import logging
import socket

import aiohttp
import pytest

from tests import netns
from tests.e2e.conftest import DaemonFactory, wait_ready
from tests.e2e.test_browser import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_default_host_serves_ipv4_and_ipv6_and_the_log_names_reachable_urls(
    daemon: DaemonFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.app")
    port = free_port()
    async with daemon(**{"http.host": "", "http.port": port}) as d:
        await wait_ready(d)  # /healthz is 200 once the camera sends frames
        hosts = ["127.0.0.1", netns.ADDRESS] + (["[::1]"] if has_ipv6_loopback() else [])
        for host in hosts:
            async with http.get(f"http://{host}:{port}/healthz") as r:
                assert r.status == 200, host
        [line] = [r.getMessage() for r in caplog.records if "serving stream" in r.getMessage()]
        assert f"http://{netns.ADDRESS}:{port}/" in line and "127.0.0.1" not in line, line
