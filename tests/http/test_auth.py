"""Bearer tokens: the rules (Authorizer), the config that makes them, and the HTTP surface from the
outside (a running daemon on loopback): each request the right status, and nothing leaked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance import config
from appliance.app import Running, running
from appliance.core.errors import ConfigError
from appliance.http.auth import Authorizer
from appliance.http.middleware import required_right

VIEWER = "v" * 20
PUBLISHER = "p" * 20
ADMIN = "a" * 20
OTHER_STREAM = "o" * 20
TOKENS = [
    {"name": "viewer", "token": VIEWER, "rights": ["read"]},
    {"name": "camera", "token": PUBLISHER, "rights": ["publish"]},
    {"name": "root", "token": ADMIN, "rights": ["admin"]},
    {"name": "garage", "token": OTHER_STREAM, "rights": ["read"], "streams": ["garage"]},
]


def auth(public_read: bool = False, tokens: list[dict[str, Any]] = TOKENS) -> config.AuthConfig:
    cfg = config.load(
        None, env={}, overrides={"auth.public_read": public_read, "auth.tokens": tokens}
    )
    return cfg.auth


def test_rights_and_streams() -> None:
    a = Authorizer(auth())
    bearer = lambda t: f"Bearer {t}"  # noqa: E731
    assert a.check(bearer(VIEWER), "read", "cam").allowed
    assert a.check(f"bearer  {VIEWER} ", "read", "cam").allowed  # scheme is case-insensitive
    assert a.check(bearer(ADMIN), "publish", "cam").allowed  # admin includes the others
    assert a.check(bearer(OTHER_STREAM), "read", "garage").allowed
    for header, right, stream, status, error in [
        (None, "read", "cam", 401, ""),
        ("Basic dXNlcjpwYXNz", "read", "cam", 401, ""),
        (bearer("x" * 20), "read", "cam", 401, "invalid_token"),
        (bearer(VIEWER[:-1]), "read", "cam", 401, "invalid_token"),
        (bearer(VIEWER), "admin", "*", 403, "insufficient_scope"),
        (bearer(VIEWER), "publish", "cam", 403, "insufficient_scope"),
        (bearer(PUBLISHER), "read", "cam", 403, "insufficient_scope"),
        (bearer(OTHER_STREAM), "read", "cam", 403, "insufficient_scope"),
    ]:
        d = a.check(header, right, stream)
        assert (d.allowed, d.status, d.error) == (False, status, error), (header, right, stream)


def test_public_read_and_no_tokens() -> None:
    assert Authorizer(auth(public_read=True)).check(None, "read", "cam").allowed
    assert not Authorizer(auth(public_read=True)).check(None, "admin").allowed
    open_ = Authorizer(auth(tokens=[]))
    assert not open_.enforced and open_.check(None, "admin").allowed


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ({"token": "short"}, "config: auth.tokens[0].token: must be at least 16 characters"),
        (
            {"token": VIEWER, "rights": ["watch"]},
            "config: auth.tokens[0].rights: must be one of read",
        ),
        ({"token": VIEWER, "rights": []}, "config: auth.tokens[0].rights: must name one or more"),
        ({"token": VIEWER, "colour": "red"}, "config: auth.tokens[0].colour: unknown key"),
    ],
)
def test_bad_tokens_are_refused_with_the_key(token: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        auth(tokens=[token])
    assert str(e.value).startswith(message)


def test_what_each_request_needs() -> None:
    for method, path, need in [
        ("GET", "/", None),
        ("GET", "/web/viewer.js", None),
        ("GET", "/healthz", None),
        ("GET", "/openapi.yaml", None),
        ("GET", "/cam/", None),
        ("OPTIONS", "/cam/whep", None),
        ("POST", "/whep", ("read", "cam")),
        ("POST", "/garage/whep", ("read", "garage")),
        ("DELETE", "/cam/whep/abc", ("read", "cam")),
        ("POST", "/cam/whip", ("publish", "cam")),
        ("GET", "/api/status", ("admin", "*")),
        ("PATCH", "/api/controls", ("admin", "*")),
        ("GET", "/metrics", ("admin", "*")),
        ("GET", "/anything/else", ("admin", "*")),
    ]:
        assert required_right(method, path, "cam") == need, (method, path)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Running]:
    overrides = {
        "http.host": "127.0.0.1", "http.port": 0, "video.source": "testsrc",
        "video.width": 320, "video.height": 240, "auth.public_read": False, "auth.tokens": TOKENS,
        "http.cors_origins": ["http://page.example"], "http.state_dir": str(tmp_path),
    }  # fmt: skip
    async with running(config.load(None, env={}, overrides=overrides)) as d:
        yield d


async def test_the_http_surface_from_outside(daemon: Running) -> None:
    sdp = {"Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http:

        async def call(
            method: str, path: str, token: str | None = None, **kw: Any
        ) -> tuple[int, Any, str]:
            headers = dict(kw.pop("headers", {}))
            if token:
                headers["Authorization"] = f"Bearer {token}"
            async with http.request(method, daemon.url + path, headers=headers, **kw) as r:
                return r.status, r.headers, await r.text()

        status, headers, body = await call("GET", "/api/status")
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="appliance"'
        assert body == "a bearer token with the admin right is needed\n"
        status, headers, body = await call("GET", "/api/status", "x" * 20)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="appliance", error="invalid_token"'
        status, headers, body = await call("GET", "/api/status", VIEWER)
        assert status == 403 and 'error="insufficient_scope"' in headers["WWW-Authenticate"]
        assert "viewer" not in body and VIEWER not in body  # nothing about the token comes back
        assert (await call("GET", "/api/status", ADMIN))[0] == 200
        assert (await call("GET", "/metrics", VIEWER))[0] == 403
        assert (await call("PATCH", "/api/controls", VIEWER, json={"brightness": 1}))[0] == 403
        # WHEP: read on the stream. Past the check, a bad offer is the handler's 400.
        assert (await call("POST", "/cam/whep", data="v=0", headers=sdp))[0] == 401
        assert (await call("POST", "/cam/whep", PUBLISHER, data="v=0", headers=sdp))[0] == 403
        assert (await call("POST", "/cam/whep", OTHER_STREAM, data="v=0", headers=sdp))[0] == 403
        assert (await call("POST", "/cam/whep", VIEWER, data="v=0", headers=sdp))[0] in (400, 503)
        assert (await call("DELETE", "/cam/whep/nope", VIEWER))[0] == 404
        assert (await call("DELETE", "/cam/whep/nope"))[0] == 401
        # Open to anyone: the page (so that it can ask for a token), its files, health, preflight.
        assert (await call("GET", "/"))[0] == 200
        assert (await call("GET", "/web/whep.js"))[0] == 200
        assert (await call("GET", "/healthz"))[0] in (200, 503)
        preflight = {"Origin": "http://page.example", "Access-Control-Request-Method": "POST"}
        status, headers, _ = await call("OPTIONS", "/cam/whep", headers=preflight)
        assert status in (200, 204) and "Authorization" in headers["Access-Control-Allow-Headers"]
        # A refusal still carries CORS, so a page on another origin can read the 401 and ask.
        # WHEP answers any origin (the token guards it); the API only the listed ones.
        status, headers, _ = await call(
            "POST", "/cam/whep", data="v=0", headers={**sdp, "Origin": "http://page.example"}
        )
        assert status == 401 and headers["Access-Control-Allow-Origin"] == "*"
        assert "WWW-Authenticate" in headers["Access-Control-Expose-Headers"]
