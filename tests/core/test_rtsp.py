"""RTSP messages on the wire (core/rtsp.py): what a byte stream holds, what a Transport header
asks for, the SDP a DESCRIBE answers with."""

from __future__ import annotations

import base64

import pytest

from appliance.core import rtsp
from appliance.core.rtsp import Interleaved, MessageReader, RtspError, Transport


def test_requests_and_interleaved_frames_come_apart_in_any_chunks() -> None:
    wire = (
        b"OPTIONS rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n"
        b"$\x01\x00\x04abcd"
        b"GET_PARAMETER rtsp://h/cam RTSP/1.0\r\nCSeq: 2\r\nSession: x\r\nContent-Length: 3\r\n\r\nhey"
    )
    for size in (1, 3, 7, len(wire)):
        reader = MessageReader()
        out: list[object] = []
        for at in range(0, len(wire), size):
            out += reader.feed(wire[at : at + size])
        first, frame, last = out
        assert isinstance(first, rtsp.Request) and first.method == "OPTIONS" and first.cseq == "1"
        assert frame == Interleaved(1, b"abcd")
        assert isinstance(last, rtsp.Request) and last.body == b"hey"
        assert last.headers["session"] == "x"


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"hello\r\n\r\n", 400),
        (b"PLAY rtsp://h/cam RTSP/1.0\r\n\r\n", 400),  # no CSeq
        (b"PLAY rtsp://h/cam RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
        (b"PLAY rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\nbad header\r\n\r\n", 400),
        (b"SET_PARAMETER rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999\r\n\r\n", 413),
        (b"PLAY rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"PLAY \xff RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400),
        (b"A" * (rtsp.MAX_HEAD + 1), 400),  # no end of headers in sight
    ],
)
def test_what_cannot_be_read_is_refused_with_a_status(wire: bytes, status: int) -> None:
    with pytest.raises(RtspError) as e:
        MessageReader().feed(wire)
    assert e.value.status == status


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("RTP/AVP/TCP;unicast;interleaved=0-1", Transport(tcp=True, channels=(0, 1))),
        ("RTP/AVP/TCP;unicast;interleaved=2", Transport(tcp=True, channels=(2, 3))),
        ("RTP/AVP;unicast;client_port=5000-5001", Transport(tcp=False, client_ports=(5000, 5001))),
        ("RTP/AVP/UDP;unicast;client_port=5002", Transport(tcp=False, client_ports=(5002, 5003))),
        # The first one this server can serve, in the client's order.
        (
            "RTP/AVP;multicast,RTP/AVP/TCP;unicast;interleaved=4-5",
            Transport(tcp=True, channels=(4, 5)),
        ),
    ],
)
def test_transport_the_client_asked_for(header: str, expected: Transport) -> None:
    assert rtsp.parse_transport(header) == expected


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("RTP/AVP/TCP;unicast;interleaved=300-301", 400),
        ("RTP/SAVP;unicast;client_port=5000-5001", 461),
        ("RTP/AVP;multicast", 461),
        ("", 461),
        ("RTP/AVP;unicast;client_port=0-1", 461),
    ],
)
def test_transports_this_server_does_not_send(header: str, status: int) -> None:
    with pytest.raises(RtspError) as e:
        rtsp.parse_transport(header)
    assert e.value.status == status


def test_describe_sdp_carries_the_real_parameter_sets() -> None:
    sps, pps = b"\x67\x42\xe0\x1f\xaa", b"\x68\xce\x3c\x80"
    tracks = [rtsp.h264_track(sps, pps, "42e01f"), rtsp.opus_track(1)]
    text = rtsp.sdp(rtsp.Description("door", tracks), "192.168.1.5", 7).decode()
    sets = f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"
    assert (
        "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;"
        f"sprop-parameter-sets={sets}" in text
    )
    assert "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000" in text
    assert "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 opus/48000/2" in text
    assert text.count("a=control:") == 3 and "a=control:video" in text
    assert "o=- 7 1 IN IP4 192.168.1.5" in text


def test_a_response_may_repeat_a_header() -> None:
    challenge = [("WWW-Authenticate", 'Digest realm="a"'), ("WWW-Authenticate", 'Basic realm="a"')]
    text = rtsp.response(401, "3", challenge).decode()
    assert text.startswith("RTSP/1.0 401 Unauthorized\r\nCSeq: 3\r\n")
    assert text.count("WWW-Authenticate:") == 2 and text.endswith("\r\n\r\n")


def test_digest_parameters_quoted_or_not() -> None:
    value = (
        'username="nvr", realm="appliance", nonce="n0", uri="rtsp://h:8554/cam", '
        'response="abc", algorithm=MD5, qop=auth, nc=00000001, cnonce="c,1"'
    )
    params = rtsp.digest_params(value)
    assert params["username"] == "nvr" and params["uri"] == "rtsp://h:8554/cam"
    assert (params["algorithm"], params["qop"], params["nc"]) == ("MD5", "auth", "00000001")
    assert params["cnonce"] == "c,1"  # a comma inside quotes is the value's
    assert rtsp.digest_params("") == {} and rtsp.digest_params('broken="') == {"broken": ""}
