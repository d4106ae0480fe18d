"""A short fuzz run of every target in tests/fuzz.py, in each test run: random bytes, and
mutations of a real input (lines dropped, doubled, cut, or given other values), which reach far
deeper than random bytes do. The long, coverage-guided run is tests/perf/bench_fuzz.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import SEEDS, mutate, targets

TARGETS = targets()
SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def inputs(name: str) -> st.SearchStrategy[bytes]:
    seeds = SEEDS[name]
    mutated = [st.randoms(use_true_random=False).map(lambda r, s=s: mutate(s, r)) for s in seeds]
    return st.one_of(st.binary(max_size=512), *mutated)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_takes_its_seeds(name: str) -> None:
    for seed in SEEDS[name]:
        TARGETS[name](seed)


def _fuzz(name: str) -> Callable[[], None]:
    @SETTINGS
    @given(data=inputs(name))
    def run(data: bytes) -> None:
        TARGETS[name](data)

    return run


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_random_and_mutated_input(name: str) -> None:
    _fuzz(name)()
