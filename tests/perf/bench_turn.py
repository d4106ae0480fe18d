"""Time to first frame through TURN, trickle against no trickle, and the time a viewer takes to
play again after its network changes: run it, read the figures.

    .venv/bin/python -m tests.perf.bench_turn [--joins 20] [--moves 5]

The topology of tests/e2e/nat.py (the camera and the viewer each behind a NAT, Debian's coturn
between them, no direct UDP path), the daemon started as its own process with coturn's shared
secret, headless Chromium in the viewer's network. Each join is a fresh page; the figure is the
page's own, from the start of the connection (before its OPTIONS for the ICE servers) to the first
presented frame. `?trickle=0` makes the page wait for its ICE gathering (the TURN allocation
included) before its POST, as the page did before it trickled.

The links here have no delay (this kernel has no netem): the difference is what trickling saves
on a LAN-fast path to TURN; on a phone it grows by the allocation's two round trips to TURN.
Network change: the viewer's router gets a new public address (tests/e2e/nat.py `move_phone`),
`--moves` times; the figure runs from the change to the first frame of the page's new session.

Nothing here asserts a time; it prints figures (and JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests import netns
from tests.e2e.nat import Internet
from tests.e2e.peers import CHROMIUM, chromium
from tests.e2e.test_nat import SECRET, URL, config_text, daemon_in, selected_pair, turn_server
from tests.perf.bench_join import percentile


async def joins(browser: Any, count: int, trickle: bool) -> list[float]:
    times = []
    query = "" if trickle else "?trickle=0"
    for _ in range(count):
        page = await browser.new_page()
        await page.goto(f"{URL}/{query}")
        await page.wait_for_function(
            "window.viewer && window.viewer.firstFrameMs !== null", timeout=30000, polling=20
        )
        assert "relay" in (await selected_pair(page)).values()
        times.append(float(await page.evaluate("window.viewer.firstFrameMs")))
        await page.close()  # pagehide: the page DELETEs its session
        await asyncio.sleep(0.3)
    return times


async def network_changes(browser: Any, net: Internet, count: int) -> list[float]:
    """Seconds from the phone's new public address to the first frame of its new session."""
    page = await browser.new_page()
    await page.goto(f"{URL}/")
    await page.wait_for_function("window.viewer && window.viewer.framesPresented >= 30")
    times = []
    for _ in range(count):
        before = await page.evaluate("window.viewer.sessions")
        moved = await page.evaluate("performance.now()")
        net.move_phone()
        await page.wait_for_function(
            f"window.viewer.sessions > {before} && window.viewer.firstFrameMs !== null",
            timeout=60000, polling=20,
        )  # fmt: skip
        shown = await page.evaluate("window.viewer.connectStartedAt + window.viewer.firstFrameMs")
        times.append((shown - moved) / 1000)
        await asyncio.sleep(2)
    await page.close()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    problem = netns.enter()
    if problem:
        sys.exit(f"bench_turn: no private network namespace: {problem}")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-turn-") as tmp, Internet() as net:
        folder = Path(tmp)
        with net.coturn(folder, secret=SECRET) as turn_url:
            text = config_text(folder / "home", turn_server("secret", turn_url))
            wrapper = str(net.mobile.wrapper(folder, CHROMIUM))
            async with daemon_in(net.home, folder / "home", text):
                async with chromium(executable=wrapper) as browser:
                    await joins(browser, 2, True)  # warm-up: Chromium's and the daemon's caches
                    for name, trickle in (("trickle", True), ("no trickle", False)):
                        times = await joins(browser, args.joins, trickle)
                        results[name] = {
                            "median_ms": statistics.median(times),
                            "p95_ms": percentile(times, 95),
                            "min_ms": min(times),
                            "max_ms": max(times),
                        }
                    moves = await network_changes(browser, net, args.moves)
                    results["network change"] = {
                        "median_s": statistics.median(moves),
                        "min_s": min(moves),
                        "max_s": max(moves),
                    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"time to first frame through TURN, {args.joins} joins each (ms):")
    for name in ("trickle", "no trickle"):
        r = results[name]
        print(
            f"  {name:>10}: median {r['median_ms']:.0f}, p95 {r['p95_ms']:.0f}, "
            f"min {r['min_ms']:.0f}, max {r['max_ms']:.0f}"
        )
    m = results["network change"]
    print(
        f"network change ({args.moves} moves), new address to the first frame again: "
        f"median {m['median_s']:.1f} s, min {m['min_s']:.1f}, max {m['max_s']:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
