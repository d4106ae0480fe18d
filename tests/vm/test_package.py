"""The Debian package as a file: lintian, its contents, and that its wheels install offline on
both Pythons it promises (3.10 for JetPack 6, 3.11 for Debian 12 and Raspberry Pi OS)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.vm.machine import cached_product, require

pytestmark = [pytest.mark.image]


@pytest.fixture(scope="module")
def deb() -> Path:
    require(cached_product() / "root.ext4", "product image and package")
    return sorted((cached_product() / "deb").glob("appliance_*_amd64.deb"))[0]


def test_lintian_is_clean(deb: Path) -> None:
    out = subprocess.run(
        ["lintian", "--tag-display-limit", "0", str(deb)], capture_output=True, text=True
    )
    findings = [line for line in out.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert out.returncode == 0 and findings == [], out.stdout + out.stderr


def test_contents_and_maintainer_scripts(deb: Path) -> None:
    files = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, check=True, text=True
    ).stdout
    for path in (
        "./lib/systemd/system/appliance.service",
        "./lib/systemd/system/appliance-firstboot.service",
        "./etc/appliance/appliance.toml",
        "./usr/share/doc/appliance/copyright",
    ):
        assert path in files
    assert "drwx------ root/root" in next(
        line for line in files.splitlines() if "credentials" in line
    )
    info = subprocess.run(
        ["dpkg-deb", "-I", str(deb)], capture_output=True, check=True, text=True
    ).stdout
    assert "Depends: python3 (>= 3.10), python3-venv, libasound2, adduser, systemd" in info
    control = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    listing = subprocess.run(
        ["tar", "-t"], input=control, capture_output=True, check=True
    ).stdout.decode()
    assert {"./conffiles", "./postinst", "./prerm", "./postrm"} <= set(listing.split())


def test_the_wheel_carries_the_c_packet_loop_for_both_architectures(
    deb: Path, tmp_path: Path
) -> None:
    """image/build_native.py built send/packetloop.c for x86_64 and, with Debian's cross compiler,
    aarch64: each an ELF shared object for its machine (one per architecture: cffi's ABI mode
    needs none per CPython)."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    (wheel,) = (tmp_path / "usr/share/appliance/wheels").glob("appliance-*.whl")
    machines = {"x86_64": 62, "aarch64": 183}  # ELF e_machine: EM_X86_64, EM_AARCH64
    with zipfile.ZipFile(wheel) as z:
        for machine, e_machine in machines.items():
            elf = z.read(f"appliance/send/lib/packetloop-{machine}.so")
            assert elf[:4] == b"\x7fELF" and elf[4] == 2  # 64-bit
            assert int.from_bytes(elf[16:18], "little") == 3  # ET_DYN: a shared object
            assert int.from_bytes(elf[18:20], "little") == e_machine, machine


@pytest.mark.parametrize("python", ["3.10", "3.11"])
def test_wheels_install_offline_on_each_python(deb: Path, tmp_path: Path, python: str) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    wheels = tmp_path / "usr/share/appliance/wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index", "--find-links",
         str(wheels), "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
         "--platform", "manylinux_2_36_x86_64", "--platform", "manylinux_2_28_x86_64",
         "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
         "--platform", "linux_x86_64", "--target", str(tmp_path / "target"), "appliance"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
