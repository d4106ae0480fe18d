"""The package's build hook (hatchling): the C packet loop, built for every architecture we can.

appliance/send/packetloop.c becomes appliance/send/lib/packetloop-<machine>.so for this machine (`$CC`,
else `cc`) and for each other architecture the device ships on whose cross compiler is installed
(`aarch64-linux-gnu-gcc` from Debian's gcc-aarch64-linux-gnu on an x86 host, `x86_64-linux-gnu-gcc`
on an arm64 one). The wheel carries every one built; appliance/send/native.py loads the one for
the machine it runs on, with cffi in ABI mode, so no Python headers and no per-CPython build.

It also writes appliance/send/_packetloop_ffi.py: the declarations of packetloop.h, parsed here by
cffi (out-of-line ABI mode), so that the daemon does not parse them at every start (cffi's parser
costs about 70 ms of start-up on this x86 machine, several times that on a Pi). Without cffi at
build time it is not written, and the daemon parses the header itself.

A compiler that is missing or fails never fails the build: the daemon then sends from the Python
loop and says so in its log. image/deb/build.sh checks that the package for a device carries the
loop for that device's architecture.

Also runs by hand: `python3 image/build_native.py` builds into the source tree (what an editable
install does) and prints what it built.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent.parent / "appliance" / "send" / "packetloop.c"
HEADER = SOURCE.with_name("packetloop.h")
FFI_MODULE = SOURCE.with_name("_packetloop_ffi.py")
MACHINES = {"x86_64": "x86_64-linux-gnu-gcc", "aarch64": "aarch64-linux-gnu-gcc"}
FLAGS = ["-O2", "-fPIC", "-shared", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Werror"]


def compilers(machine: str) -> list[str]:
    """Compilers that build for `machine`, the host's own first where it is that machine."""
    found = []
    if machine == platform.machine():
        found += [os.environ.get("CC", "cc"), "gcc"]
    found.append(MACHINES[machine])
    return [c for c in dict.fromkeys(found) if shutil.which(c)]


def build(out_dir: Path = SOURCE.parent / "lib") -> tuple[list[Path], list[str]]:
    """(the shared objects built, why the others were not)."""
    out_dir.mkdir(exist_ok=True)
    built: list[Path] = []
    missing: list[str] = []
    for machine in MACHINES:
        target = out_dir / f"packetloop-{machine}.so"
        tried = compilers(machine)
        for cc in tried:
            result = subprocess.run(
                [cc, *FLAGS, "-o", str(target), str(SOURCE)], capture_output=True, text=True
            )
            if result.returncode == 0:
                built.append(target)
                break
            missing.append(f"{machine}: {cc} failed: {result.stderr.strip()[-400:]}")
        else:
            if not tried:
                missing.append(f"{machine}: no compiler found ({MACHINES[machine]} for one)")
            target.unlink(missing_ok=True)  # never ship a stale one
    return built, missing


def ffi_module(out: Path = FFI_MODULE) -> Path | None:
    """Write packetloop.h's declarations as cffi's out-of-line ABI module `out`; None, and any
    old one removed, without cffi."""
    try:
        from cffi import FFI
    except ImportError:
        out.unlink(missing_ok=True)
        return None
    builder = FFI()
    builder.cdef(HEADER.read_text())
    builder.set_source("appliance.send._packetloop_ffi", None)
    builder.emit_python_code(str(out))
    return out


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run by hand, outside a build
    BuildHookInterface = object  # type: ignore[assignment,misc]


class NativeBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        built, missing = build()
        for why in missing:
            print(f"appliance: C packet loop not built for {why}", file=sys.stderr)
        declarations = ffi_module()
        if declarations is None:
            print(
                "appliance: no cffi to write _packetloop_ffi.py: parsed at start-up",
                file=sys.stderr,
            )
        else:
            built.append(declarations)
        root = Path(self.root)
        build_data.setdefault("artifacts", []).extend(str(path.relative_to(root)) for path in built)


if __name__ == "__main__":
    built, missing = build()
    declarations = ffi_module()
    if declarations is not None:
        built.append(declarations)
    for path in built:
        print(f"built {path}")
    for why in missing:
        print(f"not built: {why}")
