"""A short fuzz run of every target in tests/fuzz.py, in each test run: random bytes, and
mutations of a real input (lines dropped, doubled, cut, or given other values), which reach far
deeper than random bytes do. The long, coverage-guided run is tests/perf/bench_fuzz.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import SEEDS, mutate, targets

SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def inputs(name: str) -> st.SearchStrategy[bytes]:
    seeds = SEEDS[name]
    mutated = [st.randoms(use_true_random=False).map(lambda r, s=s: mutate(s, r)) for s in seeds]
    return st.one_of(st.binary(max_size=512), *mutated)


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, Callable[[bytes], None]]]:
    made = targets()
    yield made
    for target in made.values():
        close = getattr(target, "close", None)
        if close is not None:
            close()


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_target_takes_its_seeds(name: str, built: dict[str, Callable[[bytes], None]]) -> None:
    for seed in SEEDS[name]:
        built[name](seed)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_target_survives_random_and_mutated_input(
    name: str, built: dict[str, Callable[[bytes], None]]
) -> None:
    target = built[name]

    @SETTINGS
    @given(data=inputs(name))
    def run(data: bytes) -> None:
        target(data)

    run()
