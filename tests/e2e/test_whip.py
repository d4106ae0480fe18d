"""WHIP both ways, against real peers: aiortc and Chromium publish into the daemon (ingest); a
second daemon publishes its camera into the first, and into GStreamer's webrtcbin (egress);
viewers decode at every step."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import DaemonFactory, wait_ready, wait_until
from tests.e2e.peers import FAKE_CAMERA, AiortcPublisher, AiortcViewer, chromium
from tests.e2e.test_audio import bursts, pcm_of, peak_hz
from tests.e2e.test_browser import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SDP = {"Content-Type": "application/sdp"}
PUBLISH = "publish-token-0123456789"
READ = "read-token-0123456789ab"
ADMIN = "admin-token-0123456789a"
TOKENS = [
    {"name": "pub", "token": PUBLISH, "rights": ["publish"], "streams": ["door", "relay"]},
    {"name": "viewer", "token": READ, "rights": ["read"]},
    {"name": "admin", "token": ADMIN, "rights": ["admin"]},
]


async def status(http: aiohttp.ClientSession, url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(f"{url}/api/status", headers=headers) as r:
        assert r.status == 200
        return await r.json()


def stream_of(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in state["streams"] if s["name"] == name), None)


async def wait_published(
    http: aiohttp.ClientSession, url: str, name: str, token: str | None = None, timeout: float = 20
) -> None:
    """Until the stream `name` has had its first keyframe from its publisher."""

    async def ready() -> bool:
        s = stream_of(await status(http, url, token), name)
        return bool(s and s["ready"])

    await wait_until(ready, timeout, f"stream {name} never became ready")


async def wait_publisher_gone(
    http: aiohttp.ClientSession, url: str, name: str, token: str | None = None, timeout: float = 10
) -> None:
    """Until the stream `name` has no publisher (or is gone): its WHIP session ended."""

    async def gone() -> bool:
        s = stream_of(await status(http, url, token), name)
        return s is None or s["publisher"] is None

    await wait_until(gone, timeout, f"the publisher of {name} outlived its session")


async def test_aiortc_publisher_feeds_viewers_and_gets_their_keyframe_requests(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon(**{"whip.linger": 1.0}) as d:
        publisher = AiortcPublisher(http, f"{d.url}/door/whip")
        viewer = AiortcViewer(http, f"{d.url}/door/whep")
        try:
            offer = await publisher.offer()
            async with http.post(f"{d.url}/door/whip", data=offer, headers=SDP) as r:
                assert r.status == 201, await r.text()
                assert r.headers["Content-Type"] == "application/sdp"
                assert r.headers["Location"].startswith("/door/whip/")
                assert r.headers["ETag"].startswith('"')
                assert r.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
                answer = await r.text()
                publisher.location = f"{d.url}{r.headers['Location']}"
            video = answer.split("m=video ")[1]
            assert "a=recvonly" in video
            rtpmaps = [line for line in video.split("\r\n") if line.startswith("a=rtpmap:")]
            assert {m.split()[1].split("/")[0] for m in rtpmaps} <= {"H264", "rtx"}, rtpmaps
            from aiortc import RTCSessionDescription

            await publisher.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

            await wait_published(http, d.url, "door")
            before = stream_of(await status(http, d.url), "door")
            assert before is not None and before["origin"] == "whip"
            await viewer.connect()
            frames = await viewer.frames(10)
            assert (frames[-1].width, frames[-1].height) == (640, 360)
            # The viewer's join asked for a keyframe; the daemon sent the publisher a PLI, and
            # aiortc's encoder answered with a keyframe of its own.
            after = stream_of(await status(http, d.url), "door")
            assert after is not None
            assert after["publisher"]["plis_sent"] >= 1
            assert after["keyframes"] > before["keyframes"]
            assert after["viewers"] == 1

            # The publisher leaves: the viewer stays for whip.linger seconds, then its session
            # is closed and the stream is gone.
            assert await publisher.delete() == 200

            async def gone() -> bool:
                return stream_of(await status(http, d.url), "door") is None

            await wait_until(gone, 10, "the stream outlived its publisher's linger time")
            assert (await status(http, d.url))["viewers"] == []
            async with http.post(f"{d.url}/door/whep", data="v=0", headers=SDP) as r:
                assert r.status == 404
        finally:
            await viewer.close()
            await publisher.close()


async def vp8_only_offer() -> str:
    from aiortc import RTCPeerConnection, RTCRtpSender

    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("video", direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video")
        assert caps is not None
        transceiver.setCodecPreferences([c for c in caps.codecs if c.mimeType == "video/VP8"])
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_ingest_refusals_are_precise_and_leave_nothing_behind(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon(**{"whip.max_streams": 1}) as d:
        await wait_ready(d)
        first = AiortcPublisher(http, f"{d.url}/door/whip")
        recvonly = AiortcViewer(http, f"{d.url}/door/whip")
        try:
            offer = await first.offer()

            async def post(path: str, body: str, content_type: str = "application/sdp") -> Any:
                async with http.post(
                    f"{d.url}{path}", data=body, headers={"Content-Type": content_type}
                ) as r:
                    return r.status, (await r.text()).strip()

            assert await post("/cam/whip", offer) == (
                409,
                "stream 'cam' is one of this device's cameras; publish to another name",
            )
            assert (await post("/door/whip", offer, "text/plain"))[0] == 415
            assert await post("/door/whip", "hello") == (
                400,
                "the body is not an SDP offer (it must start with v=0)",
            )
            code, text = await post("/door/whip", await recvonly.offer())
            assert (code, text) == (
                400,
                "the offer's video is recvonly: a WHIP publisher sends (sendonly)",
            )
            code, text = await post("/door/whip", await vp8_only_offer())
            assert code == 406 and "packetization-mode=1" in text, text
            code, text = await post("/a.b/whip", offer)
            assert code in (400, 404), text
            # Nothing was created by the refusals.
            assert [s["name"] for s in (await status(http, d.url))["streams"]] == ["cam"]

            assert await first.post(offer) == 201
            assert first.location is not None
            second = AiortcPublisher(http, f"{d.url}/door/whip")
            try:
                second_offer = await second.offer()
                code, text = await post("/door/whip", second_offer)
                assert code == 409 and "has a publisher" in text, text
                code, text = await post("/yard/whip", second_offer)
                assert (code, text) == (503, "published stream limit reached (1)")
            finally:
                await second.close()

            session = first.location
            async with http.patch(
                session,
                data="a=ice-ufrag:x\r\n",
                headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": '"0"'},
            ) as r:
                assert r.status == 412
            async with http.delete(session.replace("/door/", "/yard/")) as r:
                assert r.status == 404
            async with http.delete(f"{d.url}/door/whip/nosuchsession") as r:
                assert r.status == 404
            async with http.options(f"{d.url}/door/whip") as r:
                assert r.status == 204 and r.headers["Accept-Post"] == "application/sdp"
            assert await first.delete() == 200
            assert await first.delete() == 404
        finally:
            await first.close()
            await recvonly.close()
        # The camera's viewers never noticed.
        viewer = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await viewer.connect()
            assert len(await viewer.frames(5)) == 5
        finally:
            await viewer.close()


async def test_ingest_off_and_authorization(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon(**{"whip.ingest": False}) as d:
        async with http.post(f"{d.url}/door/whip", data="v=0", headers=SDP) as r:
            assert r.status == 403
            assert "turned off" in await r.text()
    async with daemon(**{"auth.tokens": TOKENS}) as d:
        publisher = AiortcPublisher(http, f"{d.url}/door/whip", token=PUBLISH)
        try:
            offer = await publisher.offer()
            for token, code in ((None, 401), ("wrong-token-0123456789", 401), (READ, 403)):
                headers = {**SDP, **({"Authorization": f"Bearer {token}"} if token else {})}
                async with http.post(f"{d.url}/door/whip", data=offer, headers=headers) as r:
                    assert r.status == code, (token, await r.text())
                    assert "Bearer" in r.headers["WWW-Authenticate"]
            # A publish token for other streams only.
            async with http.post(
                f"{d.url}/yard/whip",
                data=offer,
                headers={**SDP, "Authorization": f"Bearer {PUBLISH}"},
            ) as r:
                assert r.status == 403
            assert (await status(http, d.url, ADMIN))["streams"][1:] == []
            assert await publisher.post(offer) == 201
            await wait_published(http, d.url, "door", ADMIN)
            viewer = AiortcViewer(http, f"{d.url}/door/whep", token=READ)
            try:
                await viewer.connect()
                assert len(await viewer.frames(5)) == 5
            finally:
                await viewer.close()
        finally:
            await publisher.close()


async def test_second_publisher_replaces_the_first_and_viewers_keep_watching(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    async with daemon(**{"whip.on_conflict": "replace"}) as d:
        first = AiortcPublisher(http, f"{d.url}/door/whip")
        second = AiortcPublisher(http, f"{d.url}/door/whip")
        viewer = AiortcViewer(http, f"{d.url}/door/whep")
        try:
            await first.connect()
            await wait_published(http, d.url, "door")
            await viewer.connect()
            assert len(await viewer.frames(5)) == 5
            await second.connect()
            state = stream_of(await status(http, d.url), "door")
            assert state is not None
            assert state["publisher"]["id"] == second.location.rsplit("/", 1)[1]  # type: ignore[union-attr]
            assert await first.delete() == 404  # its session was closed by the replacement
            frames = await viewer.frames(20)
            assert len(frames) == 20
        finally:
            await viewer.close()
            await first.close()
            await second.close()


async def test_chromium_publishes_and_chromium_watches(daemon: DaemonFactory) -> None:
    async with daemon() as d, chromium(*FAKE_CAMERA) as browser:
        publisher = await browser.new_page()
        await publisher.goto(f"{d.url}/web/publish.html?stream=phone")
        await publisher.wait_for_function(
            "window.publisher && window.publisher.framesSent >= 30", timeout=20000, polling=100
        )
        sent = await publisher.evaluate("() => JSON.parse(JSON.stringify(window.publisher))")
        assert sent["state"] == "connected" and sent["codec"] == "H264", sent
        viewer = await browser.new_page()
        await viewer.goto(f"{d.url}/phone/")
        await viewer.wait_for_function(
            "window.viewer && window.viewer.framesPresented >= 60", timeout=20000, polling=100
        )
        watched = await viewer.evaluate("() => JSON.parse(JSON.stringify(window.viewer))")
        assert watched["state"] == "connected"
        assert watched["width"] >= 320 and watched["height"] >= 180, watched
        # The viewer's join reached the browser that publishes as a PLI.
        await publisher.wait_for_function(
            "window.publisher.pliCount >= 1", timeout=10000, polling=100
        )
        # And its fake microphone's beeps are heard on the other page.
        assert watched["audio"] is True
        await viewer.click("#unmute")
        await viewer.wait_for_function(
            "window.viewer.audioEnergy > 0 && window.viewer.audioPackets > 100",
            timeout=20000,
            polling=100,
        )


async def test_daemon_relays_to_daemon_over_whip_egress_and_reconnects(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    target = {"url": f"http://127.0.0.1:{port}/relay/whip", "token": PUBLISH}
    wrong = {"url": f"http://127.0.0.1:{port}/relay2/whip", "token": "not-the-token-0123456789"}
    central = {"http.port": port, "auth.tokens": TOKENS, "auth.public_read": True}

    async def watch(url: str) -> None:
        viewer = AiortcViewer(http, f"{url}/relay/whep", audio=True)
        try:
            await viewer.connect()
            frames = await viewer.frames(10)
            assert (frames[-1].width, frames[-1].height) == (640, 360)
            # The camera's test tone came along: 1 kHz bursts, through egress and ingest.
            mono, rate = pcm_of(await viewer.audio_frames(3.5))
            whole = [(a, b) for a, b in bursts(mono, rate) if 0 < a and b < len(mono)]
            peaks = [peak_hz(mono[a:b], rate) for a, b in whole]
            assert any(abs(p - 1000) < 20 for p in peaks), (whole, peaks)
        finally:
            await viewer.close()

    async with daemon(egress=[target, wrong], **{"audio.source": "testsrc"}) as camera:
        async with daemon(**central) as hub:
            await wait_published(http, hub.url, "relay", ADMIN)
            await watch(hub.url)
            egress = (await status(http, camera.url))["egress"]
            assert egress[0]["state"] == "connected" and egress[0]["connects"] == 1, egress
            assert egress[0]["frames"] > 0 and egress[0]["url"] == target["url"]
            assert "401" in (egress[1]["last_error"] or ""), egress[1]
            assert PUBLISH not in str(egress) and wrong["token"] not in str(egress)  # no secrets
            hub_state = stream_of(await status(http, hub.url, ADMIN), "relay")
            assert hub_state is not None and hub_state["origin"] == "whip"

        async def retrying() -> bool:
            return (await status(http, camera.url))["egress"][0]["state"] != "connected"

        await wait_until(retrying, 10, "the egress did not notice the hub go away")
        async with daemon(**central) as hub:

            async def reconnected() -> bool:
                return (await status(http, camera.url))["egress"][0]["connects"] == 2

            await wait_until(reconnected, 40, "the egress did not reconnect")
            await wait_published(http, hub.url, "relay", ADMIN)
            await watch(hub.url)


GST_WHIP = Path(__file__).with_name("gst_whip.py")
GST_MODULES = (
    "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None); "
    "assert all(Gst.ElementFactory.find(e) for e in ('webrtcbin', 'x264enc', 'avdec_h264'))"
)


def gstreamer_problem() -> str | None:
    try:
        subprocess.run(["/usr/bin/python3", "-c", GST_MODULES], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"no GStreamer webrtcbin for /usr/bin/python3 (tests/run.sh installs it): {e}"
    return None


async def test_egress_to_gstreamer_webrtcbin_an_independent_whip_endpoint(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    problem = gstreamer_problem()
    if problem:
        pytest.skip(problem)
    port = free_port()
    token = "gst-token-0123456789abcdef"
    server = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", str(GST_WHIP), "serve", str(port), token, stdout=asyncio.subprocess.PIPE
    )
    assert server.stdout is not None
    try:
        assert await asyncio.wait_for(server.stdout.readline(), 30) == b"ready\n"
        url = f"http://127.0.0.1:{port}/whip"

        async def gst() -> Any:
            async with http.get(f"http://127.0.0.1:{port}/stats") as r:
                return await r.json()

        targets = [{"url": url, "token": token}, {"url": url, "token": "wrong-0123456789abcdef"}]
        async with daemon(egress=targets[1:]) as d:

            async def refused() -> bool:
                return "401" in ((await status(http, d.url))["egress"][0]["last_error"] or "")

            await wait_until(refused, 15, "a wrong token was not refused with 401")
        async with daemon(egress=targets[:1]) as d:

            async def decoded() -> bool:
                return bool((await gst())["frames"] >= 60)

            await wait_until(decoded, 30, "GStreamer decoded too few frames from the egress")
            stats = await gst()
            assert (stats["width"], stats["height"]) == (640, 360)
            assert stats["audio_buffers"] > 0  # the test tone's Opus, decoded by GStreamer
            egress = (await status(http, d.url))["egress"][0]
            assert egress["state"] == "connected", egress
        # On the way out the daemon ended its session with DELETE (RFC 9725 section 4.3).
        stats = await gst()
        assert stats["session"] is False and stats["closed_frames"] >= 60, stats
    finally:
        server.terminate()
        await server.wait()


async def test_gstreamer_publishes_into_ingest_and_a_viewer_decodes(
    daemon: DaemonFactory, http: aiohttp.ClientSession
) -> None:
    # GStreamer's DTLS certificate is RSA: this is the test of rtc._accept_rsa_dtls_peers.
    problem = gstreamer_problem()
    if problem:
        pytest.skip(problem)
    async with daemon(**{"auth.tokens": TOKENS}) as d:
        publisher = await asyncio.create_subprocess_exec(
            "/usr/bin/python3", str(GST_WHIP), "publish", f"{d.url}/door/whip", PUBLISH,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert publisher.stdout is not None
        viewer = AiortcViewer(http, f"{d.url}/door/whep", token=READ)
        try:
            assert await asyncio.wait_for(publisher.stdout.readline(), 30) == b"published\n"
            await wait_published(http, d.url, "door", ADMIN)
            await viewer.connect()
            frames = await viewer.frames(30)
            assert (frames[-1].width, frames[-1].height) == (640, 360)
            door = stream_of(await status(http, d.url, ADMIN), "door")
            assert door is not None and door["publisher"]["state"] == "connected"
            # x264enc's keyframe interval is 300 frames (10 s): the viewer's first frame within
            # a few seconds came from the keyframe its join asked the publisher for.
            assert door["publisher"]["plis_sent"] >= 1 and door["keyframes"] >= 2, door
        finally:
            await viewer.close()
            publisher.terminate()
            await publisher.wait()
