"""The device's health, as an owner asks after it: how long it has been up, how busy and how hot
it is, whether a Raspberry Pi has been throttled or under-powered, memory and disk, and the
daemon's recent warnings.

Edge module: it reads /proc and /sys (under `root`, "/" but for tests) and never fails: what a
board does not have is left out or null. Under-voltage and thermal throttling are the classic
reasons a Pi camera stutters; the firmware reports both in `get_throttled` (the bits
`vcgencmd get_throttled` prints), which the Raspberry Pi kernel exposes in sysfs.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

# Raspberry Pi firmware's get_throttled bits: now (0-3) and since boot (16-19).
THROTTLE_BITS = {
    0: "under_voltage",
    1: "frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
}
THROTTLED_PATH = "sys/devices/platform/soc/soc:firmware/get_throttled"

RECENT_WARNINGS = 20


class RecentWarnings(logging.Handler):
    """The daemon's last warnings and errors, one line each, for the health page."""

    def __init__(self, keep: int = RECENT_WARNINGS) -> None:
        super().__init__(logging.WARNING)
        self.lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is logging's to report, not ours
            return
        self.lines.append(
            {
                "time": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message.splitlines()[0][:500] if message else "",
            }
        )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def temperatures(root: Path) -> list[dict[str, Any]]:
    """Every thermal zone: its type (cpu-thermal, ...) and °C."""
    out = []
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        milli = _read(zone / "temp")
        if milli is None or not milli.lstrip("-").isdigit():
            continue
        out.append({"zone": _read(zone / "type") or zone.name, "celsius": int(milli) / 1000})
    return out


def throttling(root: Path) -> dict[str, Any] | None:
    """A Raspberry Pi's throttling flags, now and since boot; None on other boards."""
    text = _read(root / THROTTLED_PATH)
    if text is None:
        return None
    try:
        bits = int(text, 16)
    except ValueError:
        return None
    return {
        "raw": f"0x{bits:x}",
        "now": [name for bit, name in THROTTLE_BITS.items() if bits >> bit & 1],
        "since_boot": [name for bit, name in THROTTLE_BITS.items() if bits >> (bit + 16) & 1],
    }


def memory(root: Path) -> dict[str, int] | None:
    """Total and available memory in bytes (/proc/meminfo), and the daemon's resident set."""
    text = _read(root / "proc/meminfo")
    if text is None:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            fields[name] = int(value[0]) * 1024
    out = {"total": fields.get("MemTotal", 0), "available": fields.get("MemAvailable", 0)}
    status = _read(root / "proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            out["daemon_rss"] = int(line.split()[1]) * 1024
    return out


def disk(path: Path) -> dict[str, Any] | None:
    """Size and free bytes of the file system that holds `path` (the state directory)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return {"path": str(path), "total": usage.total, "free": usage.free}


def health(
    state_dir: Path, daemon_started: float, warnings: RecentWarnings | None, root: Path = Path("/")
) -> dict[str, Any]:
    """The device's health as /api/health reports it."""
    uptime = _read(root / "proc/uptime")
    try:
        load = os.getloadavg() if root == Path("/") else None
    except OSError:
        load = None
    return {
        "time": round(time.time(), 3),
        "uptime_s": float(uptime.split()[0]) if uptime else None,
        "daemon_uptime_s": round(time.monotonic() - daemon_started, 3),
        "cpus": os.cpu_count(),
        "load": [round(x, 2) for x in load] if load is not None else None,
        "temperatures": temperatures(root),
        "throttling": throttling(root),
        "memory": memory(root),
        "disk": disk(state_dir),
        "warnings": list(warnings.lines) if warnings is not None else [],
    }
