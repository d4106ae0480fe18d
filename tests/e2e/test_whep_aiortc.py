"""WHEP against a real aiortc viewer, over the test's private network namespace."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import aiohttp
import pytest

from appliance.capture.testsrc import read_stamp
from tests.e2e.conftest import DaemonFactory, wait_ready, wait_until
from tests.e2e.peers import AiortcViewer

pytestmark = pytest.mark.e2e


def stamp_latency_ms(frame: object) -> int | None:
    luma = frame.to_ndarray(format="yuv420p")[: frame.height]  # type: ignore[attr-defined]
    stamp = read_stamp(luma, frame.width)  # type: ignore[attr-defined]
    if stamp is None:
        return None
    return (time.time_ns() // 1_000_000 - stamp) % 2**32


async def status(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/api/status") as response:
        assert response.status == 200
        return await response.json()


@pytest.mark.parametrize("path", ["fast", "aiortc"])
async def test_viewer_decodes_live_frames_and_deletes(
    daemon: DaemonFactory, http, path: str
) -> None:
    async with daemon(**{"webrtc.sender": path}) as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await viewer.connect()
            # 640x360 at 30 fps is level 3.0: the answer declares the stream we send
            assert "profile-level-id=42e01e" in viewer.answer, viewer.answer
            frames = await viewer.frames(15)
            assert {(f.width, f.height) for f in frames} == {(640, 360)}
            latencies = [stamp_latency_ms(f) for f in frames]
            readable = [ms for ms in latencies if ms is not None]
            assert len(readable) >= 10, latencies
            assert max(readable) < 2000, readable
            # moving content: consecutive pictures differ
            first, last = (f.to_ndarray(format="gray") for f in (frames[0], frames[-1]))
            assert (first != last).mean() > 0.01

            st = await status(http, d.url)
            assert len(st["viewers"]) == 1
            (v,) = st["viewers"]
            assert viewer.location.endswith(v["id"])
            assert v["bytes"] > 0 and v["state"] == "connected" and v["path"] == path
            if path == "fast":  # the frames above came through the C packet loop
                assert v["packet_loop"] == "c" and st["packet_loop"]["loop"] == "c"

            assert await viewer.delete() == 200
            assert (await status(http, d.url))["viewers"] == []
            assert await viewer.delete() == 404
        finally:
            await viewer.close()


async def test_patch_trickle_and_its_errors(daemon: DaemonFactory, http) -> None:
    async with daemon() as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/whep")
        try:
            await viewer.connect()
            assert viewer.location.startswith(f"{d.url}/cam/whep/")
            ufrag = next(
                line.split(":", 1)[1]
                for line in viewer.pc.localDescription.sdp.splitlines()
                if line.startswith("a=ice-ufrag:")
            )
            frag_type = {"Content-Type": "application/trickle-ice-sdpfrag"}
            candidate = "a=candidate:1 1 udp 2130706431 10.99.0.2 40000 typ host"
            body = f"a=ice-ufrag:{ufrag}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{candidate}\r\n"

            async with http.patch(viewer.location, data=body, headers=frag_type) as r:
                assert r.status == 204
            async with http.patch(
                viewer.location, data=body, headers={**frag_type, "If-Match": viewer.etag}
            ) as r:
                assert r.status == 204
            async with http.patch(
                viewer.location, data=body, headers={**frag_type, "If-Match": '"stale"'}
            ) as r:
                assert r.status == 412
            async with http.patch(
                viewer.location, data=body, headers={"Content-Type": "application/sdp"}
            ) as r:
                assert r.status == 415
            restart = body.replace(f"a=ice-ufrag:{ufrag}", "a=ice-ufrag:other")
            async with http.patch(viewer.location, data=restart, headers=frag_type) as r:
                assert r.status == 422
                assert "ICE restart" in await r.text()
            async with http.patch(
                f"{d.url}/cam/whep/nosuchsession", data=body, headers=frag_type
            ) as r:
                assert r.status == 404
            # after all that, the viewer still gets pictures
            assert len(await viewer.frames(5)) == 5
        finally:
            await viewer.close()


async def test_viewer_with_a_read_token_watches_a_protected_stream(
    daemon: DaemonFactory, http
) -> None:
    token = "0123456789abcdef0123"
    tokens = [{"token": token, "rights": ["read"]}]
    async with daemon(**{"auth.public_read": False, "auth.tokens": tokens}) as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep", token=token)
        try:
            await viewer.connect()
            frames = await viewer.frames(5)
            assert {(f.width, f.height) for f in frames} == {(640, 360)}
            assert await viewer.delete() == 200
        finally:
            await viewer.close()


@pytest.mark.parametrize(("profile", "plid"), [("main", "4d001e"), ("high", "64001e")])
async def test_main_and_high_profile_streams_are_answered_with_their_profile(
    daemon: DaemonFactory, http, profile: str, plid: str
) -> None:
    async with daemon(**{"video.profile": profile}) as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await viewer.connect()
            assert f"profile-level-id={plid}" in viewer.answer, viewer.answer
            frames = await viewer.frames(10)
            assert {(f.width, f.height) for f in frames} == {(640, 360)}
        finally:
            await viewer.close()


@pytest.mark.parametrize("path", ["fast", "aiortc"])
async def test_second_viewer_unaffected_when_first_leaves(
    daemon: DaemonFactory, http, path: str
) -> None:
    async with daemon(**{"webrtc.sender": path}) as d:
        await wait_ready(d)
        a = AiortcViewer(http, f"{d.url}/cam/whep")
        b = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await asyncio.gather(a.connect(), b.connect())
            await asyncio.gather(a.frames(5), b.frames(5))
            assert len((await status(http, d.url))["viewers"]) == 2

            assert await a.delete() == 200
            await a.close()
            frames = await b.frames(30)  # a second of video after the other left
            assert len(frames) == 30
            st = await status(http, d.url)
            assert [v["id"] for v in st["viewers"]] == [b.location.rsplit("/", 1)[1]]
            assert st["viewers"][0]["dropped"] == 0
        finally:
            await a.close()
            await b.close()


async def test_viewer_that_vanishes_without_delete_is_dropped(daemon: DaemonFactory, http) -> None:
    async with daemon() as d:
        await wait_ready(d)
        gone = AiortcViewer(http, f"{d.url}/cam/whep")
        stays = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await asyncio.gather(gone.connect(), stays.connect())
            await asyncio.gather(gone.frames(3), stays.frames(3))
            await gone.close()  # no DELETE

            async def one_left() -> bool:
                return len((await status(http, d.url))["viewers"]) == 1

            await wait_until(one_left, 15, "session not dropped")
            assert len(await stays.frames(10)) == 10
        finally:
            await gone.close()
            await stays.close()


@pytest.mark.parametrize("path", ["fast", "aiortc"])
async def test_picture_loss_report_forces_a_keyframe(
    daemon: DaemonFactory, http, path: str
) -> None:
    # GOP of 100 s: any keyframe after the first one is one a viewer asked for.
    async with daemon(**{"video.gop": 3000, "webrtc.sender": path}) as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await viewer.connect()
            await viewer.frames(10)
            before = (await status(http, d.url))["stream"]
            # A real RTCP PLI on the wire, sent the way aiortc's receiver sends it on loss.
            (transceiver,) = viewer.pc.getTransceivers()
            ssrc = int(viewer.answer.split("a=ssrc:")[1].split()[0])
            await transceiver.receiver._send_rtcp_pli(ssrc)

            async def new_keyframe() -> bool:
                stream = (await status(http, d.url))["stream"]
                return bool(stream["keyframes"] > before["keyframes"])

            await wait_until(new_keyframe, 5, "no keyframe after PLI")
            after = (await status(http, d.url))["stream"]
            assert after["keyframes_forced"] == before["keyframes_forced"] + 1
            assert after["keyframe_requests"] == before["keyframe_requests"] + 1
            assert len(await viewer.frames(10)) == 10
        finally:
            await viewer.close()


@pytest.mark.timeout(120)
async def test_killed_viewer_is_dropped_by_consent_expiry(daemon: DaemonFactory, http) -> None:
    """A viewer process killed outright (no DELETE, no DTLS close) is dropped once ICE consent
    expires (RFC 7675: 30 s), and the viewer next to it keeps playing all along."""
    async with daemon(**{"video.width": 320, "video.height": 240}) as d:
        await wait_ready(d)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e.viewer_process",
            f"{d.url}/cam/whep",
            stdout=asyncio.subprocess.PIPE,
        )
        stays = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line == b"playing host host\n", line
            await stays.connect()
            await stays.frames(3)
            assert len((await status(http, d.url))["viewers"]) == 2
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            frames = 0

            async def dropped_while_other_plays() -> bool:
                nonlocal frames
                frames += len(await stays.frames(15))
                return len((await status(http, d.url))["viewers"]) == 1

            await wait_until(dropped_while_other_plays, 60, "killed viewer never dropped", poll=0)
            assert frames >= 30 * 25  # ~30 frames/s while the other one was being given up on
            (left,) = (await status(http, d.url))["viewers"]
            assert stays.location.endswith(left["id"]) and left["dropped"] == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await stays.close()


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"stream.max_viewers": 1}, "viewer limit of this stream reached (1)"),
        ({"stream.max_viewers_total": 1}, "viewer limit reached (1)"),
    ],
)
async def test_viewer_limit_is_503_with_retry_after(
    daemon: DaemonFactory, http, limits: dict[str, int], message: str
) -> None:
    async with daemon(**limits) as d:
        await wait_ready(d)
        first = AiortcViewer(http, f"{d.url}/cam/whep")
        second = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await first.connect()
            offer = await second.offer()
            async with http.post(
                f"{d.url}/cam/whep", data=offer, headers={"Content-Type": "application/sdp"}
            ) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "5"
                assert await r.text() == message + "\n"
            assert len(await first.frames(5)) == 5
        finally:
            await first.close()
            await second.close()


async def test_metrics_parse_and_count_what_happened(daemon: DaemonFactory, http) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async def metrics() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        async with http.get(f"{d.url}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await r.text()
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return out

    cam = (("stream", "cam"),)
    async with daemon() as d:
        await wait_ready(d)
        viewer = AiortcViewer(http, f"{d.url}/cam/whep")
        try:
            await viewer.connect()
            await viewer.frames(10)
            m = await metrics()
            assert m["appliance_viewers"][cam] == 1
            assert m["appliance_viewer_sessions_total"][cam] == 1
            assert m["appliance_sent_bytes_total"][cam] > 10_000
            assert m["appliance_sent_packets_total"][cam] >= 10
            assert m["appliance_keyframes_forced_total"][cam] >= 1  # the join asked for one
            assert m["appliance_encoder_fps"][cam] > 10
            assert m["appliance_source_up"][cam] == 1
            ttff = m["appliance_time_to_first_frame_seconds_count"][cam]
            assert ttff == 1
            assert 0 < m["appliance_time_to_first_frame_seconds_sum"][cam] < 5
            assert m["appliance_time_to_first_frame_seconds_bucket"][(("le", "+Inf"), *cam)] == 1
            sent = m["appliance_sent_bytes_total"][cam]
            assert await viewer.delete() == 200
        finally:
            await viewer.close()
        m = await metrics()  # a viewer who left still counts in the totals, not in the gauge
        assert m["appliance_viewers"][cam] == 0
        assert m["appliance_sent_bytes_total"][cam] >= sent
        assert m["appliance_time_to_first_frame_seconds_count"][cam] == 1
