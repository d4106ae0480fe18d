"""The samples admission decides on (devices/headroom.py), from the real kernel and event loop."""

from __future__ import annotations

import asyncio
import os
import socket
import time

from appliance.devices.headroom import HeadroomWatch, own_udp_drops


def inode(sock: socket.socket) -> str:
    return os.readlink(f"/proc/self/fd/{sock.fileno()}")[8:-1]


def test_datagrams_the_kernel_dropped_on_our_socket_are_counted_for_it() -> None:
    full = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel's least
        full.bind(("127.0.0.1", 0))
        assert own_udp_drops().get(inode(full)) == 0
        for _ in range(200):  # never read: most overflow its buffer
            sender.sendto(b"x" * 1000, full.getsockname())
        assert own_udp_drops()[inode(full)] >= 100
    finally:
        full.close()
        sender.close()


async def test_the_watch_measures_the_loop_s_own_work_and_refuses_past_max_load() -> None:
    watch = HeadroomWatch(0.3, lambda: 0)
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(1.6)
        assert watch.check() is None  # an idle loop has room
        end = time.monotonic() + 2.5
        while time.monotonic() < end:  # the loop busy about 80 % of the time
            spin = time.monotonic() + 0.04
            while time.monotonic() < spin:
                pass
            await asyncio.sleep(0.01)
        assert watch.headroom.busy > 0.5, watch.describe()
        why = watch.check()
        assert why is not None and "stream.max_load (30 %)" in why
        assert watch.describe()["refused"] == {"load": 1, "lag": 0, "drops": 0}
    finally:
        task.cancel()
