"""The long fuzz run: every target of tests/fuzz.py, coverage-guided by atheris (libFuzzer), for a
million inputs or more each.

    .venv/bin/python -m tests.perf.bench_fuzz [--runs 1000000] [--targets offer,trickle,...]

Each target runs in its own process (libFuzzer owns the process it runs in), seeded with the
target's real inputs (tests/fuzz.py SEEDS) and their mutations. A target that raises what it must
not stops its run: the crashing input is written to fuzz-crashes/<target>/ and the run reports it.
Figures per target: inputs run, seconds, inputs per second, coverage (libFuzzer's "cov" and "ft"
counters at the end), and crashes. atheris is a test dependency on x86_64 (tests/run.sh installs
it); elsewhere this benchmark says so and stops.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, atheris
import aiohttp, aioice.ice, aiortc, av, numpy, pylibsrtp  # libraries: not instrumented, faster
with atheris.instrument_imports():
    import appliance.core.sdp, appliance.rtc, appliance.config, appliance.firstboot, appliance.send.sender
    from tests import fuzz
name = sys.argv[1]
target = fuzz.targets()[name]
atheris.Setup(sys.argv[1:], target)
atheris.Fuzz()
"""


def run(name: str, runs: int, out: Path) -> dict[str, object]:
    from tests.fuzz import SEEDS, mutate

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    import random

    rng = random.Random(1)
    for i, seed in enumerate(SEEDS[name]):
        (corpus / f"seed-{i}").write_bytes(seed)
        for j in range(20):
            (corpus / f"mutated-{i}-{j}").write_bytes(mutate(seed, rng))
    crashes = out / name
    crashes.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable, "-c", CHILD, name, f"-runs={runs}", f"-artifact_prefix={crashes}/",
            "-max_len=4096", "-print_final_stats=1", str(corpus),
        ],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    seconds = time.monotonic() - started
    log = proc.stdout + proc.stderr
    done = re.findall(r"stat::number_of_executed_units: (\d+)", log)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    executed = int(done[-1]) if done else 0
    return {
        "target": name,
        "runs": executed,
        "seconds": round(seconds, 1),
        "per_second": round(executed / seconds) if seconds else 0,
        "cov": int(cov[-1][0]) if cov else None,
        "ft": int(cov[-1][1]) if cov else None,
        "crashed": proc.returncode != 0,
        "tail": "" if proc.returncode == 0 else log[-3000:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--targets", default="")
    parser.add_argument("--out", type=Path, default=Path("fuzz-crashes"))
    args = parser.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed here (x86_64 only): pip install atheris")
        return 2
    from tests.fuzz import SEEDS

    names = args.targets.split(",") if args.targets else sorted(SEEDS)
    failed = False
    print(f"{'target':<10} {'inputs':>10} {'seconds':>8} {'per s':>7} {'cov':>6} {'ft':>7}  crash")
    for name in names:
        r = run(name, args.runs, args.out)
        print(
            f"{r['target']:<10} {r['runs']:>10} {r['seconds']:>8} {r['per_second']:>7} "
            f"{r['cov']!s:>6} {r['ft']!s:>7}  {'YES' if r['crashed'] else 'no'}",
            flush=True,
        )
        if r["crashed"]:
            failed = True
            print(r["tail"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
