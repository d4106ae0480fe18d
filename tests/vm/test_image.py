"""The product as users get it: the .deb on Debian 12 (the vm-amd64 image of image/build.sh), booted
under systemd, configured by a first-boot file on a FAT disk labelled "bootfs", as a user writes it
onto the SD card's boot partition before the first boot.

One boot, in order: the first-boot file applied (hostname, stream settings, Wi-Fi password removed);
the unit active under systemd with READY from the daemon; /healthz and a real WHEP viewer from the
host; RTSP read by ffprobe; the journal without double timestamps; a SIGKILL restarted by
systemd; a SIGABRT that leaves every thread's Python stack in the journal; a hung event loop
(SIGSTOP) killed by the watchdog and restarted; `systemd-analyze security`'s rating.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import wait_until
from tests.e2e.peers import AiortcViewer
from tests.vm.machine import GUEST, HOST, Machine, cached_product, require

pytestmark = [pytest.mark.vm, pytest.mark.e2e, pytest.mark.timeout(600)]

URL = f"http://{GUEST}:8080"
FIRST_BOOT = """\
[system]
hostname = "frontdoor"

[wifi]
ssid = "home"
password = "correct horse"

[ssh]
user = "owner"
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB owner@laptop"]

[video]
source = "testsrc"
width = 640
height = 360

[stream]
name = "door"
"""


def bootfs(tmp: Path) -> Path:
    """A FAT disk labelled bootfs with the first-boot file, made as a laptop would (no mounting)."""
    disk = tmp / "bootfs.img"
    subprocess.run(
        ["mkfs.vfat", "-n", "bootfs", "-C", str(disk), "8192"], check=True, capture_output=True
    )
    (tmp / "appliance.toml").write_text(FIRST_BOOT)
    subprocess.run(
        ["mcopy", "-i", str(disk), str(tmp / "appliance.toml"), "::appliance.toml"], check=True
    )
    return disk


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    require(cached_product() / "root.ext4", "product image")
    disk = bootfs(tmp_path_factory.mktemp("bootfs"))
    # systemd-network-generator turns ip= into a .network file: the guest's static address on the
    # test's tap link (the image itself uses DHCP and link-local addressing).
    append = f"net.ifnames=0 ip={GUEST}::{HOST}:255.255.255.0::eth0:off"
    with Machine(image=cached_product(), append=append, disks=(disk,), share_src=False) as m:
        yield m


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def healthy(http: aiohttp.ClientSession) -> bool:
    try:
        async with http.get(f"{URL}/healthz") as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def status(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{URL}/api/status") as r:
        result: dict[str, Any] = await r.json()
        return result


def show(machine: Machine, *props: str) -> dict[str, str]:
    out = machine.run(f"systemctl show appliance.service -p {','.join(props)}")
    return dict(line.split("=", 1) for line in out.strip().splitlines())


async def test_first_boot_file_is_applied_and_the_service_serves(
    machine: Machine, http: aiohttp.ClientSession
) -> None:
    await wait_until(lambda: healthy(http), 120, "the service never answered /healthz", 1.0)
    assert machine.run("hostname").strip() == "frontdoor"
    assert machine.run("systemctl is-active appliance-firstboot.service").strip() == "active"
    applied = machine.run("cat /boot/firmware/appliance.toml.applied")
    assert "correct horse" not in applied and 'ssid = "home"' in applied
    assert machine.run("ls /boot/firmware").split() == ["appliance.toml.applied"]
    st = await status(http)
    assert st["stream"]["name"] == "door"
    assert st["source"]["kind"] == "testsrc" and st["source"]["mode"]["width"] == 640

    viewer = AiortcViewer(http, f"{URL}/door/whep")
    try:
        await viewer.connect()
        frames = await viewer.frames(10, timeout=60)
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
    finally:
        await viewer.close()
    # Those frames came through the C packet loop the package carries for x86_64.
    assert st["packet_loop"] == {"loop": "c", "why_python": None}

    props = show(
        machine, "ActiveState", "SubState", "User", "Type", "StatusText", "NRestarts",
        "LimitNOFILE", "LimitNOFILESoft",
    )  # fmt: skip
    assert props["ActiveState"] == "active" and props["SubState"] == "running"
    assert props["LimitNOFILE"] == props["LimitNOFILESoft"] == "16384"
    pid = show(machine, "MainPID")["MainPID"]
    limits = machine.run(f"grep 'Max open files' /proc/{pid}/limits").split()
    assert limits[3:5] == ["16384", "16384"], limits
    assert props["User"] == "appliance" and props["Type"] == "notify"
    assert props["StatusText"] == "serving stream 'door' on port 8080"  # READY from the daemon
    assert props["NRestarts"] == "0"
    groups = machine.run("id -nG appliance").split()
    assert {"video", "audio"} <= set(groups)

    # The owner named in [ssh] administers the device: sudo asks no password, the journal is
    # theirs to read (as the README tells them), their key is in place.
    assert {"sudo", "adm", "systemd-journal"} <= set(machine.run("id -nG owner").split())
    assert machine.run("runuser -u owner -- sudo -n id -u").strip() == "0"
    journal = machine.run("runuser -u owner -- journalctl -u appliance.service -o cat --no-pager")
    assert "serving stream 'door'" in journal
    assert "owner@laptop" in machine.run("cat /home/owner/.ssh/authorized_keys")
    # A clock: timesyncd and fake-hwclock run; the test machine reaches no time server, and the
    # daemon says so once, and in its status.
    enabled = "systemctl is-enabled systemd-timesyncd fake-hwclock fake-hwclock-save.timer"
    assert machine.run(enabled).split() == ["enabled"] * 3
    assert journal.count("the system clock is not synchronised") == 1
    assert (await status(http))["clock_synchronised"] is False
    # The log names the address another machine opens, not 127.0.0.1.
    serving = next(line for line in journal.splitlines() if "serving stream 'door'" in line)
    assert f"http://{GUEST}:8080/" in serving and "127.0.0.1" not in serving, serving
    # journald stamps lines itself: the daemon's lines carry no second timestamp.
    lines = machine.run("journalctl -u appliance.service -o cat --no-pager").splitlines()
    assert any(line.startswith("INFO appliance.app: serving stream 'door'") for line in lines)
    assert machine.run("avahi-resolve -4 -n frontdoor.local").split()[0] == "frontdoor.local"


def test_an_nvr_reads_rtsp_from_the_service(machine: Machine) -> None:
    # What Frigate or Home Assistant does with rtsp://<device>:8554/<stream>: the packaged daemon,
    # under its unit's hardening, serves the same stream over RTSP (Debian's ffprobe, TCP).
    url = f"rtsp://{GUEST}:8554/door"
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    streams = json.loads(probe.stdout)["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
    journal = machine.run("journalctl -u appliance.service -o cat --no-pager")
    assert f"rtsp://{GUEST}:8554/door" in journal  # the log names the URL to give an NVR


async def test_systemd_restarts_a_killed_daemon(
    machine: Machine, http: aiohttp.ClientSession
) -> None:
    before = show(machine, "MainPID")["MainPID"]
    machine.run("kill -9 $(systemctl show -p MainPID --value appliance.service)")

    async def restarted() -> bool:
        props = show(machine, "MainPID", "NRestarts", "ActiveState")
        return props["MainPID"] not in ("0", before) and props["ActiveState"] == "active"

    await wait_until(restarted, 90, "systemd did not restart the daemon", 1.0)
    assert int(show(machine, "NRestarts")["NRestarts"]) >= 1
    await wait_until(lambda: healthy(http), 90, "no /healthz after the restart", 1.0)


async def test_an_abort_leaves_every_thread_s_stack_in_the_journal(
    machine: Machine, http: aiohttp.ClientSession
) -> None:
    # SIGABRT is what the watchdog sends a loop that stopped pinging: with the unit's
    # PYTHONFAULTHANDLER the journal then says where each thread was, and systemd restarts it.
    before = int(show(machine, "NRestarts")["NRestarts"])
    since = machine.run("date +%s").strip()
    machine.run("kill -ABRT $(systemctl show -p MainPID --value appliance.service)")

    async def restarted() -> bool:
        props = show(machine, "NRestarts", "ActiveState")
        return int(props["NRestarts"]) > before and props["ActiveState"] == "active"

    await wait_until(restarted, 90, "systemd did not restart the aborted daemon", 1.0)
    journal = machine.run(f"journalctl -u appliance.service --since @{since} -o cat --no-pager")
    assert "Fatal Python error: Aborted" in journal, journal[-3000:]
    assert "most recent call first" in journal and "asyncio/base_events.py" in journal
    await wait_until(lambda: healthy(http), 90, "no /healthz after the restart", 1.0)


async def test_watchdog_restarts_a_hung_event_loop(
    machine: Machine, http: aiohttp.ClientSession
) -> None:
    # A shorter watchdog for the test (the unit's is 20 s), then a loop that stops pinging.
    machine.run(
        "mkdir -p /run/systemd/system/appliance.service.d && "
        "printf '[Service]\\nWatchdogSec=5s\\n' > /run/systemd/system/appliance.service.d/test.conf && "
        "systemctl daemon-reload && systemctl restart appliance.service"
    )
    await wait_until(lambda: healthy(http), 90, "no /healthz after the restart", 1.0)
    before = int(show(machine, "NRestarts")["NRestarts"])
    machine.run("kill -STOP $(systemctl show -p MainPID --value appliance.service)")

    async def recovered() -> bool:
        props = show(machine, "NRestarts", "ActiveState")
        return int(props["NRestarts"]) > before and props["ActiveState"] == "active"

    await wait_until(recovered, 120, "the watchdog did not restart the hung daemon", 1.0)
    journal = machine.run("journalctl -u appliance.service --no-pager")
    assert "Watchdog timeout" in journal
    await wait_until(lambda: healthy(http), 90, "no /healthz after the watchdog restart", 1.0)


def test_hardening_rating(machine: Machine) -> None:
    out = machine.run("systemd-analyze security appliance.service --no-pager | tail -1")
    # "→ Overall exposure level for appliance.service: 2.9 OK 🙂"
    score = float(out.split(":")[1].split()[0])
    assert score <= 4.0, out
