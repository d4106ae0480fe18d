"""The C packet loop's build (image/build_native.py, the package's build hook) and its fallback:
built for both architectures where the compilers are (tests/run.sh installs them), never a
failed build where they are not, and the Python loop, with one log line, where the loop is
missing or turned off."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def build_native() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_native", ROOT / "image/build_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF"
    return int.from_bytes(head[18:20], "little")


def test_both_architectures_are_built_where_their_compilers_are(tmp_path: Path) -> None:
    built, missing = build_native().build(tmp_path)
    assert missing == []
    assert sorted(p.name for p in built) == ["packetloop-aarch64.so", "packetloop-x86_64.so"]
    assert elf_machine(tmp_path / "packetloop-x86_64.so") == 62  # EM_X86_64
    assert elf_machine(tmp_path / "packetloop-aarch64.so") == 183  # EM_AARCH64


def test_no_compiler_is_no_failed_build_and_leaves_nothing_stale(
    tmp_path: Path, monkeypatch
) -> None:
    stale = tmp_path / "packetloop-x86_64.so"
    stale.write_bytes(b"an old build")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no cc, gcc or cross compiler to be found
    monkeypatch.delenv("CC", raising=False)
    built, missing = build_native().build(tmp_path)
    assert built == []
    assert len(missing) == 2 and all("no compiler found" in why for why in missing)
    assert "aarch64-linux-gnu-gcc" in " ".join(missing)
    assert not stale.exists()


def test_without_the_c_loop_the_python_loop_serves_and_says_so_once() -> None:
    program = """
import logging, socket
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from pylibsrtp import Policy, Session
from appliance.core.ring import PacketRing
from appliance.send import native
from appliance.send.sender import Negotiated, RtpSender
from appliance.send.udp import UdpOutput
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for name in ("a", "b"):
    sender = RtpSender(name, PacketRing(16, 1200), Negotiated(96, 1, {}, None, "c"),
                       Session(Policy(bytes(30), Policy.SSRC_ANY_OUTBOUND)),
                       UdpOutput(sock, ("127.0.0.1", 9)), lambda: None)
    print(sender.packet_loop)
    sender.close()
sock.close()
"""
    env = {**os.environ, "APPLIANCE_PACKET_LOOP": "python", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "python"]
    said = [line for line in out.stderr.splitlines() if "packet loop" in line]
    assert said == [
        "appliance.send.native: the C packet loop is not here (APPLIANCE_PACKET_LOOP=python): "
        "the Python send path serves"
    ]


def test_a_loop_built_from_another_header_is_refused_not_run(tmp_path: Path) -> None:
    """A shared object left from before packetloop.h changed (an editable install not rebuilt)
    would read and write the struct at the wrong places: it is refused, and the Python loop
    serves, rather than memory being corrupted."""
    from appliance.send import native

    source = tmp_path / "src"
    source.mkdir()
    header = (ROOT / "appliance/send/packetloop.h").read_text()
    grown = header.replace("uint64_t report_errors;", "uint64_t report_errors;\n    int added;")
    assert grown != header
    (source / "packetloop.h").write_text(grown)
    (source / "packetloop.c").write_text((ROOT / "appliance/send/packetloop.c").read_text())
    stale = tmp_path / "packetloop-stale.so"
    subprocess.run(
        ["cc", *build_native().FLAGS, "-o", str(stale), str(source / "packetloop.c")], check=True
    )
    lib, why = native.load(stale)
    assert lib is None and why is not None and "another packetloop.h" in why
    current, why = native.load(native.library_path())
    assert current is not None and why is None


def ctypes_of(ffi: Any, lib: Any) -> dict[str, Any]:
    """What an FFI says of packetloop.h: the struct's size and fields, and the functions' types."""
    struct = ffi.typeof("struct pl_viewer")
    return {
        "size": ffi.sizeof(struct),
        "fields": [(name, field.type.cname, field.offset) for name, field in struct.fields],
        "functions": {
            name: ffi.typeof(getattr(lib, name)).cname
            for name in ("pl_layout", "pl_send_all", "pl_report_all")
        },
        "types": sorted(ffi.list_types()[0]),
    }


def test_the_declarations_written_at_build_are_packetloop_h_and_serve_the_daemon(
    tmp_path: Path,
) -> None:
    """cffi's out-of-line module the build hook writes (no C parser at the daemon's start-up)
    declares exactly what packetloop.h does; the daemon uses it where it was built, and parses
    the header itself where it was not."""
    from cffi import FFI

    from appliance.send import native

    written = build_native().ffi_module(tmp_path / "_packetloop_ffi.py")
    assert written is not None
    spec = importlib.util.spec_from_file_location("written_ffi", written)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parsed = FFI()
    parsed.cdef((ROOT / "appliance/send/packetloop.h").read_text())
    so = str(native.library_path())
    assert ctypes_of(module.ffi, module.ffi.dlopen(so)) == ctypes_of(parsed, parsed.dlopen(so))
    assert native.DECLARATIONS == "built"  # the editable install's build hook wrote it

    program = """
import sys
sys.modules["appliance.send._packetloop_ffi"] = None  # as where it was not built
from appliance.send import native
print(native.DECLARATIONS, native.LIB is not None)
"""
    out = subprocess.run(
        [sys.executable, "-c", program], env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["parsed", "True"]
