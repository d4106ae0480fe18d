"""The system clock: whether it has been set from the network. Edge module (libc's adjtimex).

A Pi has no battery-backed clock: until systemd-timesyncd reaches a time server, the clock is
wherever fake-hwclock (or the build date) left it. The kernel knows: `adjtimex` with no change
asked returns TIME_ERROR (5) while the clock is unsynchronised (STA_UNSYNC), which timesyncd
clears once it has set the time. What runs on wall-clock time (the test pattern's stamp, the HTTP
`Date` header, certificates, TURN credentials) is wrong until then, so the daemon says so.
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex(2): "the system clock is not synchronized to a reliable server"
_TIMEX_SIZE = 512  # struct timex is 208 bytes on 64-bit Linux; zeroed, its modes ask nothing


def synchronised() -> bool | None:
    """Whether the kernel considers the clock synchronised; None when it cannot be asked."""
    try:
        adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    state = adjtimex(ctypes.create_string_buffer(_TIMEX_SIZE))
    return None if state < 0 else state != TIME_ERROR


class ClockWatch:
    """Asks the kernel now and then; logs a warning when the clock is unsynchronised (once, not
    at every check) and a line when it becomes synchronised."""

    def __init__(self) -> None:
        self.synchronised: bool | None = None

    def check(self) -> bool | None:
        now = synchronised()
        if now is False and self.synchronised is not False:
            logger.warning(
                "the system clock is not synchronised (no time server reached yet): the test "
                "pattern's time stamp, dates and anything time-limited may be wrong until it is"
            )
        elif now is True and self.synchronised is False:
            logger.info("the system clock is synchronised")
        self.synchronised = now
        return now
