"""Real packet loss inside the test's network namespace, with nftables (netem is not in every kernel).

Datagrams are dropped on *input*, after the kernel has cut UDP GSO batches into datagrams (`lo`'s
UDP segmentation offload is switched off for that), so that loss hits single datagrams as on a real
network, and the sender sees nothing (a drop on output would fail its sendmsg with EPERM).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

TABLE = "appliance_loss"


def _nft(*args: str) -> str:
    return subprocess.run(["nft", *args], check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def packet_loss(percent: int, min_length: int = 300) -> Iterator[Callable[[], int]]:
    """Drop `percent` % of UDP datagrams longer than `min_length` bytes (media, not ICE or RTCP).

    Yields a function that returns how many were dropped so far.
    """
    for tool in ("nft", "ethtool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    subprocess.run(
        ["ethtool", "-K", "lo", "tx-udp-segmentation", "off"], check=True, capture_output=True
    )
    _nft("add", "table", "inet", TABLE)
    try:
        _nft("add", "chain", "inet", TABLE, "in", "{ type filter hook input priority 0; }")
        _nft(
            "add",
            "rule",
            "inet",
            TABLE,
            "in",
            "udp",
            "length",
            ">",
            str(min_length),
            "numgen",
            "random",
            "mod",
            "100",
            "<",
            str(percent),
            "counter",
            "drop",
        )

        def dropped() -> int:
            match = re.search(r"counter packets (\d+)", _nft("list", "table", "inet", TABLE))
            return int(match.group(1)) if match else 0

        yield dropped
    finally:
        _nft("delete", "table", "inet", TABLE)
        subprocess.run(["ethtool", "-K", "lo", "tx-udp-segmentation", "on"], capture_output=True)
