"""The architecture, as the imports show it: every module imports anywhere; `core/` imports only
the standard library and `core/`; dependencies point one way and make no circle; only
rtc/internals.py (and send/srtp.py and send/native.py, for the libsrtp pointers) names a private
symbol of aiortc, aioice or pylibsrtp; and importing appliance changes nothing in aiortc or aioice.

The graph is read from the source (ast), not from a hand-kept list, so a new module is checked
as soon as it exists.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import appliance

PACKAGE = Path(appliance.__file__).parent
PRIVATE_OWNERS = {"appliance.rtc.internals", "appliance.send.srtp", "appliance.send.native"}
THIRD_PARTY_WITH_INTERNALS = ("aiortc", "aioice", "pylibsrtp")

# Which room may import which: http → rtc → send → core; rtsp → http (auth), send → core,
# devices (the daemon's headroom);
# capture → devices/encoders → core.
# The composition root (app, cli) and config may import anything.
ALLOWED = {
    "core": {"core"},
    "devices": {"core", "devices"},
    "encoders": {"core", "devices", "encoders", "config"},
    "capture": {"core", "devices", "encoders", "capture", "config"},
    "send": {"core", "send"},
    "rtc": {"core", "send", "rtc", "config"},
    "http": {"core", "send", "rtc", "http", "capture", "devices", "config", "__init__"},
    "rtsp": {"core", "send", "http", "rtsp", "config", "devices"},
}


def all_modules() -> list[str]:
    modules = pkgutil.walk_packages(appliance.__path__, prefix="appliance.")
    return sorted(m.name for m in modules if m.name != "appliance.__main__")  # __main__ runs


def source(name: str) -> Path:
    relative = Path(*name.split(".")[1:])
    package = PACKAGE / relative / "__init__.py"
    return package if package.exists() else PACKAGE / relative.with_suffix(".py")


def imports(name: str, *, module_level_only: bool = False) -> set[str]:
    """The modules `name` imports (absolute names), at module level or anywhere."""
    tree = ast.parse(source(name).read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # what runs at import: not under `if TYPE_CHECKING:`
        nodes = [
            n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.dump(n.test))
        ]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def ours(names: set[str]) -> set[str]:
    modules = set(all_modules())
    return {n for n in names if n in modules}


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else parts[1].removesuffix(".py")


@pytest.mark.parametrize("name", all_modules())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


@pytest.mark.parametrize("name", [m for m in all_modules() if m.startswith("appliance.core")])
def test_core_imports_only_the_standard_library_and_core(name: str) -> None:
    outside = {
        n
        for n in imports(name)
        if n.split(".")[0] not in sys.stdlib_module_names
        and not n.startswith("appliance.core")
        and n != "__future__"
    }
    assert not outside, f"{name} imports {sorted(outside)}: core is bytes in, bytes out"


@pytest.mark.parametrize("name", [m for m in all_modules() if room(m) in ALLOWED])
def test_dependencies_point_one_way(name: str) -> None:
    wrong = {n for n in ours(imports(name)) if room(n) not in ALLOWED[room(name)]}
    assert not wrong, f"{name} ({room(name)}/) imports {sorted(wrong)}"


def test_no_import_circles() -> None:
    graph = {m: ours(imports(m, module_level_only=True)) - {m} for m in all_modules()}
    for m in graph:  # importing a submodule imports its packages too
        graph[m] |= {p for p in graph if p != m and m.startswith(p + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n) :] + [n]
                if not all(c == n or c.startswith(n + ".") or n.startswith(c + ".") for c in cycle):
                    raise AssertionError("import circle: " + " -> ".join(cycle))
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _private_uses(name: str) -> list[str]:
    """Private attributes and names of aiortc, aioice or pylibsrtp that `name` uses."""
    tree = ast.parse(source(name).read_text())
    imported = imports(name)
    if not any(n.split(".")[0] in THIRD_PARTY_WITH_INTERNALS for n in imported):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in THIRD_PARTY_WITH_INTERNALS:
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private or any(p.startswith("_") for p in node.module.split(".")):
                    found.append(f"line {node.lineno}: from {node.module} import {private}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue  # dunders
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue  # our own classes' private state
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize("name", [m for m in all_modules() if m not in PRIVATE_OWNERS])
def test_only_internals_name_private_aiortc_symbols(name: str) -> None:
    uses = _private_uses(name)
    assert not uses, f"{name} reaches into aiortc/aioice/pylibsrtp: {uses} (rtc/internals.py)"


def test_importing_appliance_changes_nothing_in_aiortc() -> None:
    """Patches are installed by rtc.install() at start-up, never at import: import every module
    of appliance in a fresh interpreter and compare aiortc's and aioice's tables before and
    after."""
    code = """
import pkgutil, importlib
import aioice.ice, aiortc
from aiortc import RTCCertificate
from aiortc.codecs import CODECS, HEADER_EXTENSIONS
from aioice.ice import Connection, StunProtocol

def snapshot():
    return (
        [repr(c) for c in CODECS["video"]], [repr(e) for e in HEADER_EXTENSIONS["video"]],
        RTCCertificate._create_ssl_context, StunProtocol.datagram_received,
        Connection.check_incoming, aioice.ice.get_host_addresses,
    )

before = snapshot()
import appliance
for m in pkgutil.walk_packages(appliance.__path__, prefix="appliance."):
    if m.name != "appliance.__main__":
        importlib.import_module(m.name)
assert snapshot() == before, "importing appliance changed aiortc or aioice"
from appliance import rtc
rtc.install()
assert snapshot() != before, "rtc.install() changed nothing: this check checks nothing"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
