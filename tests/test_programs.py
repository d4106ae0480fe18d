"""A fresh Debian 12 machine can run the README's test command: every program the tests and the
image builds start is installed by tests/run.sh (tests/packages.txt) or comes with a minimal
Debian 12 system (Priority: required).

Runs everywhere, not in tests/vm, so that a gap fails on every machine: a program that this
machine happens to have from earlier work (as `sfdisk` once did) is still reported.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.programs import installed_by_run_sh, shell_programs, started

# Every program the tests and host scripts start, and the Debian 12 package to install for it.
PROGRAMS = {
    "apt-get": "apt",
    "arch-test": "arch-test",
    "blkid": "util-linux",
    "cat": "coreutils",
    "cc": "gcc",
    "chmod": "coreutils",
    "chromium": "chromium",
    "chroot": "coreutils",
    "cp": "coreutils",
    "cut": "coreutils",
    "dd": "coreutils",
    "debugfs": "e2fsprogs",
    "dpkg-deb": "dpkg",
    "dpkg-query": "dpkg",
    "du": "coreutils",
    "e2fsck": "e2fsprogs",
    "ethtool": "ethtool",
    "ffmpeg": "ffmpeg",
    "ffprobe": "ffmpeg",
    "find": "findutils",
    "genimage": "genimage",
    "gpg": "gpg",
    "grep": "grep",
    "gzip": "gzip",
    "install": "coreutils",
    "ip": "iproute2",
    "janus": "janus",
    "lintian": "lintian",
    "ls": "coreutils",
    "mcopy": "mtools",
    "mdir": "mtools",
    "mkdir": "coreutils",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mktemp": "coreutils",
    "mmdebstrap": "mmdebstrap",
    "mount": "mount",
    "mountpoint": "util-linux",
    "mtype": "mtools",
    "mv": "coreutils",
    "nft": "nftables",
    "node": "nodejs",
    "npm": "npm",
    "python3": "python3",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-system-x86_64": "qemu-system-x86",
    "realpath": "coreutils",
    "rm": "coreutils",
    "sed": "sed",
    "sfdisk": "fdisk",
    "sh": "dash",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "tar": "tar",
    "tr": "coreutils",
    "turnserver": "coturn",
    "update-binfmts": "binfmt-support",
}

# The packages of a minimal Debian 12 system (Priority: required) that provide programs above.
MINIMAL_DEBIAN = {
    "apt", "coreutils", "dash", "dpkg", "e2fsprogs", "findutils", "grep", "gzip", "mount", "sed", "tar",
    "util-linux",
}  # fmt: skip


def test_every_program_started_is_named_with_its_package() -> None:
    unknown = {p: where for p, where in started().items() if p not in PROGRAMS}
    assert not unknown, "\n".join(
        f"{program} (started at {', '.join(where[:3])}) is not in tests/test_programs.py's "
        "PROGRAMS: add it with the Debian package that provides it, and that package to "
        "tests/packages.txt unless a minimal Debian 12 has it"
        for program, where in sorted(unknown.items())
    )


def test_every_program_is_installed_by_run_sh_or_comes_with_debian() -> None:
    run_sh = installed_by_run_sh()
    missing = {
        program: package
        for program, package in PROGRAMS.items()
        if package not in run_sh and package not in MINIMAL_DEBIAN
    }
    assert not missing, "\n".join(
        f"{program} (Debian package {package}) is neither installed by tests/run.sh "
        "(tests/packages.txt) nor part of a minimal Debian 12 system"
        for program, package in sorted(missing.items())
    )


def _dpkg(*args: str) -> str:
    return subprocess.run(["dpkg-query", *args], capture_output=True, text=True).stdout


def test_minimal_debian_is_priority_required() -> None:
    """The packages counted as always there are: a required package is installed on any Debian."""
    priorities = dict(
        line.split(" ", 1)
        for line in _dpkg("-W", "-f", "${Package} ${Priority}\n", *sorted(MINIMAL_DEBIAN))
        .strip()
        .splitlines()
    )
    assert priorities == dict.fromkeys(MINIMAL_DEBIAN, "required")


def _provided() -> dict[str, str]:
    """Virtual package -> the installed package that provides it (as NodeSource's nodejs provides
    npm, which tests/run.sh then does not install: the two conflict)."""
    out = {}
    for line in _dpkg("-W", "-f", "${db:Status-Abbrev}|${Package}|${Provides}\n").splitlines():
        status, package, provides = line.split("|", 2)
        if status.startswith("ii"):
            for name in provides.split(","):
                if name.strip():
                    out[name.split("(")[0].strip()] = package
    return out


def test_packages_run_sh_installs_are_installed() -> None:
    """Fails, rather than letting tests skip, on a machine where tests/run.sh has not run."""
    states = _dpkg("-W", "-f", "${Package} ${Status}\n", *sorted(installed_by_run_sh()))
    installed = {line.split()[0] for line in states.splitlines() if line.endswith("ok installed")}
    installed |= installed_by_run_sh() & set(_provided())
    assert installed == installed_by_run_sh(), (
        f"not installed: {sorted(installed_by_run_sh() - installed)}: run sh tests/run.sh"
    )


@pytest.fixture(scope="module")
def owners() -> dict[str, set[str]]:
    """program -> the installed packages that own it at /bin, /usr/bin, /sbin or /usr/sbin."""
    paths = [f"{d}/{p}" for p in PROGRAMS for d in ("/bin", "/usr/bin", "/sbin", "/usr/sbin")]
    found: dict[str, set[str]] = {}
    for line in _dpkg("-S", *paths).splitlines():
        if line.startswith("diversion"):
            continue
        packages, path = line.split(": ", 1)
        for package in packages.split(", "):
            found.setdefault(path.rsplit("/", 1)[-1], set()).add(package.split(":")[0])
    return found


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_program_is_on_the_path_from_its_package(program: str, owners: dict[str, set[str]]) -> None:
    """The table is true: the program is there, and its package (or one the package depends on,
    as python3 on python3-minimal) provides it."""
    package = PROGRAMS[program]
    assert shutil.which(program) is not None, f"{program} ({package}) is not on the PATH"
    if program not in owners:  # an alternative (cc): no package owns the link itself
        return
    depends = _dpkg("-W", "-f", "${Depends}, ${Pre-Depends}", package)
    provided = {package} | {d.strip().split(" ")[0] for d in depends.replace("|", ",").split(",")}
    provider = _provided().get(package)
    if provider is not None:  # installed in its stead (NodeSource's nodejs for npm)
        provided.add(provider)
    assert owners[program] & provided, f"{program} is provided by {owners[program]}, not {package}"


def test_shell_commands_are_read_as_the_shell_runs_them(tmp_path: Path) -> None:
    script = tmp_path / "build.sh"
    script.write_text(
        """#!/bin/sh
set -eu
OUT=$(realpath -m "$2")
case "$1" in
    amd64|arm64) machine=x86_64 ;;
    *) echo "no" >&2; exit 2 ;;
esac
if [ -x "$OUT/a" ]; then sfdisk -J "$OUT" 2>/dev/null | grep -q x || true; fi
cat > "$OUT/unit" <<'UNIT'
ExecStart=/usr/bin/ssh-keygen -A
UNIT
chroot "$OUT" systemctl enable ssh && rm -f "$OUT/x"
mmdebstrap --customize-hook='chroot "$1" make -C /x
mkfs.vfat "$1/y"' --customize-hook="copy-in /a /" bookworm "$OUT" \\
    && LANG=C dpkg-deb --build "$OUT"
"""
    )
    assert sorted({p for p, _ in shell_programs(script)}) == [
        "cat", "chroot", "dpkg-deb", "grep", "mkfs.vfat", "mmdebstrap", "realpath", "rm", "sfdisk",
    ]  # fmt: skip
    lines = {p: n for p, n in shell_programs(script)}
    assert lines["sfdisk"] == 8 and lines["rm"] == 12 and lines["dpkg-deb"] == 13
