"""systemd's notify protocol, against a real datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.sdnotify import Notifier


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    yield sock, path
    sock.close()


def messages(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


async def test_ready_then_watchdog_pings_from_the_loop(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    assert notifier.watchdog_interval == 0.05
    notifier.ready("serving")
    await asyncio.sleep(0.2)
    await notifier.close()
    got = messages(sock, 3)
    assert got[0] == "READY=1\nSTATUS=serving"
    assert got[1:] == ["WATCHDOG=1", "WATCHDOG=1"]


async def test_a_held_up_loop_is_logged_before_systemd_kills_it(
    systemd_socket: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # pings every 0.1 s
    notifier.ready("serving")
    await asyncio.sleep(0.15)
    assert not [r for r in caplog.records if "held up" in r.getMessage()]
    # A callback that blocks the loop: the next ping is 0.2 s late or more.
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)
    await asyncio.sleep(0.15)
    await notifier.close()
    held = [r.getMessage() for r in caplog.records if "held up" in r.getMessage()]
    assert len(held) == 1, held
    assert "systemd restarts the daemon after 0.2 s without a ping" in held[0]


async def test_no_watchdog_for_another_pid_and_nothing_outside_systemd() -> None:
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
    await other.close()
    quiet = Notifier({})
    assert not quiet.enabled
    quiet.send("READY=1")  # a no-op, not an error


def test_the_daemon_says_ready_and_stopping(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    args = ["serve", "--source", "testsrc", "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], env=env)
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=serving stream 'cam' on port ")
        assert sock.recv(4096).decode() == "WATCHDOG=1"
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while (msg := sock.recv(4096).decode()) == "WATCHDOG=1":
            assert time.monotonic() < deadline
        assert msg == "STOPPING=1\nSTATUS=stopping"
        assert proc.wait(20) == 0
    finally:
        proc.kill()
