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
CLONE_NEWUSER = 0x10000000
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
    uid, gid = os.geteuid(), os.getegid()
    # As root: a network namespace. Otherwise: a user namespace too, where we are root over it.
    flags = CLONE_NEWNET if uid == 0 else CLONE_NEWNET | CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        return f"unshare failed: {os.strerror(ctypes.get_errno())}"
    if uid != 0:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    _ip("link", "set", "lo", "up")
    _ip("link", "add", "tlan0", "type", "veth", "peer", "name", "tlan1")
    _ip("addr", "add", f"{ADDRESS}/24", "dev", "tlan0")
    _ip("addr", "add", f"{PEER_ADDRESS}/24", "dev", "tlan1")
    _ip("link", "set", "tlan0", "up")
    _ip("link", "set", "tlan1", "up")
    _ip("route", "add", "default", "via", PEER_ADDRESS, "dev", "tlan0")
    return None
