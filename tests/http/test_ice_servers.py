"""The ICE servers the daemon hands a session's peer: static credentials, TURN shared-secret
credentials minted per session (coturn's use-auth-secret), and who gets them. That coturn itself
takes the minted credentials and refuses expired ones is checked against coturn in
tests/e2e/test_nat.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance import config
from appliance.config import IceServer
from appliance.core.errors import ConfigError
from appliance.core.stream import Stream
from appliance.http import ice
from tests.apps import app_for
from tests.http.test_whep import OFFER, SDP, feed_one_keyframe

SECRET = "s3cret-kept-on-the-device"
TURN = {"urls": ["turn:turn.lan:3478?transport=udp"], "secret": SECRET, "lifetime": 3600}
VIEWER, PUBLISHER = "v" * 20, "p" * 20
TOKENS = [
    {"name": "viewer", "token": VIEWER, "rights": ["read"]},
    {"name": "camera", "token": PUBLISHER, "rights": ["publish"]},
]


def load(**overrides: Any) -> config.Config:
    return config.load(
        None, env={}, overrides={"video.width": 320, "video.height": 240, **overrides}
    )


def test_static_credentials_become_link_headers() -> None:
    cfg = load(
        **{
            "webrtc.ice_servers": [
                "stun:stun.lan:3478",
                {"urls": ["turn:turn.lan:3478"], "username": "u", "credential": "p"},
            ]
        }
    )
    assert cfg.webrtc.ice_servers[0] == IceServer(urls=("stun:stun.lan:3478",))
    assert ice.links(ice.session_servers(cfg.webrtc.ice_servers, "cam")) == [
        '<stun:stun.lan:3478>; rel="ice-server"',
        '<turn:turn.lan:3478>; rel="ice-server"; username="u"; credential="p"; credential-type="password"',
    ]


def test_a_shared_secret_mints_an_expiring_credential_per_stream() -> None:
    cfg = load(**{"webrtc.ice_servers": [TURN]})
    (server,) = ice.session_servers(cfg.webrtc.ice_servers, "door", now=1_800_000_000.7)
    assert server.username == "1800003600:door" and not server.secret
    # coturn's check (turn_server's use-auth-secret): HMAC-SHA1 over the username, base64.
    expected = hmac.new(SECRET.encode(), b"1800003600:door", hashlib.sha1).digest()
    assert base64.b64decode(server.credential) == expected
    (later,) = ice.session_servers(cfg.webrtc.ice_servers, "door", now=1_800_000_060)
    assert later.username == "1800003660:door" and later.credential != server.credential
    (link,) = ice.links([server])
    assert link.startswith('<turn:turn.lan:3478?transport=udp>; rel="ice-server"; username="')
    assert SECRET not in link


@pytest.mark.parametrize(
    ("server", "key"),
    [
        ({**TURN, "username": "u"}, "webrtc.ice_servers[0].secret"),
        ({"urls": ["stun:stun.lan"], "secret": "x"}, "webrtc.ice_servers[0].secret"),
        ({**TURN, "lifetime": 5}, "webrtc.ice_servers[0].lifetime"),
    ],
)
def test_bad_shared_secret_settings_are_refused_by_key(server: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(**{"webrtc.ice_servers": [server]})
    assert e.value.key == key


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    cfg = load(**{"webrtc.ice_servers": [TURN], "auth.tokens": TOKENS, "auth.public_read": False})
    stream = Stream("cam")
    feed_one_keyframe(stream, cfg)
    c = TestClient(TestServer(app_for(cfg, stream)))
    await c.start_server()
    yield c
    await c.close()


def usernames(links: list[str]) -> list[str]:
    return [link.split('username="', 1)[1].split('"', 1)[0] for link in links]


async def test_options_hands_fresh_credentials_only_to_who_may_post(client: TestClient) -> None:
    bearer = {"Authorization": f"Bearer {VIEWER}"}
    r = await client.options("/cam/whep", headers=bearer)
    assert r.status == 204
    (username,) = usernames(r.headers.getall("Link"))
    expiry, stream = username.split(":")
    assert stream == "cam" and 3590 < int(expiry) - time.time() <= 3600
    r = await client.options("/whep", headers=bearer)  # the camera's stream by default
    assert usernames(r.headers.getall("Link"))[0].endswith(":cam")
    # No token, the wrong right, or a browser's preflight (which carries none): 204, no servers.
    for headers in (
        {},
        {"Authorization": f"Bearer {PUBLISHER}"},
        {"Origin": "http://page.example", "Access-Control-Request-Method": "POST"},
    ):
        r = await client.options("/cam/whep", headers=headers)
        assert r.status == 204 and "Link" not in r.headers, headers
    # A name no stream can have (it would go into the credential's username): none either.
    r = await client.options("/a%0d%0ab/whep", headers=bearer)
    assert r.status == 204 and "Link" not in r.headers
    # WHIP: the publish right.
    r = await client.options("/cam/whip", headers={"Authorization": f"Bearer {PUBLISHER}"})
    assert usernames(r.headers.getall("Link"))[0].endswith(":cam")
    r = await client.options("/cam/whip", headers=bearer)
    assert "Link" not in r.headers


async def test_the_post_answer_carries_a_credential_of_its_own(client: TestClient) -> None:
    bearer = {**SDP, "Authorization": f"Bearer {VIEWER}"}
    r = await client.post("/cam/whep", data=OFFER, headers=bearer)
    assert r.status == 201, await r.text()
    (username,) = usernames(r.headers.getall("Link"))
    assert username.endswith(":cam")
    assert SECRET not in str(r.headers)
