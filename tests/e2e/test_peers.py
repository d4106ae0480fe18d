"""Independent WHIP and WHEP peers against the daemon, each doing what it really does, and the
daemon saying why a connection failed when one does.

- FFmpeg's own WHIP muxer (FFmpeg 8.1 inside PyAV's wheels: its ICE, DTLS on GnuTLS, SRTP)
  publishes video and Opus into ingest with a bearer token; an aiortc viewer decodes it.
- The same muxer with its default certificate, whose key is on secp224r1, which the daemon's
  OpenSSL refuses: the session closes with that reason, in one log line, in /api/status and in
  /metrics.
- A viewer that posts an offer and vanishes: the daemon says ICE got no answer.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.certs import self_signed
from tests.e2e.conftest import DaemonFactory, wait_ready, wait_until
from tests.e2e.peers import AiortcViewer
from tests.e2e.test_hostile import metric, no_errors_logged
from tests.e2e.test_whip import ADMIN, PUBLISH, READ, TOKENS, status, wait_published

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FFMPEG_WHIP = Path(__file__).with_name("ffmpeg_whip.py")


def p256_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate and its key, as FFmpeg's cert_file and key_file."""
    from cryptography.hazmat.primitives import serialization

    key, certificate = self_signed("ffmpeg", datetime.timedelta(days=30))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def ffmpeg_publish(url: str, seconds: float, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(FFMPEG_WHIP), url, str(seconds), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def watch_ffmpeg_greys(
    http: aiohttp.ClientSession, url: str, audio: bool = False, keep: bool = False
) -> AiortcViewer:
    """An aiortc viewer decodes what ffmpeg_whip.py encodes: 640x360, flat greys that step by 8
    a frame, so consecutive pictures differ. `keep`: it stays open, for the caller to close."""
    viewer = AiortcViewer(http, url, READ, audio=audio)
    try:
        await viewer.connect()
        frames = await viewer.frames(15)
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
        levels = [int(np.median(f.to_ndarray(format="gray"))) for f in frames]
        assert len(set(levels)) > 5, levels
    except BaseException:
        await viewer.close()
        raise
    if not keep:
        await viewer.close()
    return viewer


async def test_ffmpeg_whip_muxer_publishes_video_and_sound_to_viewers(
    daemon: DaemonFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    cert, key = p256_certificate(tmp_path)
    async with daemon(**{"auth.tokens": TOKENS}) as d:
        ffmpeg = await ffmpeg_publish(
            f"{d.url}/door/whip", 8, "--token", PUBLISH, "--cert", str(cert),
            "--key", str(key), "--audio",
        )  # fmt: skip
        await wait_published(http, d.url, "door", ADMIN)
        viewer = await watch_ffmpeg_greys(http, f"{d.url}/door/whep", audio=True, keep=True)
        try:
            sound = await viewer.audio_frames(0.5)
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in sound]).astype(float)
            assert np.abs(pcm).max() > 1000  # the 1 kHz tone, not silence
            publisher = (await status(http, d.url, ADMIN))["streams"]
            door = next(s for s in publisher if s["name"] == "door")
            assert door["publisher"]["state"] == "connected"
        finally:
            await viewer.close()
        out, err = await asyncio.wait_for(ffmpeg.communicate(), 30)
        assert ffmpeg.returncode == 0, err.decode()
        assert out.decode().startswith("published ")

        # FFmpeg closes its WHIP session with DELETE.
        async def deleted() -> bool:
            return any("DELETE from the publisher" in r.getMessage() for r in caplog.records)

        await wait_until(deleted, 5, "FFmpeg did not DELETE its WHIP session")
        no_errors_logged(caplog)


async def test_a_refused_certificate_is_named_in_the_log_status_and_metrics(
    daemon: DaemonFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with daemon(**{"auth.tokens": TOKENS}) as d:
        # FFmpeg's own certificate: GnuTLS makes its key on secp224r1.
        ffmpeg = await ffmpeg_publish(f"{d.url}/door/whip", 3, "--token", PUBLISH)
        _, err = await asyncio.wait_for(ffmpeg.communicate(), 30)
        assert ffmpeg.returncode == 1
        assert "DTLS" in err.decode()

        async def failed() -> list[dict[str, Any]]:
            return list((await status(http, d.url, ADMIN))["connection_failures"]["publishers"])

        async def any_failed() -> bool:
            return bool(await failed())

        await wait_until(any_failed, 10, "the failed handshake was not recorded")
        [failure] = await failed()
        assert failure["code"] == "dtls_certificate"
        assert "secp224r1" in failure["reason"] and failure["stream"] == "door"
        lines = [r.getMessage() for r in caplog.records if "secp224r1" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "closed: connection failed: DTLS: we refused" in lines[0]
        count = await metric(
            http,
            d.url,
            'appliance_connection_failures_total{role="publisher",reason="dtls_certificate"}',
            ADMIN,
        )
        assert count == 1
        no_errors_logged(caplog)


async def test_a_viewer_that_vanishes_after_its_offer_is_said_to_have_never_answered_ice(
    daemon: DaemonFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with daemon(**{"webrtc.connect_timeout": 3}) as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep")
        offer = await viewer.offer()
        await viewer.close()  # gone before the daemon's first connectivity check
        async with http.post(
            f"{d.url}/cam/whep", data=offer, headers={"Content-Type": "application/sdp"}
        ) as r:
            assert r.status == 201

        async def failed() -> bool:
            return bool((await status(http, d.url))["connection_failures"]["viewers"])

        await wait_until(failed, 10, "the silent viewer's session was not closed")
        [failure] = (await status(http, d.url))["connection_failures"]["viewers"]
        assert failure["code"] == "ice_no_response", failure
        assert "no answer to our connectivity checks" in failure["reason"]
        assert "no check from the peer" in failure["reason"]
        assert (await status(http, d.url))["viewers"] == []
        no_errors_logged(caplog)
