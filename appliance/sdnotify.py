"""systemd's notify protocol: READY, STATUS, STOPPING, and the watchdog, from the event loop.

Edge module (one datagram socket; no library). Under `Type=notify`, systemd gives the daemon
`$NOTIFY_SOCKET`; with `WatchdogSec=`, also `$WATCHDOG_USEC` (and `$WATCHDOG_PID`). The watchdog
ping is sent by a task on the event loop itself, so a loop that hangs (a blocking call, a busy
callback) stops pinging and systemd restarts the service. Outside systemd, everything here is a
no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self._address = address
        self._socket: socket.socket | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000 / 2  # ping at half the timeout
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> None:
        """One notification, e.g. send("READY=1", "STATUS=serving"). Never raises."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as e:  # systemd gone (shutting down): nothing to tell
            logger.debug("sd_notify %s: %s", fields, e)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")
        if self.watchdog_interval is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watchdog(), name="watchdog")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    async def _watchdog(self) -> None:
        interval = self.watchdog_interval
        assert interval is not None
        loop = asyncio.get_running_loop()
        while True:
            self.send("WATCHDOG=1")
            due = loop.time() + interval
            await asyncio.sleep(interval)
            late = loop.time() - due
            if late > interval / 2:  # half-way to systemd's kill: say so while we still can
                logger.warning(
                    "the event loop was held up for %.1f s (systemd restarts the daemon after"
                    " %g s without a ping)",
                    late,
                    2 * interval,
                )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
