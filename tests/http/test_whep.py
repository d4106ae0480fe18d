"""WHEP status codes and headers, in process: a real app, a real stream fed by the real encoder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance import config
from appliance.capture.testsrc import TestPattern
from appliance.core.stream import Stream
from appliance.encoders.software import X264Encoder
from appliance.http.sessions import SessionRegistry
from appliance.http.status import STATUS_KEY
from tests.apps import app_for, yuv420p

OFFER = (Path(__file__).parents[1] / "data" / "chromium-recvonly-offer.sdp").read_bytes().decode()
SDP = {"Content-Type": "application/sdp"}


def feed_one_keyframe(stream: Stream, cfg: config.Config) -> None:
    encoder = X264Encoder(cfg.video)
    encoder.force_keyframe()
    picture = TestPattern(cfg.video.width, cfg.video.height).render(0, 0)
    for frame in encoder.encode_frame(yuv420p(picture), 0, time.time_ns()):
        stream.publish(frame)


async def client_for(stream: Stream, cfg: config.Config) -> TestClient:
    client = TestClient(TestServer(app_for(cfg, stream)))
    await client.start_server()
    return client


@pytest.fixture
def cfg() -> config.Config:
    return config.load(None, env={}, overrides={"video.width": 320, "video.height": 240})


@pytest.fixture
async def client(cfg: config.Config) -> AsyncIterator[TestClient]:
    stream = Stream("cam")
    feed_one_keyframe(stream, cfg)
    assert stream.ready
    c = await client_for(stream, cfg)
    yield c
    await c.close()


async def test_wrong_content_type_is_415(client: TestClient) -> None:
    r = await client.post("/whep", data=OFFER, headers={"Content-Type": "text/plain"})
    assert r.status == 415
    assert await r.text() == "Content-Type must be application/sdp, got 'text/plain'\n"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ("", 400, "empty body: expected an SDP offer\n"),
        ("hello", 400, "the body is not an SDP offer (it must start with v=0)\n"),
    ],
)
async def test_unparseable_offer_is_400(
    client: TestClient, body: str, status: int, reason: str
) -> None:
    r = await client.post("/cam/whep", data=body, headers=SDP)
    assert (r.status, await r.text()) == (status, reason)


def without(prefix: str) -> str:
    return "\r\n".join(line for line in OFFER.split("\r\n") if not line.startswith(prefix))


@pytest.mark.parametrize(
    ("offer", "reason"),
    [
        (without("a=fingerprint:"), "the offer has no DTLS fingerprint (a=fingerprint)\n"),
        (without("a=ice-pwd:"), "the offer has no ICE credentials (a=ice-ufrag and a=ice-pwd)\n"),
        (OFFER.split("m=")[0], "the offer has no media section (m=)\n"),
        (OFFER.replace("m=video 9 UDP", "m=video nine UDP"), "the offer cannot be answered: "),
        (
            OFFER.replace("a=setup:actpass", "a=setup:bogus"),
            "the offer cannot be answered: 'bogus'\n",
        ),
    ],
)
async def test_garbled_sdp_is_400_and_daemon_stays_up(
    client: TestClient, offer: str, reason: str
) -> None:
    r = await client.post("/cam/whep", data=offer, headers=SDP)
    assert r.status == 400
    text = await r.text()
    assert text.startswith(reason)
    assert len(text.strip()) > len("the offer cannot be answered:")
    assert (await client.get("/api/status")).status == 200


async def test_offer_without_h264_is_406(client: TestClient) -> None:
    vp8_only = without("a=rtpmap:102 H264").replace("H264/90000", "H265/90000")
    r = await client.post("/cam/whep", data=vp8_only, headers=SDP)
    assert r.status == 406
    text = await r.text()
    assert "this stream is H.264 profile-level-id 42e014" in text
    assert "the offer's H.264 profiles (packetization-mode=1): none" in text


async def test_offer_without_video_is_406(client: TestClient) -> None:
    audio_only = OFFER.split("m=video")[0] + "m=audio" + OFFER.split("m=audio")[1]
    r = await client.post("/cam/whep", data=audio_only, headers=SDP)
    assert r.status == 406
    assert "no video section" in await r.text()


async def test_delete_after_the_peer_ended_the_session_is_200_on_its_stream_only(
    client: TestClient,
) -> None:
    r = await client.post("/cam/whep", data=OFFER, headers=SDP)
    assert r.status == 201
    location = r.headers["Location"]
    registry = client.app[STATUS_KEY].viewers
    [session] = list(registry)
    # The peer's close_notify came first.
    await registry.close(session, "connection closed by the peer", by_peer=True)
    assert (await client.delete(location)).status == 200
    assert (await client.delete(location.replace("/cam/", "/other/"))).status == 404
    assert len(registry) == 0
    # A session ended otherwise (here by its own DELETE) answers a second DELETE 404.
    r = await client.post("/cam/whep", data=OFFER, headers=SDP)
    assert (await client.delete(r.headers["Location"])).status == 200
    assert (await client.delete(r.headers["Location"])).status == 404


async def test_unknown_stream_and_session_are_404(client: TestClient) -> None:
    assert (await client.post("/other/whep", data=OFFER, headers=SDP)).status == 404
    assert (await client.delete("/cam/whep/nosuch")).status == 404
    r = await client.patch(
        "/cam/whep/nosuch",
        data="a=end-of-candidates\r\n",
        headers={"Content-Type": "application/trickle-ice-sdpfrag"},
    )
    assert r.status == 404
    assert await r.text() == "no session 'nosuch'\n"


async def test_source_not_ready_is_503_with_retry_after(cfg: config.Config) -> None:
    client = await client_for(Stream("cam"), cfg)
    try:
        # Healthy means frames: the daemon serves before its camera sends any.
        h = await client.get("/healthz")
        assert h.status == 503
        assert (await h.text()).startswith("source starting: no frame yet (")
        r = await client.post("/whep", data=OFFER, headers=SDP)  # after a wait for a keyframe
        assert r.status == 503
        assert r.headers["Retry-After"] == "1"
        assert "first keyframe" in await r.text()
    finally:
        await client.close()


async def test_an_offer_waits_for_a_starting_streams_first_keyframe(cfg: config.Config) -> None:
    # The daemon serves before its camera is open: an offer in that gap is answered once the
    # first keyframe arrives, not sent away.
    stream = Stream("cam")
    client = await client_for(stream, cfg)
    try:
        post = asyncio.create_task(client.post("/whep", data=OFFER, headers=SDP))
        await asyncio.sleep(0.5)
        assert not post.done()  # held (before, it was a 503 at once)
        feed_one_keyframe(stream, cfg)
        r = await post
        assert r.status == 201, await r.text()
        assert "profile-level-id=42e0" in await r.text()
        assert (await client.delete(r.headers["Location"])).status == 200
    finally:
        await client.close()


@pytest.mark.parametrize("path", ["/cam/whep", "/phone/whep", "/phone/whip"])
async def test_options_and_cors_preflight(client: TestClient, path: str) -> None:
    # Also for a stream no publisher has created yet: the POST will say what is wrong.
    r = await client.options(
        path,
        headers={
            "Origin": "http://other.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status == 204
    assert r.headers["Accept-Post"] == "application/sdp"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    assert "Location" in r.headers["Access-Control-Expose-Headers"]
    # Eyevinn's WHIP client sends an ETag request header with its trickle PATCH.
    assert "ETag" in r.headers["Access-Control-Allow-Headers"].split(", ")


async def test_a_plain_options_says_what_other_origins_may_send(client: TestClient) -> None:
    """Eyevinn's WHIP client reads Access-Control-Allow-Methods from its own OPTIONS (not a
    preflight) to decide whether to trickle: it is there, and a page may read it."""
    r = await client.options("/cam/whip", headers={"Origin": "http://other.example"})
    assert r.status == 204
    assert "PATCH" in r.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Methods" in r.headers["Access-Control-Expose-Headers"]


async def test_errors_carry_cors_headers(client: TestClient) -> None:
    r = await client.post(
        "/whep", data="x", headers={"Content-Type": "text/plain", "Origin": "http://o.example"}
    )
    assert r.status == 415
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_cors_restricted_to_configured_origins() -> None:
    cfg = config.load(None, env={}, overrides={"http.cors_origins": ["http://good.example"]})
    client = await client_for(Stream("cam"), cfg)
    try:
        good = await client.get("/api/status", headers={"Origin": "http://good.example"})
        assert good.headers["Access-Control-Allow-Origin"] == "http://good.example"
        bad = await client.get("/api/status", headers={"Origin": "http://bad.example"})
        assert "Access-Control-Allow-Origin" not in bad.headers
        whep = await client.options("/cam/whep", headers={"Origin": "http://bad.example"})
        assert whep.headers["Access-Control-Allow-Origin"] == "*"
        # A listed origin's page sends a token, hence a preflight first: it passes (2xx).
        for path, method in [
            ("/api/streams", "GET"),
            ("/api/controls?camera=cam", "PATCH"),
            ("/api/health", "GET"),
            ("/cam/snapshot.jpg", "GET"),
            ("/metrics", "GET"),
        ]:
            preflight = await client.options(
                path,
                headers={
                    "Origin": "http://good.example",
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )
            assert preflight.status == 204, path
            assert preflight.headers["Access-Control-Allow-Origin"] == "http://good.example"
            assert method in preflight.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    finally:
        await client.close()


async def test_by_default_no_other_origin_reads_the_picture_or_the_api(client: TestClient) -> None:
    """A web page someone on the LAN opens cannot read the camera or the daemon's state through
    their browser: snapshots, /api/* and /metrics send no CORS headers unless configured."""
    page = {"Origin": "http://evil.example"}
    for path in ("/api/status", "/api/controls", "/metrics", "/cam/snapshot.jpg"):
        r = await client.get(path, headers=page)
        assert "Access-Control-Allow-Origin" not in r.headers, path
        preflight = await client.options(
            path, headers={**page, "Access-Control-Request-Method": "DELETE"}
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers, path
    for path in ("/cam/whep", "/whep", "/cam/whip", "/web/whep.js"):
        r = await client.options(path, headers=page)
        assert r.headers["Access-Control-Allow-Origin"] == "*", path


async def test_status_describes_stream_and_source(client: TestClient) -> None:
    st = await (await client.get("/api/status")).json()
    assert st["stream"]["name"] == "cam"
    assert st["stream"]["ready"] is True
    assert st["stream"]["profile_level_id"] == "42e014"
    assert st["stream"]["keyframes"] == 1
    assert st["source"] == {"kind": "", "restarts": 0, "running": False}  # no source in this test
    assert st["viewers"] == []


async def test_healthz_fails_when_source_stalls(cfg: config.Config) -> None:
    stream = Stream("cam", clock=lambda: time.monotonic() - 10)
    feed_one_keyframe(stream, cfg)  # its only frame, ten seconds ago
    client = await client_for(stream, cfg)
    try:
        r = await client.get("/healthz")
        assert r.status == 503
        assert (await r.text()).startswith("source stalled: no frame for ")
    finally:
        await client.close()


async def test_viewer_page_and_modules_are_served(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200 and "startPage" in await page.text()
    for module in ("app.js", "whep.js", "viewer.js", "stamp.js", "token.js"):
        r = await client.get(f"/web/{module}")
        assert r.status == 200 and "export" in await r.text()
    assert (await client.get("/cam/")).status == 200


async def test_answer_to_chromium_picks_constrained_baseline_and_playout_delay(
    cfg: config.Config,
) -> None:
    stream = Stream("cam")
    feed_one_keyframe(stream, cfg)
    sessions = SessionRegistry()
    client = TestClient(TestServer(app_for(cfg, stream, sessions)))
    await client.start_server()
    try:
        r = await client.post("/cam/whep", data=OFFER, headers=SDP)
        assert r.status == 201
        assert r.headers["Content-Type"] == "application/sdp"
        answer = await r.text()
        video = answer.split("m=video ")[1].split("m=audio")[0]
        # Chromium offers 42001f as 102 and 42e01f as 108: the stream is Constrained Baseline
        assert video.split("\r\n")[0].split()[2:] == ["108", "109"]
        assert (
            "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e014"
            in video
        )
        assert "a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay" in video
        assert "a=sendonly" in video
        assert ".local" not in answer
    finally:
        await sessions.close_all("test over")
        await client.close()


async def test_one_address_opening_sessions_too_fast_gets_429() -> None:
    cfg = config.load(
        None, env={}, overrides={"http.sessions_burst": 2, "http.sessions_per_minute": 1}
    )
    stream = Stream("cam")
    feed_one_keyframe(stream, cfg)
    client = await client_for(stream, cfg)
    try:
        statuses = []
        for _ in range(3):
            r = await client.post("/cam/whep", data="v=0\r\n", headers=SDP)
            statuses.append(r.status)
        assert statuses == [400, 400, 429]  # the first two reach the handler (a bad offer)
        assert int(r.headers["Retry-After"]) == 60
        assert (await r.text()) == "too many sessions from this address; try again later\n"
    finally:
        await client.close()
