"""The device's health read from /proc and /sys: a Raspberry Pi's tree (as its kernel lays it out)
built in a temporary root, and this machine's own."""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.devices.health import RecentWarnings, health, throttling


def pi_root(tmp_path: Path, throttled: str) -> Path:
    zone = tmp_path / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("71250\n")
    firmware = tmp_path / "sys/devices/platform/soc/soc:firmware"
    firmware.mkdir(parents=True)
    (firmware / "get_throttled").write_text(throttled + "\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/uptime").write_text("1234.56 2000.00\n")
    (tmp_path / "proc/meminfo").write_text("MemTotal:  948304 kB\nMemAvailable:  512000 kB\n")
    return tmp_path


def test_a_pi_that_was_under_powered_and_is_throttled_now(tmp_path: Path) -> None:
    # 0x50005: under-voltage now and since boot, throttled now and since boot
    root = pi_root(tmp_path, "50005")
    report = health(tmp_path, 0.0, None, root)
    assert report["throttling"] == {
        "raw": "0x50005",
        "now": ["under_voltage", "throttled"],
        "since_boot": ["under_voltage", "throttled"],
    }
    assert report["temperatures"] == [{"zone": "cpu-thermal", "celsius": 71.25}]
    assert report["uptime_s"] == 1234.56
    assert report["memory"] == {"total": 948304 * 1024, "available": 512000 * 1024}


def test_a_healthy_pi_and_other_boards(tmp_path: Path) -> None:
    assert throttling(pi_root(tmp_path, "0x0")) == {"raw": "0x0", "now": [], "since_boot": []}
    assert throttling(tmp_path / "elsewhere") is None  # not a Pi: no flags, not "all well"
    (tmp_path / THROTTLED).write_text("garbage\n")
    assert throttling(tmp_path) is None


THROTTLED = "sys/devices/platform/soc/soc:firmware/get_throttled"


def test_this_machine_and_the_recent_warnings(tmp_path: Path) -> None:
    warnings = RecentWarnings(keep=2)
    logger = logging.getLogger("appliance.test-health")
    logger.addHandler(warnings)
    try:
        logger.info("not kept")
        for i in range(3):
            logger.warning("camera %d: gone\nsecond line", i)
    finally:
        logger.removeHandler(warnings)
    report = health(tmp_path / "state", 0.0, warnings)
    assert [w["message"] for w in report["warnings"]] == ["camera 1: gone", "camera 2: gone"]
    assert report["memory"]["daemon_rss"] > 0 and report["cpus"] >= 1
    assert report["disk"]["path"] == str(tmp_path) and report["disk"]["free"] > 0
    assert report["load"] is not None and len(report["load"]) == 3
