"""Closing a peer connection while aiortc closes it too (the peer ended DTLS), and the closer is
cancelled midway (the daemon stopping): aiortc's own close must still end cleanly."""

from __future__ import annotations

import asyncio

import pytest

from appliance.rtc import close_quietly
from tests.rtc.test_internals import connected_pair

pytestmark = [pytest.mark.e2e]


async def test_a_cancelled_close_does_not_break_aiortcs_own() -> None:
    async with connected_pair() as (peer, ours):
        await peer.close()  # DTLS close_notify: aiortc starts closing `ours` by itself
        for _ in range(100):
            own = ours._RTCPeerConnection__closeTask  # type: ignore[attr-defined]
            if own is not None:
                break
            await asyncio.sleep(0.01)
        assert own is not None, "aiortc did not start its own close"
        closer = asyncio.get_running_loop().create_task(close_quietly(ours))
        await asyncio.sleep(0)  # it is now waiting for aiortc's close to end
        closer.cancel()
        await asyncio.gather(closer, return_exceptions=True)
        await asyncio.wait_for(own, 10)  # raised InvalidStateError when the wait was not shielded
        assert ours.connectionState == "closed"
