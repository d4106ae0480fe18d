"""A viewer too many is refused, and the viewers already watching do not pay for it (issue 17).

The daemon's capacity is set low with `stream.max_load` (the share of one core its event loop may
use), so that a few dozen real WebRTC viewers (tests/perf/light_viewers.py in another process: ICE,
DTLS, SRTP keys, RTCP) are more than it takes. Those past its room get 503 with Retry-After and the
reason; every admitted viewer keeps the camera's frame rate, and so does the camera's own input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import DaemonFactory, wait_ready
from tests.e2e.test_hostile import metric

pytestmark = [pytest.mark.e2e]
logger = logging.getLogger(__name__)

MAX_LOAD = 0.1
VIEWERS = 60
FPS = 30


async def reports(load: asyncio.subprocess.Process) -> dict[str, Any]:
    """The viewers' newest report (they print one a second; older ones queue in the pipe)."""
    assert load.stdout is not None
    while True:
        asked = time.monotonic()
        line = await asyncio.wait_for(load.stdout.readline(), 30)
        assert line, "the viewers' process ended"
        if time.monotonic() - asked > 0.3:  # waited for it: written just now
            report: dict[str, Any] = json.loads(line)
            return report


async def test_viewers_past_the_daemon_s_room_get_503_and_the_others_keep_their_frame_rate(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon(
        **{
            "stream.max_load": MAX_LOAD,
            "video.width": 320,
            "video.height": 180,
            "video.fps": FPS,
            "audio.source": "none",
            "http.sessions_per_minute": 10_000,  # every viewer comes from 127.0.0.1
            "http.sessions_burst": 1000,
            "webrtc.half_open_per_client": 1000,
        }
    ) as d:
        await wait_ready(d)
        await asyncio.sleep(2)  # the headroom's first samples
        async with http.get(f"{d.url}/api/status") as r:
            status = await r.json()
        idle = status["headroom"]["loop_busy"]
        assert idle < MAX_LOAD / 2, f"the idle daemon alone uses {idle:.0%} of a core here"
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.perf.light_viewers", f"{d.url}/cam/whep", str(VIEWERS),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while True:  # until every viewer was answered: admitted and connected, or refused
                report = await reports(load)
                refused = sum(report["refused"])
                if refused and report["connected"] + refused == VIEWERS:
                    break
                assert time.monotonic() < deadline, f"viewers not all answered: {report}"
            admitted = [i for i, no in enumerate(report["refused"]) if not no]
            assert admitted, "no viewer was admitted"
            for refusal in report["refusals"]:
                assert refusal["retry_after"] == "5"
                assert "no room for another viewer" in refusal["why"]
            await asyncio.sleep(2)  # the joins' handshakes are over
            frames0, t0 = (await reports(load))["frames"], time.monotonic()
            published0 = d.stream.frames
            await asyncio.sleep(6)
            report = await reports(load)
            span = time.monotonic() - t0
            rates = sorted((report["frames"][i] - frames0[i]) / span for i in admitted)
            camera_fps = (d.stream.frames - published0) / span
            assert rates[0] >= FPS * 0.9, f"admitted viewers' fps, slowest first: {rates[:5]}"
            assert camera_fps >= FPS * 0.9, f"the camera's own input fell to {camera_fps:.1f} fps"
            assert await metric(http, d.url, 'appliance_viewers_refused_total{reason="load"}') >= 1
            logger.info(
                "admitted %d of %d viewers (max_load %.0f %%, idle %.1f %%); slowest admitted "
                "%.1f fps, camera %.1f fps", len(admitted), VIEWERS, MAX_LOAD * 100, idle * 100,
                rates[0], camera_fps,
            )  # fmt: skip
        finally:
            assert load.stdin is not None
            load.stdin.close()
            try:
                await asyncio.wait_for(load.wait(), 30)
            except asyncio.TimeoutError:
                load.kill()
