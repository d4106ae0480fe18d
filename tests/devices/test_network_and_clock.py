"""The addresses the start-up log names, and the clock's synchronisation, read from this machine:
inside the test's network namespace its interfaces are known (tests/netns.py)."""

from __future__ import annotations

import ctypes
import logging
import socket

import pytest

from appliance.devices import clock, network
from tests import netns

pytestmark = [pytest.mark.e2e]  # needs the test's network namespace


def test_addresses_are_the_namespace_interfaces_without_loopback() -> None:
    found = network.addresses()
    assert netns.ADDRESS in found and netns.PEER_ADDRESS in found
    assert "127.0.0.1" not in found and "::1" not in found
    assert not [a for a in found if a.lower().startswith("fe80")]  # link-local: no zone in a URL


def test_reachable_urls_for_every_address_or_the_one_configured() -> None:
    every = network.reachable_urls("http", "", 8080)
    assert f"http://{netns.ADDRESS}:8080" in every and f"http://{netns.PEER_ADDRESS}:8080" in every
    assert all("127.0.0.1" not in u for u in every)
    if network.AVAHI_PID.exists():
        assert every[0] == f"http://{socket.gethostname()}.local:8080"
    ipv4_only = network.reachable_urls("https", "0.0.0.0", 8443)
    assert ipv4_only and all("[" not in u for u in ipv4_only)
    assert network.reachable_urls("http", "fd00::5", 80) == ["http://[fd00::5]:80"]


def test_clock_state_is_the_kernels_and_unsynchronised_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The kernel's own answer, asked here without our module: adjtimex(2) returns the state.
    state = ctypes.CDLL(None).adjtimex(ctypes.create_string_buffer(512))
    assert clock.synchronised() is (state != clock.TIME_ERROR)
    watch = clock.ClockWatch()
    with caplog.at_level(logging.INFO, logger="appliance.devices.clock"):
        for _ in range(3):
            assert watch.check() is (state != clock.TIME_ERROR)
    warnings = [r for r in caplog.records if "not synchronised" in r.getMessage()]
    assert len(warnings) == (1 if state == clock.TIME_ERROR else 0)
