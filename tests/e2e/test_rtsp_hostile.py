"""RTSP under bad input: each refusal has its precise status, and a reader that plays (ffmpeg,
its own process) keeps its frame rate through all of it; readers and connections that vanish or
say nothing are freed."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from appliance.app import Running
from tests.e2e.conftest import DaemonFactory, wait_ready, wait_until
from tests.http.test_whep import OFFER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SETTINGS = {"video.width": 320, "video.height": 240, "rtsp.session_timeout": 5}


async def exchange(port: int, wire: bytes) -> bytes:
    """Send `wire` on a fresh connection; the first response's head (or what came before the
    server closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(wire)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except asyncio.IncompleteReadError as e:
            return e.partial
    finally:
        writer.close()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def ffmpeg_reader(d: Running, transport: str) -> list[str]:
    assert d.rtsp is not None
    return [
        "ffmpeg", "-v", "error", "-rtsp_transport", transport,
        "-i", f"rtsp://127.0.0.1:{d.rtsp.port}/cam", "-an", "-f", "null", "-",
    ]  # fmt: skip


@asynccontextmanager
async def watched(d: Running) -> AsyncIterator[asyncio.subprocess.Process]:
    """An ffmpeg reader over TCP that decodes while the test goes on."""
    proc = await asyncio.create_subprocess_exec(
        *ffmpeg_reader(d, "tcp"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_until(lambda: _playing(d), 20, "ffmpeg never played", 0.1)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _playing(d: Running) -> bool:
    assert d.rtsp is not None
    return any(r["playing"] and r["frames"] > 0 for r in d.rtsp.describe())


def frames_of_playing(d: Running) -> int:
    assert d.rtsp is not None
    return sum(r["frames"] for r in d.rtsp.describe() if r["playing"])


async def test_each_bad_request_gets_its_status_and_the_reader_plays_on(
    daemon: DaemonFactory,
) -> None:
    async with daemon(**SETTINGS) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        port = d.rtsp.port
        url = f"rtsp://127.0.0.1:{port}/cam"
        async with watched(d):
            before = frames_of_playing(d)
            cases = [
                (b"hello there\r\n\r\n", 400),
                (f"PLAY {url} RTSP/1.0\r\n\r\n".encode(), 400),  # no CSeq
                (f"PLAY {url} RTSP/2.0\r\nCSeq: 1\r\n\r\n".encode(), 505),
                (f"PLAY {url} RTSP/1.0\r\nCSeq: 1\r\nSession: nope\r\n\r\n".encode(), 454),
                (f"PLAY {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(), 454),
                (f"DESCRIBE rtsp://127.0.0.1:{port}/nostream RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(), 404),
                (f"DESCRIBE {url}/nothing RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(), 404),
                (f"ANNOUNCE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(), 405),
                (f"FROB {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(), 501),
                (
                    f"SETUP {url}/video RTSP/1.0\r\nCSeq: 1\r\n"
                    "Transport: RTP/AVP/TCP;unicast;interleaved=300-301\r\n\r\n".encode(),
                    400,
                ),
                (
                    f"SETUP {url}/video RTSP/1.0\r\nCSeq: 1\r\n"
                    "Transport: RTP/AVP;multicast\r\n\r\n".encode(),
                    461,
                ),
            ]  # fmt: skip
            for wire, status in cases:
                reply = await exchange(port, wire)
                assert reply.startswith(b"RTSP/1.0 "), (wire, reply)
                assert status_of(reply) == status, (wire, reply)
            # A session's order: PAUSE before PLAY is 455; a second stream in it, 459.
            setup = (
                f"SETUP {url}/video RTSP/1.0\r\nCSeq: 1\r\n"
                "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(setup.encode())
            reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert status_of(reply) == 200, reply
            session = reply.split(b"Session: ")[1].split(b";")[0].decode()
            writer.write(f"PAUSE {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n".encode())
            assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 455
            writer.write(
                f"TEARDOWN {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n".encode()
            )
            assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
            writer.close()
            await asyncio.sleep(1.0)
            # The reader played on at the stream's rate all along (30 fps: well over 20 a second).
            assert frames_of_playing(d) - before >= 20


async def test_silent_and_idle_clients_are_freed_and_the_reader_plays_on(
    daemon: DaemonFactory,
) -> None:
    async with daemon(**SETTINGS) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        port = d.rtsp.port
        async with watched(d):
            # Many connections from one address that say nothing: past its share, 503; the
            # others are closed once they have been quiet for the session timeout.
            opened = []
            refused = 0
            for _ in range(300):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                opened.append((reader, writer))
            for reader, _ in opened:
                try:
                    head = await asyncio.wait_for(reader.read(64), 0.05)
                except TimeoutError:
                    continue
                refused += head.startswith(b"RTSP/1.0 503")
            assert refused >= 300 - d.config.http.max_connections_per_client, refused
            playing_before = frames_of_playing(d)

            async def all_closed() -> bool:
                return d.rtsp is not None and len(d.rtsp.connections) <= 1  # ffmpeg's own

            await wait_until(all_closed, 20, "quiet connections were not closed", 0.5)
            assert frames_of_playing(d) - playing_before >= 100  # a few seconds at 30 fps
            for _, writer in opened:
                writer.close()


async def test_a_killed_reader_is_freed_at_its_session_timeout(daemon: DaemonFactory) -> None:
    """ffmpeg over UDP, killed outright (no TEARDOWN; its UDP session has no connection to
    close): freed once its session times out, while a TCP reader plays on."""
    async with daemon(**SETTINGS) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        async with watched(d):
            proc = await asyncio.create_subprocess_exec(
                *ffmpeg_reader(d, "udp"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip

            async def two() -> bool:
                return d.rtsp is not None and d.rtsp.by_transport("cam") == {"tcp": 1, "udp": 1}

            await wait_until(two, 20, "the UDP reader never set up", 0.1)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            before = frames_of_playing(d)

            async def freed() -> bool:
                return d.rtsp is not None and d.rtsp.by_transport("cam")["udp"] == 0

            await wait_until(freed, 15, "the killed reader was not freed", 0.2)
            assert d.rtsp.by_transport("cam") == {"tcp": 1, "udp": 0}
            assert frames_of_playing(d) - before >= 60  # the TCP reader played on


async def test_rtsp_readers_and_webrtc_viewers_share_the_viewer_limit(
    daemon: DaemonFactory,
) -> None:
    async with (
        daemon(**SETTINGS, **{"stream.max_viewers": 1}) as d,
        aiohttp.ClientSession() as http,
    ):
        await wait_ready(d)
        assert d.rtsp is not None
        url = f"rtsp://127.0.0.1:{d.rtsp.port}/cam/video"
        setup = f"SETUP {url} RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", d.rtsp.port)
        try:
            writer.write(setup.encode())
            assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
            # The one place is taken: a WHEP viewer gets 503, another RTSP reader 453.
            async with http.post(
                f"{d.url}/cam/whep", data=OFFER, headers={"Content-Type": "application/sdp"}
            ) as r:
                assert r.status == 503 and "viewer limit" in await r.text()
            assert status_of(await exchange(d.rtsp.port, setup.encode())) == 453
        finally:
            writer.close()


async def play_without_reading(port: int, url: str) -> tuple[asyncio.StreamWriter, str]:
    """SETUP and PLAY over TCP with a tiny receive window, then read nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"SETUP {url}/video RTSP/1.0\r\nCSeq: 1\r\n"
        "Transport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert status_of(head) == 200, head
    session = head.split(b"Session: ")[1].split(b";")[0].decode()
    writer.write(f"PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n".encode())
    assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
    return writer, session


async def test_a_reader_that_stops_reading_skips_frames_and_the_others_do_not(
    daemon: DaemonFactory,
) -> None:
    """A TCP reader that reads nothing more (a stuck NVR): once its connection holds a
    megabyte unsent, its frames are dropped to the next keyframe, counted; the ffmpeg reader next
    to it drops none."""
    settings = {
        **SETTINGS, "video.width": 1280, "video.height": 720, "video.bitrate": 8_000_000,
        "rtsp.session_timeout": 120,
    }  # fmt: skip
    async with daemon(**settings) as d:
        await wait_ready(d)
        assert d.rtsp is not None
        writer, session = await play_without_reading(
            d.rtsp.port, f"rtsp://127.0.0.1:{d.rtsp.port}/cam"
        )
        try:
            async with watched(d):

                def readers() -> dict[str, dict[str, Any]]:
                    assert d.rtsp is not None
                    return {r["id"]: r for r in d.rtsp.describe()}

                async def dropping() -> bool:
                    return readers()[session]["dropped"] > 0

                await wait_until(dropping, 60, "the stuck reader never dropped a frame", 0.5)
                others = [r for sid, r in readers().items() if sid != session]
                assert len(others) == 1 and others[0]["dropped"] == 0, others
                assert others[0]["frames"] > 0
        finally:
            writer.close()
