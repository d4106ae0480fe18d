"""Power-on to a playing stream: the SD card booted as a Raspberry Pi 3 B under emulation
(tests/vm/pi.py, the card tests/run.sh builds), first power-on and a second one, and where the time
goes. Root (a tap device), about 8 minutes:

    .venv/bin/python -m tests.perf.bench_boot [--json]

Per power-on, in seconds (host: from QEMU's start; guest: the guest's monotonic clock, which starts
with its kernel; a real Pi's firmware adds its own 2 to 8 s before that, which QEMU skips):
- the kernel (kernel start to init) and, from systemd, when appliance.service was started and when
  it sent READY, and what it waited for (`systemd-analyze critical-chain`);
- the daemon's own phases, from its /api/status (`startup`: Python, imports, HTTP, the camera);
- from the host: the first /healthz answer, and the first frame decoded by an aiortc viewer that
  connects as soon as /healthz answers (the moment a person's page would).

TCG runs the Pi's four cores on this machine's two, several times slower than a real Pi 3: the
figures say where the time goes and what changed, not what a Pi does. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests import netns
from tests.e2e.peers import AiortcViewer
from tests.vm.machine import cached_sdcard
from tests.vm.pi import FIRST_BOOT, GUEST, Pi, new_key

URL = f"http://{GUEST}:8080"


async def first_answer(pi: Pi, http: aiohttp.ClientSession, timeout: float = 900) -> float:
    """Seconds from power-on to the first /healthz 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pi.alive():
            raise SystemExit(f"the emulated Pi stopped:\n{pi.console()}")
        try:
            async with http.get(f"{URL}/healthz") as r:
                if r.status == 200:
                    return time.monotonic() - pi.powered_on
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.5)
    raise SystemExit(f"no /healthz in {timeout:g} s:\n{pi.console()}")


def guest_seconds(pi: Pi, unit: str, *props: str) -> dict[str, float]:
    out = pi.ssh(f"systemctl show {unit} -p {','.join(props)}")
    values = dict(line.split("=", 1) for line in out.strip().splitlines())
    return {k: int(v) / 1e6 for k, v in values.items()}


async def one_boot(pi: Pi, http: aiohttp.ClientSession) -> dict[str, Any]:
    healthz = await first_answer(pi, http)
    viewer = AiortcViewer(http, f"{URL}/porch/whep")
    try:
        await viewer.connect()
        await viewer.frames(1, timeout=300)
        first_frame = time.monotonic() - pi.powered_on
    finally:
        await viewer.close()
    async with http.get(f"{URL}/api/status") as r:
        startup = (await r.json())["startup"]
    kernel = pi.ssh("systemd-analyze | head -1").strip()
    daemon = guest_seconds(
        pi, "appliance.service", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic"
    )
    chain = pi.ssh("systemd-analyze critical-chain appliance.service --no-pager | tail -n +4")
    return {
        "systemd_analyze": kernel,
        "daemon_started_s": round(daemon["ExecMainStartTimestampMonotonic"], 1),
        "daemon_ready_s": round(daemon["ActiveEnterTimestampMonotonic"], 1),
        "daemon_phases_s": startup,
        "host_first_healthz_s": round(healthz, 1),
        "host_first_frame_s": round(first_frame, 1),
        "critical_chain": chain.rstrip(),
    }


def show(name: str, boot: dict[str, Any]) -> None:
    phases = boot["daemon_phases_s"]
    print(f"\n{name}")
    print(f"  {boot['systemd_analyze']}")
    print(
        f"  guest clock: appliance started at {boot['daemon_started_s']} s, "
        f"READY at {boot['daemon_ready_s']} s"
    )
    print(
        "  the daemon: "
        + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in phases.items() if k not in ("ready_s",))
    )
    print(
        f"  host, from power-on: /healthz {boot['host_first_healthz_s']} s, "
        f"first frame in a viewer {boot['host_first_frame_s']} s"
    )
    print("  in front of the daemon:\n    " + boot["critical_chain"].replace("\n", "\n    "))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    problem = netns.enter()
    if problem:
        raise SystemExit(f"no network namespace: {problem}")
    card = cached_sdcard() / "sdcard.img"
    if not card.exists():
        raise SystemExit(f"no SD card at {card}: build it with python -m tests.vm.machine")
    key, public = new_key(Path(tempfile.mkdtemp()))
    timeout = aiohttp.ClientTimeout(total=20)
    report: dict[str, Any] = {}
    with Pi(card, FIRST_BOOT.format(key=public), key, "owner") as pi:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            report["first_power_on"] = await one_boot(pi, http)
            show(
                "first power-on (first boot applied, root grown, SSH host keys made)",
                report["first_power_on"],
            )
            pi.reboot()
            report["second_power_on"] = await one_boot(pi, http)
            show("second power-on", report["second_power_on"])
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
