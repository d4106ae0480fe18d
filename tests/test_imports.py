"""Every module imports anywhere, and the core imports no I/O library."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import appliance

CORE = ["h264", "sdp", "stream", "stats", "media", "config", "errors"]
EDGE_LIBRARIES = ["aiohttp", "aiortc", "aioice", "av", "numpy", "picamera2", "alsaaudio", "v4l2"]


def all_modules() -> list[str]:
    modules = pkgutil.walk_packages(appliance.__path__, prefix="appliance.")
    return sorted(m.name for m in modules if m.name != "appliance.__main__")  # __main__ runs


@pytest.mark.parametrize("name", all_modules())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


@pytest.mark.parametrize("name", CORE)
def test_core_module_imports_no_io_library(name: str) -> None:
    code = (
        f"import sys, appliance.{name}; "
        f"print(','.join(m for m in {EDGE_LIBRARIES!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
