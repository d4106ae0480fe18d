"""An independent WHIP endpoint for egress tests: Debian's Janus (VideoRoom) behind Meetecho's
simple-whip-server, which takes a WHIP POST, publishes it into a VideoRoom room, and can have
Janus forward the publisher's RTP, decrypted, to a plain UDP port: there the test decodes it.

    async with janus_whip(tmp_path) as whip:
        url = await whip.endpoint("cam", token="t", video_port=port)   # the WHIP URL to POST to

Janus is Debian's package (tests/packages.txt); simple-whip-server is Debian's package too,
unpacked by tests/run.sh into tests/e2e/npm/simple-whip-server and run on the npm modules it
needs (tests/e2e/npm), since Debian's node-* modules conflict with NodeSource's nodejs.
Janus loads only the VideoRoom plugin and the WebSockets transport, on loopback ports of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.test_browser import free_port
from tests.janus_process import layout, running, stop, tail

NODE = "node"
NPM = Path(__file__).with_name("npm")
SIMPLE_WHIP_SERVER = NPM / "simple-whip-server"
ROOM = 1234


def _janus_config(folder: Path, ws_port: int) -> Path:
    """Janus's configuration: VideoRoom (room 1234, H.264 and Opus) over WebSockets only."""
    config = layout(
        folder, "libjanus_videoroom.so", "libjanus_websockets.so",
        general="debug_level = 4", media='rtp_port_range = "30000-39999"',
        nat='ice_ignore_list = "lo"',
    )  # fmt: skip
    (folder / "janus.plugin.videoroom.jcfg").write_text(
        f"""room-{ROOM}: {{
    description = "appliance egress"
    publishers = 1
    videocodec = "h264"
    audiocodec = "opus"
    bitrate = 4000000
    fir_freq = 5
}}
"""
    )
    (folder / "janus.transport.websockets.jcfg").write_text(
        f"""general: {{
    json = "indented"
    ws = true
    ws_port = {ws_port}
    ws_ip = "127.0.0.1"
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
"""
    )
    return config


@dataclass
class JanusWhip:
    url: str  # simple-whip-server's REST base: {url}/endpoint/<id> is a WHIP endpoint
    http: aiohttp.ClientSession
    janus: asyncio.subprocess.Process
    server: asyncio.subprocess.Process

    async def endpoint(self, endpoint_id: str, token: str, video_port: int) -> str:
        """Create a WHIP endpoint that publishes into the room and forwards video RTP to
        127.0.0.1:`video_port`; returns its URL."""
        body: dict[str, Any] = {
            "id": endpoint_id,
            "room": ROOM,
            "token": token,
            "recipient": {"host": "127.0.0.1", "videoPort": video_port},
        }
        async with self.http.post(f"{self.url}/create", json=body) as r:
            assert r.status == 200, await r.text()
        return f"{self.url}/endpoint/{endpoint_id}"


@contextlib.asynccontextmanager
async def janus_whip(folder: Path) -> AsyncIterator[JanusWhip]:
    node = shutil.which(NODE)
    assert node, "node comes from tests/run.sh (tests/packages.txt)"
    assert (SIMPLE_WHIP_SERVER / "src" / "server.js").is_file(), (
        "tests/run.sh unpacks Debian's simple-whip-server into tests/e2e/npm/simple-whip-server"
    )
    ws_port, whip_port = free_port(), free_port()
    (folder / "janus").mkdir()
    config = _janus_config(folder / "janus", ws_port)
    server_dir = folder / "simple-whip-server"
    shutil.copytree(SIMPLE_WHIP_SERVER, server_dir, symlinks=True)
    (server_dir / "src" / "config.js").unlink(missing_ok=True)  # Debian's links to /etc
    (server_dir / "src" / "config.js").write_text(
        f"""module.exports = {{
    janus: {{ address: 'ws://127.0.0.1:{ws_port}' }},
    port: {whip_port},
    rest: '/whip',
    allowTrickle: true,
    strictETags: false,
    iceServers: []
}};
"""
    )
    logs = folder / "logs"
    logs.mkdir()
    async with running(config, ws_port, logs / "janus.log") as janus_process:
        server = None
        with (logs / "whip.log").open("wb") as whip_log:
            try:
                async with aiohttp.ClientSession() as http:
                    env = {
                        "NODE_PATH": str(NPM / "node_modules"),
                        "PATH": "/usr/bin:/bin",
                        "DEBUG": "whip:info,whip:warn,whip:error",  # its own "npm start" level
                    }
                    server = await asyncio.create_subprocess_exec(
                        node, "server.js", cwd=server_dir / "src", env=env,
                        stdout=whip_log, stderr=asyncio.subprocess.STDOUT,
                    )  # fmt: skip
                    url = f"http://127.0.0.1:{whip_port}/whip"
                    await _wait_whip(http, url, server, logs / "whip.log")
                    yield JanusWhip(url, http, janus_process, server)
            finally:
                if server is not None:
                    await stop(server)


async def _wait_whip(
    http: aiohttp.ClientSession, url: str, process: asyncio.subprocess.Process, log: Path
) -> None:
    """Until simple-whip-server answers and has its Janus session (it lists endpoints)."""
    for _ in range(200):
        assert process.returncode is None, f"simple-whip-server exited: {tail(log)}"
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{url}/endpoints") as r:
                if r.status == 200 and "WHIP server prototype started" in tail(log):
                    return
        await asyncio.sleep(0.05)
    raise AssertionError(f"simple-whip-server did not come up: {tail(log)}")
