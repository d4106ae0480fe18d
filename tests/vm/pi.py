"""The SD card booted as a Raspberry Pi 3 Model B boots it, emulated: Debian's
`qemu-system-aarch64 -M raspi3b` (TCG), the card as the SD card, a USB network device on the
Pi's USB controller, the guest's serial console in a file.

What emulation covers: the card's own kernel, initramfs and device tree (`bcm2837-rpi-3-b.dtb`),
its root file system with every unit (first boot, growfs, networkd, sshd, timesyncd, the daemon),
on four Cortex-A53 cores with 1 GiB, as the card was built.

What it cannot cover, and where that is checked instead:
- The GPU firmware (bootcode.bin, start*.elf) reading `config.txt` and `cmdline.txt`: QEMU loads
  the kernel itself. `Pi` passes `cmdline.txt`'s arguments as the firmware would (with
  `console=serial0` made `ttyAMA0`, the alias the firmware resolves); `config.txt`'s camera and
  memory settings are checked as a file (test_sdcard.py).
- The real NIC and Wi-Fi: a USB network device (`usb-net`) stands in for the Pi's Ethernet, on a
  tap link in the test's network namespace; there is no DHCP server on it, so the kernel's `ip=`
  (systemd-network-generator) gives the guest its address.
- The camera (CSI, libcamera, unicam) and the hardware encoder (VideoCore): absent; the test
  source and libx264 stand in (the V4L2 paths are tested in the amd64 test machine's drivers).
- Speed: TCG on this machine's two cores runs the Pi's four several times slower than a Pi 3.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.vm.machine import tap_up

GUEST = "10.99.4.2"
HOST = "10.99.4.1"
TAP = "tpi0"
SECTOR = 512
BOOT_FILES = ("vmlinuz", "initrd.img", "bcm2837-rpi-3-b.dtb")

# What an owner writes to the card before its first boot: a name, their key, the test pattern at
# 320x240 (what TCG keeps up with), a stream.
FIRST_BOOT = """\
[system]
hostname = "porch"

[ssh]
user = "owner"
authorized_keys = ["{key}"]

[video]
source = "testsrc"
width = 320
height = 240

[stream]
name = "porch"

# Under TCG the emulated Pi runs 10 to 20 times slower than a real one, and on first power-on the
# daemon shares it with first boot, growfs and ssh-keygen: ICE and DTLS took 5.5 s there (a Pi:
# well under 1 s), too close to the default 10 s after which the daemon gives a session up.
[webrtc]
connect_timeout = 60
"""


def missing_tools() -> list[str]:
    need = ("qemu-system-aarch64", "mcopy", "sfdisk", "ssh", "ssh-keygen", "ip")
    return [tool for tool in need if shutil.which(tool) is None]


def boot_partition_offset(card: Path) -> int:
    out = subprocess.run(
        ["sfdisk", "--dump", str(card)], capture_output=True, text=True, check=True
    ).stdout
    first = next(line for line in out.splitlines() if line.startswith(f"{card}1 "))
    start = first.split("start=", 1)[1].split(",", 1)[0]
    return int(start) * SECTOR


def kernel_arguments(cmdline: str) -> str:
    """cmdline.txt as the Pi's firmware hands it on: `serial0` is the firmware's alias for the
    UART it enables (ttyAMA0 on a Pi 3 without Bluetooth in QEMU); the screen console goes."""
    words = [w for w in cmdline.split() if not w.startswith("console=")]
    return " ".join(["console=ttyAMA0,115200", *words])


class Pi:
    """One boot of a copy of `card`, with `first_boot` written to its boot partition as
    `appliance.toml` (as an owner does on a laptop). Use as a context manager; `ssh()` logs in as
    the `[ssh]` user with `key`. The copy keeps what the boots write, so `reboot()` boots it again
    as a second power-on."""

    def __init__(self, card: Path, first_boot: str, key: Path, user: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="appliance-pi-"))
        self.card, self.key, self.user = card, key, user
        self.first_boot = first_boot
        self.powered_on = 0.0  # time.monotonic() when QEMU was started
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Pi:
        try:
            self._prepare()
            tap_up(TAP, HOST)
            self.power_on()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _prepare(self) -> None:
        image = self.dir / "sdcard.img"
        subprocess.run(["cp", "--sparse=always", str(self.card), str(image)], check=True)
        # QEMU's SD card must be a power of two in size; a real card is bigger than the image too,
        # which is what first boot's growfs is for.
        size = image.stat().st_size
        with image.open("r+b") as f:
            f.truncate(1 << (size - 1).bit_length())
        fat = f"{image}@@{boot_partition_offset(image)}"
        (self.dir / "appliance.toml").write_text(self.first_boot)
        subprocess.run(
            ["mcopy", "-i", fat, str(self.dir / "appliance.toml"), "::appliance.toml"], check=True
        )
        for name in (*BOOT_FILES, "cmdline.txt"):
            subprocess.run(["mcopy", "-i", fat, f"::{name}", str(self.dir / name)], check=True)

    def power_on(self) -> None:
        d = self.dir
        append = kernel_arguments((d / "cmdline.txt").read_text())
        append += f" panic=-1 ip={GUEST}::{HOST}:255.255.255.0:::off"
        self._console = d / f"console-{int(time.time())}.log"
        self.powered_on = time.monotonic()
        self._proc = subprocess.Popen(
            [
                "qemu-system-aarch64", "-M", "raspi3b", "-nographic", "-no-reboot",
                "-kernel", str(d / "vmlinuz"), "-initrd", str(d / "initrd.img"),
                "-dtb", str(d / "bcm2837-rpi-3-b.dtb"), "-append", append,
                "-drive", f"if=sd,format=raw,file={d / 'sdcard.img'}",
                "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
                "-device", "usb-net,netdev=n0",
                "-serial", f"file:{self._console}", "-monitor", "none", "-display", "none",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def reboot(self, timeout: float = 180.0) -> None:
        """`reboot` as the owner; QEMU (-no-reboot) exits when the guest restarts; power on again."""
        self.ssh("sudo -n systemctl reboot", check=False)
        assert self._proc is not None
        self._proc.wait(timeout)
        self.power_on()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        subprocess.run(["ip", "link", "del", TAP], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def console(self, last: int = 4000) -> str:
        path = getattr(self, "_console", None)
        return path.read_text(errors="replace")[-last:] if path and path.exists() else ""

    def ssh(self, command: str, check: bool = True, timeout: float = 120.0) -> str:
        """`command` run by the `[ssh]` user over SSH with the configured key; its output."""
        done = subprocess.run(
            [
                "ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", f"{self.user}@{GUEST}", command,
            ],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"ssh {command!r}: {done.returncode}\n{done.stderr}"
        return done.stdout


def new_key(folder: Path) -> tuple[Path, str]:
    """A fresh ed25519 key pair for the owner: (private key, public key line)."""
    key = folder / "owner"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "owner@laptop", "-f", str(key)],
        check=True,
    )
    return key, (folder / "owner.pub").read_text().strip()
