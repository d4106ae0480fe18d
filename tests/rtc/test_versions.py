"""The aiortc seam on the oldest aiortc and aioice the pins allow (aiortc 1.15, aioice 0.10: what
Python 3.10 on JetPack 6 gets), as well as on the newest this environment has: tests/run.sh makes
`.venv-oldest` with them, and this test runs there the behavioural contract tests
(test_internals.py), the jitter buffers (test_ingest.py) and the hostile-network tests, which
exercise rtc.install()'s guard in front of aioice."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OLDEST = ROOT / ".venv-oldest/bin/python"


def test_internals_hold_on_the_oldest_aiortc_and_aioice() -> None:
    assert OLDEST.exists(), f"{OLDEST} is missing: sh tests/run.sh makes it"
    versions = subprocess.run(
        [str(OLDEST), "-c", "from importlib.metadata import version as v; "
         "print(v('aiortc'), v('aioice'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert versions[0].startswith("1.15.") and versions[1].startswith("0.10."), versions
    run = subprocess.run(
        [str(OLDEST), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/rtc/test_internals.py", "tests/rtc/test_ingest.py", "tests/e2e/test_hostile.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
