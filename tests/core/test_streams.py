"""The stream registry, stream names, and how egress shows an endpoint."""

from __future__ import annotations

import pytest

from appliance.core.errors import Overloaded, SessionNotFound
from appliance.core.stream import Stream
from appliance.core.streams import BadStreamName, Streams, name_problem
from appliance.http.egress import display_url


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


def test_egress_display_url_hides_secrets() -> None:
    assert (
        display_url("https://user:pw@sfu.example.net:8443/whip/abc?key=secret#x")
        == "https://sfu.example.net:8443/whip/abc"
    )
