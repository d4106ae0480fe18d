"""Moves the test process into a network namespace of its own, before any test runs.

WebRTC tests must never use the machine's real interfaces: ICE would pick the machine's own network
address. Inside the namespace there is `lo` and a veth pair, `tlan0` (10.99.0.1) and `tlan1`
(10.99.0.2), with a default route through it, so that aiortc (which never offers loopback) and
Chromium have an address to use, and nothing can leave the machine. The ends are not named `veth*`:
libnice ignores such interfaces.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

CLONE_NEWNET = 0x40000000
ADDRESS = "10.99.0.1"
PEER_ADDRESS = "10.99.0.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def enter() -> str | None:
    """Enter a fresh network namespace; returns why not when it cannot (then WebRTC tests skip)."""
    if os.environ.get("APPLIANCE_TEST_NETNS") == "0":
        return "APPLIANCE_TEST_NETNS=0"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())} (run as root)"
    _ip("link", "set", "lo", "up")
    _ip("link", "add", "tlan0", "type", "veth", "peer", "name", "tlan1")
    _ip("addr", "add", f"{ADDRESS}/24", "dev", "tlan0")
    _ip("addr", "add", f"{PEER_ADDRESS}/24", "dev", "tlan1")
    _ip("link", "set", "tlan0", "up")
    _ip("link", "set", "tlan1", "up")
    _ip("route", "add", "default", "via", PEER_ADDRESS, "dev", "tlan0")
    return None
