"""Watching from outside: the camera behind its home router, the viewer behind a mobile
network's, Debian's coturn on the internet between them (tests/e2e/nat.py), and no direct UDP
path. The daemon is configured as an owner would (`webrtc.ice_servers`, a static credential or
coturn's shared secret); everything else comes from its own page and its `Link` headers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.http import ice
from tests.e2e.conftest import wait_until
from tests.e2e.nat import HOME_WAN, HTTP_PORT, MOBILE_WAN, Internet, Namespace, stop
from tests.e2e.peers import CHROMIUM, chromium

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SECRET = "the-secret-stays-on-the-device"
URL = f"http://{HOME_WAN}:{HTTP_PORT}"  # the home router's port forward, as the viewer sees it
ROOT = Path(__file__).parents[2]


@pytest.fixture
def internet() -> Iterator[Internet]:
    with Internet() as net:
        yield net


def config_text(folder: Path, ice_servers: str, extra: str = "") -> str:
    return f"""
[http]
port = {HTTP_PORT}
state_dir = "{folder}"

[video]
source = "testsrc"
width = 320
height = 240

[stream]
name = "cam"

[webrtc]
ice_servers = [{ice_servers}]
{extra}
"""


def start_daemon(ns: Namespace, folder: Path, text: str) -> tuple[subprocess.Popen[bytes], Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "appliance.toml").write_text(text)
    log = folder / "daemon.log"
    with log.open("w") as out:
        proc = ns.popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(folder / "appliance.toml")],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    return proc, log


@asynccontextmanager
async def daemon_in(ns: Namespace, folder: Path, text: str, url: str = URL) -> AsyncIterator[Path]:
    """`appliance serve` in `ns` with this config, serving (its first frame) at `url`; yields
    the path of its log."""
    proc, log = start_daemon(ns, folder, text)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

            async def serving() -> bool:
                assert proc.poll() is None, f"the daemon exited:\n{log.read_text()}"
                try:
                    async with http.get(f"{url}/healthz") as r:
                        return r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await wait_until(serving, 30, "the daemon behind the NAT did not serve", 0.2)
        yield log
    finally:
        stop(proc)


async def selected_pair(page: Any) -> dict[str, str]:
    """The candidate types of the pair Chromium's ICE selected."""
    return await page.evaluate(
        """async () => {
          const stats = await window.viewerClient.pc.getStats();
          const all = new Map([...stats.values()].map((s) => [s.id, s]));
          const transport = [...stats.values()].find((s) => s.type === "transport");
          const pair = all.get(transport.selectedCandidatePairId);
          return { local: all.get(pair.localCandidateId).candidateType,
                   remote: all.get(pair.remoteCandidateId).candidateType };
        }"""
    )


def turn_server(kind: str, turn_url: str) -> str:
    if kind == "secret":
        return f'{{ urls = ["{turn_url}"], secret = "{SECRET}", lifetime = 600 }}'
    return f'{{ urls = ["{turn_url}"], username = "camera", credential = "pw" }}'


@pytest.mark.parametrize("kind", ["static", "secret"])
async def test_page_behind_nat_plays_through_turn(
    internet: Internet, tmp_path: Path, kind: str
) -> None:
    auth: dict[str, Any] = {"secret": SECRET} if kind == "secret" else {"user": ("camera", "pw")}
    with internet.coturn(tmp_path, **auth) as turn_url:
        text = config_text(tmp_path / "home", turn_server(kind, turn_url))
        chromium_in_mobile = str(internet.mobile.wrapper(tmp_path, CHROMIUM))
        async with daemon_in(internet.home, tmp_path / "home", text) as log:
            async with chromium(executable=chromium_in_mobile) as browser:
                page = await browser.new_page()
                await page.goto(f"{URL}/")
                try:
                    await page.wait_for_function(
                        "window.viewer && window.viewer.framesPresented >= 30",
                        timeout=40000, polling=200,
                    )  # fmt: skip
                except Exception as e:
                    state = await page.evaluate("JSON.stringify(window.viewer)")
                    raise AssertionError(
                        f"no video through TURN: {e}\n{state}\n--- daemon ---\n{log.read_text()}"
                        f"\n--- coturn ---\n{internet.turn_log(tmp_path)}"
                    ) from None
                pair = await selected_pair(page)
                assert "relay" in pair.values(), pair
                state = await page.evaluate("JSON.stringify(window.viewer)")
                assert '"state":"connected"' in state


async def test_a_refused_credential_is_said_on_the_page(internet: Internet, tmp_path: Path) -> None:
    """coturn's secret was changed and the daemon's not: every credential it mints is refused
    (401), the page says so, and the daemon's log says there is no relay."""
    with internet.coturn(tmp_path, secret="rotated-on-the-server") as turn_url:
        text = config_text(tmp_path / "home", turn_server("secret", turn_url))
        chromium_in_mobile = str(internet.mobile.wrapper(tmp_path, CHROMIUM))
        async with daemon_in(internet.home, tmp_path / "home", text) as log:
            async with chromium(executable=chromium_in_mobile) as browser:
                page = await browser.new_page()
                await page.goto(f"{URL}/")
                await page.wait_for_function(
                    "document.getElementById('status').textContent.includes('401')",
                    timeout=60000, polling=200,
                )  # fmt: skip
                status = await page.inner_text("#status")
                assert turn_url.split("?")[0] in status and "reconnecting" in status, status
            assert "no relay candidate from turn:" in log.read_text()


async def test_coturn_refuses_an_expired_minted_credential(
    internet: Internet, tmp_path: Path
) -> None:
    """The expiry in a minted username is coturn's to enforce: a credential minted an hour ago
    with a minute's lifetime gets no allocation; one minted now does."""
    from aioice import turn

    with internet.coturn(tmp_path, secret=SECRET) as turn_url:
        host, port = turn_url.removeprefix("turn:").split("?")[0].split(":")
        for minted, allowed in ((time.time() - 3600, False), (time.time(), True)):
            username, password = ice.turn_credential(SECRET, "cam", 60, minted)
            try:
                transport, _ = await turn.create_turn_endpoint(
                    asyncio.DatagramProtocol,
                    server_addr=(host, int(port)),
                    username=username,
                    password=password,
                )
            except Exception as e:
                assert not allowed, f"a fresh credential was refused: {e!r}"
                assert "401" in str(e) or "Unauthorized" in str(e), repr(e)
            else:
                transport.close()
                assert allowed, "coturn gave an allocation to an expired credential"


async def test_page_recovers_when_the_phone_changes_network(
    internet: Internet, tmp_path: Path
) -> None:
    """The phone's address changes mid-stream (Wi-Fi to 4G): its NAT mapping and so its TURN
    allocation are gone. The page sees the connection go quiet, offers again at once (with fresh
    TURN credentials) and plays on, in the same video element, without a reload."""
    with internet.coturn(tmp_path, secret=SECRET) as turn_url:
        text = config_text(tmp_path / "home", turn_server("secret", turn_url))
        chromium_in_mobile = str(internet.mobile.wrapper(tmp_path, CHROMIUM))
        async with daemon_in(internet.home, tmp_path / "home", text):
            async with chromium(executable=chromium_in_mobile) as browser:
                page = await browser.new_page()
                await page.goto(f"{URL}/")
                await page.wait_for_function(
                    "window.viewer && window.viewer.framesPresented >= 30", timeout=40000
                )
                await page.evaluate("window.video0 = document.getElementById('video')")
                before = await page.evaluate("window.viewer.sessions")
                internet.move_phone()
                try:
                    await page.wait_for_function(
                        f"window.viewer.sessions > {before} && window.viewer.firstFrameMs !== null"
                        " && window.viewer.state === 'connected'",
                        timeout=60000, polling=100,
                    )  # fmt: skip
                except Exception as e:
                    state = await page.evaluate("JSON.stringify(window.viewer)")
                    status = await page.inner_text("#status")
                    raise AssertionError(f"no recovery: {e}\n{status}\n{state}") from None
                frames = await page.evaluate("window.viewer.framesPresented")
                await page.wait_for_function(
                    f"window.viewer.framesPresented >= {frames + 30}", timeout=20000
                )
                assert await page.evaluate("document.getElementById('video') === window.video0")
                assert "relay" in (await selected_pair(page)).values()


async def test_egress_reaches_an_endpoint_behind_nat_with_its_turn_server(
    internet: Internet, tmp_path: Path
) -> None:
    """The camera has no ICE servers of its own; the WHIP endpoint it publishes to (another
    appliance, behind the mobile NAT with a port forward for HTTP) lists its TURN server in its
    `Link` headers. The egress asks for them (OPTIONS) and gathers a relay: the only way in."""
    endpoint_url = f"http://{MOBILE_WAN}:{HTTP_PORT}"
    with internet.coturn(tmp_path, secret=SECRET) as turn_url:
        endpoint = config_text(tmp_path / "endpoint", turn_server("secret", turn_url))
        camera = config_text(
            tmp_path / "camera", "", f'[[egress]]\nurl = "{endpoint_url}/relay/whip"\n'
        )
        async with (
            daemon_in(internet.mobile, tmp_path / "endpoint", endpoint, endpoint_url),
            daemon_in(internet.home, tmp_path / "camera", camera) as log,
            aiohttp.ClientSession() as http,
        ):

            async def relayed() -> bool:
                async with http.get(f"{endpoint_url}/api/status") as r:
                    streams = {s["name"]: s for s in (await r.json())["streams"]}
                return streams.get("relay", {}).get("frames", 0) >= 60

            await wait_until(relayed, 60, f"no frames over egress:\n{log.read_text()}", 0.5)
            async with http.get(f"{URL}/api/status") as r:
                (egress,) = (await r.json())["egress"]
            assert egress["state"] == "connected", egress
            assert egress["endpoint_ice_servers"] == [turn_url], egress


async def test_aiortc_viewer_behind_nat_plays_through_turn(
    internet: Internet, tmp_path: Path
) -> None:
    """aiortc (no trickle: its offer carries its relay candidate) with the servers the daemon's
    OPTIONS lists, as tests/e2e/viewer_process.py reads them."""
    with internet.coturn(tmp_path, secret=SECRET) as turn_url:
        text = config_text(tmp_path / "home", turn_server("secret", turn_url))
        async with daemon_in(internet.home, tmp_path / "home", text) as log:
            argv = [sys.executable, "-m", "tests.e2e.viewer_process", f"{URL}/cam/whep"]
            viewer = internet.mobile.popen(
                [*argv, "--ice-from-options"], stdout=subprocess.PIPE, cwd=ROOT
            )
            try:
                assert viewer.stdout is not None
                line = await asyncio.wait_for(asyncio.to_thread(viewer.stdout.readline), 60)
                assert line.startswith(b"playing "), f"{line!r}\n{log.read_text()}"
                assert b"relay" in line, line
            finally:
                viewer.kill()
                viewer.wait()
                if viewer.stdout is not None:
                    viewer.stdout.close()
