"""The stream registry, stream names, and what WHIP ingest does with aiortc's reassembled frames."""

from __future__ import annotations

import time

import pytest
from aiortc.jitterbuffer import JitterFrame

from appliance.egress import display_url
from appliance.errors import Overloaded, SessionNotFound
from appliance.media import pts_from_ns
from appliance.rtc import IngestVideo
from appliance.stream import Stream
from appliance.streams import BadStreamName, Streams, name_problem

IDR = b"\x00\x00\x00\x01\x67\x42\xe0\x1f\xaa\x00\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88\x84"
P = b"\x00\x00\x00\x01\x41\x9a\x00"


def test_names() -> None:
    assert name_problem("door-2_b") is None
    assert "1 to 64" in (name_problem("a.b") or "")
    assert "1 to 64" in (name_problem("") or "")
    assert "1 to 64" in (name_problem("x" * 65) or "")
    assert name_problem("whip") == "'whip' is reserved for the HTTP API"


def test_registry_creates_finds_limits_and_removes() -> None:
    streams = Streams(Stream, max_streams=2)
    camera = Stream("cam")
    streams.add_camera(camera)
    door = streams.create("door")
    assert streams.get("door") is door and streams.find("yard") is None
    with pytest.raises(SessionNotFound, match="no stream named 'yard'"):
        streams.get("yard")
    with pytest.raises(BadStreamName):
        streams.create("api")
    streams.create("yard")
    with pytest.raises(Overloaded, match=r"published stream limit reached \(2\)"):
        streams.create("gate")  # the camera's stream is not counted
    streams.remove(door)
    assert [s.name for s in streams] == ["cam", "yard"]
    streams.remove(door)  # twice: nothing more happens
    with pytest.raises(ValueError):
        streams.remove(camera)


def test_ingest_starts_at_a_keyframe_and_keeps_the_publishers_spacing() -> None:
    stream = Stream("door")
    ingest = IngestVideo(stream, "test", ssrc=None)
    ingest.put((None, JitterFrame(P, 0)))  # before any keyframe: not published
    assert stream.frames == 0 and ingest.frames == 0
    before = pts_from_ns(time.monotonic_ns())
    ingest.put((None, JitterFrame(IDR, 3000)))
    ingest.put((None, JitterFrame(P, 6000)))
    ingest.put((None, JitterFrame(P, 9000)))
    assert stream.frames == 3 and stream.keyframes == 1 and ingest.keyframes == 1
    assert stream.profile_level_id == "42e01f"
    gop = stream.gop
    assert before <= gop[0].pts <= pts_from_ns(time.monotonic_ns())
    assert [f.pts - gop[0].pts for f in gop] == [0, 3000, 6000]
    assert [f.capture_ns - gop[0].capture_ns for f in gop] == [0, 33_333_333, 66_666_666]
    ingest.close()
    ingest.put((None, JitterFrame(P, 12000)))  # after close: dropped
    assert stream.frames == 3


def test_egress_display_url_hides_secrets() -> None:
    assert (
        display_url("https://user:pw@sfu.example.net:8443/whip/abc?key=secret#x")
        == "https://sfu.example.net:8443/whip/abc"
    )
