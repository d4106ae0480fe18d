from __future__ import annotations

import os

import pytest

from tests import netns

# First thing, before any other conftest imports numpy (whose thread pool would make the process
# multithreaded, which unshare refuses for a user namespace): the whole session runs in its own
# network namespace.
_netns_problem = netns.enter()


@pytest.fixture(scope="session", autouse=True)
def rtc_installed() -> None:
    """What app.py does at start-up, for the whole session: tests drive rtc without a daemon too,
    and their own aiortc peers share the process (tests/test_imports.py checks that importing
    appliance alone changes nothing)."""
    from appliance import rtc

    rtc.install()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "hardware" in item.keywords and os.environ.get("APPLIANCE_TEST_HARDWARE") != "1":
            item.add_marker(
                pytest.mark.skip(reason="needs a real Pi or Jetson: set APPLIANCE_TEST_HARDWARE=1")
            )
        if "e2e" in item.keywords and _netns_problem is not None:
            item.add_marker(
                pytest.mark.skip(reason=f"no private network namespace: {_netns_problem}")
            )
