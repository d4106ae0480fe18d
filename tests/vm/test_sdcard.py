"""The Raspberry Pi SD card image (flavor "debian": Debian 12 arm64 + raspi-firmware + our .deb),
checked as a file: partitions, labels, the boot partition's files, the root file system's
integrity and what is installed and enabled in it. Booting it as a Raspberry Pi is test_pi.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.vm.machine import cached_sdcard, require

pytestmark = [pytest.mark.image]

SECTOR = 512


@pytest.fixture(scope="module")
def card() -> Path:
    return require(cached_sdcard() / "sdcard.img", "Raspberry Pi SD card")


def run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, check=True, text=True).stdout


def partitions(card: Path) -> list[dict[str, object]]:
    table = json.loads(run("sfdisk", "-J", str(card)))
    assert table["partitiontable"]["label"] == "dos"
    parts: list[dict[str, object]] = table["partitiontable"]["partitions"]
    return parts


def probe(card: Path, start: int) -> dict[str, str]:
    out = subprocess.run(
        ["blkid", "-p", "-o", "export", "-O", str(start * SECTOR), str(card)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def rootfs(card: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = partitions(card)[1]
    out = tmp_path_factory.mktemp("rootfs") / "rootfs.ext4"
    subprocess.run(
        ["dd", f"if={card}", f"of={out}", f"bs={SECTOR}", f"skip={root['start']}",
         f"count={root['size']}", "status=none"],
        check=True,
    )  # fmt: skip
    return out


def debugfs(fs: Path, command: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", command, str(fs)], capture_output=True, text=True
    ).stdout


def test_two_partitions_labelled_as_raspberry_pi_os(card: Path) -> None:
    boot, root = partitions(card)
    assert boot["type"] == "c" and boot.get("bootable") is True  # FAT32 (LBA)
    assert root["type"] == "83"
    assert probe(card, int(str(boot["start"])))["LABEL"] == "bootfs"
    assert probe(card, int(str(boot["start"])))["TYPE"] == "vfat"
    assert probe(card, int(str(root["start"])))["LABEL"] == "rootfs"
    assert probe(card, int(str(root["start"])))["TYPE"] == "ext4"


def test_boot_partition_has_firmware_kernel_and_camera_config(card: Path) -> None:
    offset = int(str(partitions(card)[0]["start"])) * SECTOR
    fat = f"{card}@@{offset}"
    files = run("mdir", "-b", "-i", fat, "::")
    names = {line.rsplit("/", 1)[-1] for line in files.split()}
    assert {"start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "vmlinuz", "initrd.img"} <= names
    config = run("mtype", "-i", fat, "::config.txt")
    assert "camera_auto_detect=1" in config and "arm_64bit=1" in config
    cmdline = run("mtype", "-i", fat, "::cmdline.txt")
    assert "root=LABEL=rootfs" in cmdline


def test_root_file_system_is_clean_and_has_the_service_enabled(rootfs: Path) -> None:
    fsck = subprocess.run(["e2fsck", "-fn", str(rootfs)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    wants = "/etc/systemd/system/multi-user.target.wants"
    units = ("appliance", "appliance-firstboot", "appliance-growfs", "avahi-daemon")
    for unit in (f"{name}.service" for name in units):
        assert "Type: symlink" in debugfs(rootfs, f"stat {wants}/{unit}"), unit
    fstab = debugfs(rootfs, "cat /etc/fstab")
    assert "LABEL=rootfs / ext4" in fstab and "LABEL=bootfs /boot/firmware vfat" in fstab
    status = debugfs(rootfs, "cat /var/lib/dpkg/status")
    entry = status.split("Package: appliance\n", 1)[1].split("\n\n", 1)[0]
    assert "Status: install ok installed" in entry and "Architecture: arm64" in entry
    assert "Type: regular" in debugfs(rootfs, "stat /opt/appliance/venv/bin/appliance")
    assert debugfs(rootfs, "cat /etc/hostname").strip() == "appliance"


def test_the_card_keeps_time_and_brings_usb_ethernet_up(rootfs: Path) -> None:
    """A Pi has no clock: timesyncd sets it from the network, fake-hwclock keeps it moving across
    reboots without one. USB Ethernet adapters named usb0 are wired links too."""
    for unit in ("systemd-timesyncd.service", "fake-hwclock.service", "fake-hwclock-save.timer"):
        places = [
            f"/etc/systemd/system/{target}.target.wants/{unit}"
            for target in ("sysinit", "multi-user", "timers")
        ]
        assert any("Type: symlink" in debugfs(rootfs, f"stat {p}") for p in places), unit
    wired = debugfs(rootfs, "cat /etc/systemd/network/99-wired.network")
    match = next(line for line in wired.splitlines() if line.startswith("Name="))
    assert set(match.split("=", 1)[1].split()) >= {"en*", "eth*", "usb*"}
