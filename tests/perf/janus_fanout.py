"""Debian's Janus as the fan-out to beat (bench_fanout --janus): its streaming plugin, one event
loop, fed the workload as plain RTP, watched by the same light viewers over its HTTP API.

    async with janus_streaming(folder) as janus:   # janus.api: the HTTP API, janus.pid
        feeder = RtpFeeder(janus.video_port)        # feeder.send(au, timestamp): one access unit

Janus (tests/packages.txt) loads only the streaming plugin and the HTTP transport, with
`event_loops = 1` (every handle on one static loop, as our daemon has one event loop), no session
timeout, ICE on `tlan0` of the benchmark's network namespace (tests/netns.py). The mountpoint
(id 1) takes H.264 (packetization mode 1, Constrained Baseline) on `video_port`.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.core import rtp
from appliance.core.packetizer import H264Packetizer
from appliance.core.ring import FLAG_MARKER, PacketRing
from appliance.core.stream import max_payload
from tests.janus_process import layout, running

MOUNTPOINT = 1
PAYLOAD_TYPE = 96


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(folder: Path, http_port: int, video_port: int) -> Path:
    config = layout(
        folder, "libjanus_streaming.so", "libjanus_http.so",
        general="debug_level = 3\n    session_timeout = 0\n    event_loops = 1",
        media='rtp_port_range = "40000-49999"', nat='ice_enforce_list = "tlan0"',
    )  # fmt: skip
    (folder / "janus.plugin.streaming.jcfg").write_text(
        f"""bench: {{
    type = "rtp"
    id = {MOUNTPOINT}
    description = "bench"
    media = (
        {{
            type = "video"
            mid = "v"
            port = {video_port}
            pt = {PAYLOAD_TYPE}
            codec = "h264"
            fmtp = "profile-level-id=42e01f;packetization-mode=1"
        }}
    )
}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {http_port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
}}
"""
    )
    return config


@dataclass
class Janus:
    api: str  # the HTTP API's base: POST {api} creates a session
    pid: int
    video_port: int


@contextlib.asynccontextmanager
async def janus_streaming(
    folder: Path, preexec_fn: Callable[[], None] | None = None
) -> AsyncIterator[Janus]:
    http_port, video_port = _free_port(), _free_port(socket.SOCK_DGRAM)
    config = _config(folder, http_port, video_port)
    async with running(config, http_port, folder / "janus.log", preexec_fn) as process:
        yield Janus(f"http://127.0.0.1:{http_port}/janus", process.pid, video_port)


class RtpFeeder:
    """The workload as plain RTP to Janus's mountpoint: packetized as our daemon does."""

    def __init__(self, port: int) -> None:
        payload = max_payload(1400)
        self._ring = PacketRing(4096, payload)
        self._packetizer = H264Packetizer(self._ring, payload)
        self._layout = rtp.HeaderLayout.build(PAYLOAD_TYPE, 0x4A414E55)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        self._address = ("127.0.0.1", port)
        self._seq = 0
        self._buffer = bytearray(self._layout.size + payload)

    def send(self, au: bytes, timestamp: int, keyframe: bool) -> None:
        ring = self._ring
        for index in self._packetizer.packetize(au, timestamp, 0, keyframe):
            slot = ring.slot(index)
            size = ring.length[slot]
            header = self._layout.write(
                self._buffer, 0, ring.flags[slot] & FLAG_MARKER, self._seq, timestamp
            )
            self._buffer[header : header + size] = ring.slot_views[slot][:size]
            self._sock.sendto(memoryview(self._buffer)[: header + size], self._address)
            self._seq = (self._seq + 1) & 0xFFFF

    def close(self) -> None:
        self._sock.close()
