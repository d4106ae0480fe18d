"""HTTPS with a self-signed certificate made on first start, kept, and reused."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from appliance import config
from appliance.app import running
from appliance.core.errors import ConfigError
from appliance.http.tls import CERT_NAME, KEY_NAME


def settings(state: Path, **extra: object) -> config.Config:
    values = {
        "http.host": "127.0.0.1", "http.port": 0, "video.source": "testsrc",
        "video.width": 320, "video.height": 240, "http.tls_self_signed": True,
        "http.state_dir": str(state), **extra,
    }  # fmt: skip
    return config.load(None, env={}, overrides=values)


async def fetch_healthz(url: str, cafile: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = (
        False  # the certificate names this host and localhost, not 127.0.0.1's name
    )
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz", ssl=ctx) as r:
        return r.status


async def test_self_signed_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    async with running(settings(tmp_path)) as d:
        assert d.url.startswith("https://")
        cert, key = tmp_path / CERT_NAME, tmp_path / KEY_NAME
        assert key.stat().st_mode & 0o777 == 0o600
        assert await fetch_healthz(d.url, cert) in (200, 503)
        first = cert.read_bytes()
        async with aiohttp.ClientSession() as http:  # a client that does not trust it is refused
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{d.url}/healthz")
    async with running(settings(tmp_path)) as d:  # a restart keeps the same certificate
        assert cert.read_bytes() == first
        assert await fetch_healthz(d.url, cert) in (200, 503)


def test_configured_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http.tls_cert: no such file"):
        config.load(None, env={}, overrides={"http.tls_cert": str(tmp_path / "nope.pem")})
