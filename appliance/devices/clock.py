"""The system clock: whether it has been set from the network. Edge module (libc's adjtimex).

A Pi has no battery-backed clock: until systemd-timesyncd reaches a time server, the clock is
wherever fake-hwclock (or the build date) left it. The kernel knows: `adjtimex` with no change
asked returns TIME_ERROR (5) while the clock is unsynchronised (STA_UNSYNC), which timesyncd
clears once it has set the time. Under the service's `ProtectClock=yes` that system call is
refused even to read; there timesyncd's own flag file says it (/run/systemd/timesync/synchronized,
made at its first synchronisation). What runs on wall-clock time (the test pattern's stamp, the
HTTP `Date` header, certificates, TURN credentials) is wrong until then, so the daemon says so.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex(2): "the system clock is not synchronized to a reliable server"
_TIMEX_SIZE = 512  # struct timex is 208 bytes on 64-bit Linux; zeroed, its modes ask nothing


TIMESYNC = Path("/run/systemd/timesync")


def synchronised() -> bool | None:
    """Whether the clock is synchronised: the kernel's answer, or timesyncd's where the kernel
    may not be asked; None when neither can say."""
    try:
        state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.create_string_buffer(_TIMEX_SIZE))
    except (OSError, AttributeError):
        state = -1
    if state >= 0:
        return bool(state != TIME_ERROR)
    if TIMESYNC.is_dir():
        return (TIMESYNC / "synchronized").exists()
    return None


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
