"""HeapTrimmer (devices/memory.py): one malloc_trim after a burst of soon()s, and what it does."""

from __future__ import annotations

import asyncio
import os

import pytest

from appliance.devices.memory import HeapTrimmer


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_a_burst_of_joins_costs_one_trim_and_a_closed_trimmer_none() -> None:
    heap = HeapTrimmer(delay=0.05)
    assert heap.available  # glibc here
    for _ in range(100):
        heap.soon()
    await asyncio.sleep(0.2)
    assert heap.trims == 1
    heap.soon()
    heap.close()
    await asyncio.sleep(0.2)
    assert heap.trims == 1


def test_a_trim_gives_back_the_pages_freed_inside_the_heap() -> None:
    """What a burst of set-ups leaves: 64 MB of malloc'd blocks (bytes over 512 bytes come from
    malloc), one in 64 kept, so that glibc cannot give the rest back from the heap's top."""
    if not HeapTrimmer().available:
        pytest.skip("not glibc")
    blocks = [bytes(1000) for _ in range(64 * 1024)]
    kept = blocks[::64]
    del blocks
    before = rss_mb()
    HeapTrimmer().trim()
    after = rss_mb()
    assert before - after > 30, f"RSS {before:.1f} MB before the trim, {after:.1f} MB after"
    assert len(kept) == 1024
