"""Egress into an independent WHIP endpoint: Debian's Janus (VideoRoom) behind Meetecho's
simple-whip-server (tests/e2e/janus.py). Janus terminates ICE, DTLS and SRTP with its own stacks
(libnice, OpenSSL, libsrtp) and forwards the published video, decrypted, as plain RTP to a UDP
port of the test's: depacketized there (aiortc's RFC 6184 depayloader) and decoded with PyAV, it
is the camera's test pattern, with its capture-time stamp."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

import aiohttp
import av
import pytest
from aiortc.codecs.h264 import H264PayloadDescriptor

from appliance.capture.testsrc import read_stamp
from tests.e2e.conftest import DaemonFactory, wait_until
from tests.e2e.janus import janus_whip
from tests.e2e.test_whip import status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOKEN = "janus-endpoint-token"


async def receive_rtp(sock: socket.socket, seconds: float) -> list[bytes]:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    packets = []
    while loop.time() < end:
        try:
            packets.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.5))
        except asyncio.TimeoutError:
            pass
    return packets


def annex_b(packets: list[bytes]) -> bytes:
    """RTP packets (one SSRC) in sequence order, depayloaded into an H.264 Annex B stream."""
    ordered: dict[int, bytes] = {}
    for packet in packets:
        if len(packet) < 12 or packet[0] >> 6 != 2:
            continue
        count = packet[0] & 0x0F
        offset = 12 + 4 * count
        if packet[0] & 0x10:  # header extension
            length = struct.unpack_from("!H", packet, offset + 2)[0]
            offset += 4 + 4 * length
        end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
        ordered[struct.unpack_from("!H", packet, 2)[0]] = packet[offset:end]
    first = min(ordered, key=lambda s: (s - next(iter(ordered))) & 0xFFFF)
    out = bytearray()
    for seq in sorted(ordered, key=lambda s: (s - first) & 0xFFFF):
        out += H264PayloadDescriptor.parse(ordered[seq])[1]
    return bytes(out)


async def test_egress_publishes_into_janus_through_simple_whip_server(
    daemon: DaemonFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        async with janus_whip(tmp_path) as janus:
            url = await janus.endpoint("door", TOKEN, sock.getsockname()[1])
            target = {"url": url, "token": TOKEN}
            async with daemon(egress=[target]) as camera:
                started_ms = time.time() * 1000

                async def connected() -> bool:
                    return (await status(http, camera.url))["egress"][0]["state"] == "connected"

                await wait_until(connected, 20, "egress never connected to Janus")
                packets = await receive_rtp(sock, 4)
                egress = (await status(http, camera.url))["egress"][0]
                assert egress["connects"] == 1 and egress["frames"] > 0, egress
            # The daemon stopping ended its WHIP session with DELETE; Janus noticed.
            log = (tmp_path / "logs" / "whip.log").read_text()
            assert "Publishing to WHIP endpoint" in log
            assert "Terminating WHIP session" in log, log[-2000:]

    assert len(packets) > 100, len(packets)
    codec = av.CodecContext.create("h264", "r")
    pictures = [f for packet in codec.parse(annex_b(packets)) for f in codec.decode(packet)]
    assert len(pictures) >= 60, len(pictures)  # 4 s at 30 fps, from Janus's first keyframe
    assert {(p.width, p.height) for p in pictures} == {(640, 360)}
    stamps = [read_stamp(p.to_ndarray(format="gray"), 640) for p in pictures]
    readable = [s for s in stamps if s is not None]
    assert len(readable) >= len(pictures) * 0.9 and readable == sorted(readable)
    assert 0 <= (readable[0] - int(started_ms)) % 2**32 < 20_000
