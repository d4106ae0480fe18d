"""What one client may hold of the HTTP server, and the descriptors the daemon may hold at all.

Edge module (aiohttp, asyncio, resource). A camera sits on a LAN with strangers' devices, so:
- a client address holds at most `http.max_connections_per_client` connections at once; one more
  is closed as it is accepted, counted, and logged at most once a second;
- a connection that sends no request for `http.idle_timeout` seconds is closed (aiohttp's
  keep-alive timer, which it also runs before the first request);
- the process's soft limit on open files is raised to its hard limit (systemd's `LimitNOFILE=`),
  and when descriptors still run out, asyncio's accept loop says so at most once a second, in one
  line, instead of a traceback per retry.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from typing import Any

from aiohttp import web

from appliance.core.stats import DropReporter

logger = logging.getLogger(__name__)


class ConnectionLimit:
    """Counts an aiohttp server's connections per client address and closes those over `limit`."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self.limit = limit
        self.refused = DropReporter(logger, "HTTP connections over the per-client limit")
        self._open: Counter[str] = Counter()
        self._peer: dict[Any, str] = {}
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if peer else "?"
            self._peer[handler] = address
            self._open[address] += 1
            if self._open[address] > self.limit:
                self.refused.add()
                # Not now: aiohttp starts the handler's task after this call, and that task
                # asserts the connection is still there (an AssertionError per surplus
                # connection, logged when collected). On the next turn of the loop it is.
                asyncio.get_running_loop().call_soon(transport.abort)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            address = self._peer.pop(handler, None)
            if address is not None:
                self._open[address] -= 1
                if not self._open[address]:
                    del self._open[address]
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            logger.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, e)
    return soft


class QuietAcceptErrors:
    """A loop exception handler: asyncio's 'socket.accept() out of system resource' (logged with a
    traceback for every connection in the backlog, every retry) becomes one line a second at
    most; everything else goes to the default handler."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = float("-inf")
        self._pending = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "._start_serving(" in message and isinstance(context.get("exception"), ValueError):
            # After EMFILE asyncio retries accepting a second later (call_later), and closing the
            # server does not cancel that retry: it then finds the socket closed (fd -1). The
            # server is gone, so there is nothing to serve: not a traceback at shutdown.
            logger.debug("a listening socket closed while asyncio was to retry accepting")
            return
        if message != self.MESSAGE:
            loop.default_exception_handler(context)
            return
        self._pending += 1
        now = time.monotonic()
        if now - self._last >= self.interval:
            error = context.get("exception")
            logger.error(
                "cannot accept connections: %s (%d since the last line); the open files "
                "limit is %d",
                getattr(error, "strerror", None) or error,
                self._pending,
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
            self._last, self._pending = now, 0
