"""The samples core/headroom.py decides on, taken on the daemon's event loop: the loop thread's CPU
time, how late its tick wakes, and the datagrams the kernel dropped on this process's UDP sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from appliance.core.headroom import DROPS_EVERY, TICK_S, Headroom

logger = logging.getLogger(__name__)


def udp_sockets(pid: int | str = "self") -> dict[str, list[str]]:
    """The UDP sockets of process `pid`, from /proc: socket inode → its row of /proc/net/udp or
    udp6, split (1: local address:port in hex, 9: inode, 12: datagrams dropped)."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    rows = {}
    for table in ("udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)  # the column names
                for line in f:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] in inodes:
                        rows[fields[9]] = fields
        except OSError:
            continue
    return rows


def own_udp_drops() -> dict[str, int]:
    """Datagrams the kernel dropped per UDP socket of this process (socket inode: count)."""
    return {inode: int(row[12]) for inode, row in udp_sockets().items()}


class HeadroomWatch:
    """Samples the loop thread's CPU, its lag and its sockets' drops; answers `check()`."""

    def __init__(self, max_load: float, viewers: Callable[[], int]) -> None:
        self.headroom = Headroom(max_load)
        self._viewers = viewers
        self._refusing: str | None = None
        self._drops: dict[str, int] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        wall, cpu = loop.time(), time.thread_time()
        self._drops = own_udp_drops()
        ticks = 0
        while True:
            due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            now, now_cpu = loop.time(), time.thread_time()
            self.headroom.tick(
                now, (now_cpu - cpu) / max(now - wall, 1e-6), now - due, self._viewers()
            )
            wall, cpu = now, now_cpu
            ticks += 1
            if ticks % DROPS_EVERY == 0:
                self._scan_drops(now)
            if self._refusing is not None and self.headroom.refusal(now) is None:
                logger.info("admitting new viewers again (%s)", self.describe_load())
                self._refusing = None

    def _scan_drops(self, now: float) -> None:
        drops = own_udp_drops()
        new = sum(max(0, count - self._drops.get(inode, 0)) for inode, count in drops.items())
        self._drops = drops
        self.headroom.dropped(now, new)

    def check(self) -> str | None:
        """Why a new viewer is refused now (counted, and logged when refusing starts), or None."""
        now = asyncio.get_running_loop().time()
        refusal = self.headroom.refusal(now, self._viewers())
        if refusal is None:
            self.headroom.admit(now)
            return None
        reason, why = refusal
        self.headroom.refused[reason] += 1
        if self._refusing is None:
            logger.warning("refusing new viewers until there is room: %s", why)
        self._refusing = reason
        return f"no room for another viewer: {why}"

    def describe_load(self) -> str:
        h = self.headroom
        return f"event loop {h.busy * 100:.0f} % busy, limit {h.max_load * 100:.0f} %"

    def describe(self) -> dict[str, object]:
        h = self.headroom
        return {
            "loop_busy": round(h.busy, 4),
            "loop_lag_s": round(h.last_lag, 4),
            "per_viewer": round(h.per_viewer, 5),
            "max_load": h.max_load,
            "udp_drops": h.drops_total,
            "refused": dict(h.refused),
        }
