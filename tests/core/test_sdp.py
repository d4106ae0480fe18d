from __future__ import annotations

from pathlib import Path

import pytest

from appliance.core import sdp

OFFER = (Path(__file__).parents[1] / "data" / "chromium-recvonly-offer.sdp").read_bytes().decode()


def test_strip_mdns_candidates_keeps_everything_else() -> None:
    assert sum(sdp.is_mdns_candidate(x) for x in OFFER.splitlines()) == 2
    stripped = sdp.strip_mdns_candidates(OFFER)
    assert ".local" not in stripped
    kept = [x for x in OFFER.splitlines() if x and ".local" not in x]
    assert stripped.split("\r\n")[:-1] == kept
    assert stripped.endswith("\r\n")


def test_ip_candidates_are_not_mdns() -> None:
    line = "a=candidate:1 1 udp 2130706431 10.99.0.2 40000 typ host"
    assert not sdp.is_mdns_candidate(line)
    assert sdp.is_mdns_candidate(line.replace("10.99.0.2", "abc.local"))


def test_h264_formats_of_chromium_offer() -> None:
    formats = sdp.h264_formats(OFFER)
    assert (102, 1, "42001f") in formats
    assert (108, 1, "42e01f") in formats
    assert (116, 1, "4d001f") in formats
    assert (104, 0, "42001f") in formats


def test_h264_format_without_fmtp_is_constrained_baseline_3_1() -> None:
    text = "v=0\r\nm=video 9 RTP/AVP 99\r\na=rtpmap:99 H264/90000\r\n"
    assert sdp.h264_formats(text) == [(99, 0, "42e01f")]


def test_set_h264_profile_level_id_rewrites_only_h264() -> None:
    text = (
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 101 102\r\n"
        "a=rtpmap:101 H264/90000\r\n"
        "a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        "a=rtpmap:102 rtx/90000\r\na=fmtp:102 apt=101\r\n"
    )
    out = sdp.set_h264_profile_level_id(text, "42e028")
    assert (
        "a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e028\r\n"
        in out
    )
    assert "a=fmtp:102 apt=101\r\n" in out


def test_ice_credentials() -> None:
    assert sdp.ice_credentials(OFFER)[0] == "Y2MF"
    assert sdp.ice_credentials("v=0\r\n") == (None, None)


def test_sdpfrag_parse_rfc8840_example() -> None:
    frag = sdp.SdpFrag.parse(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
        "m=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n"
        "a=end-of-candidates\r\n"
    )
    assert (frag.ufrag, frag.pwd) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    (media,) = frag.media
    assert media.mid == "0"
    assert media.candidates == [
        "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0"
    ]
    assert media.end_of_candidates


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello\r\n", "sdpfrag line is not <type>=<value>: 'hello'"),
        ("a=mid:0\r\n", "sdpfrag a=mid before any m= line"),
    ],
)
def test_sdpfrag_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        sdp.SdpFrag.parse(text)
    assert str(e.value) == message


def test_video_direction_and_ssrc() -> None:
    offer = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=ssrc:5 cname:x\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=recvonly\r\na=ssrc-group:FID 11 12\r\n"
        "a=ssrc:11 cname:a\r\na=ssrc:12 cname:a\r\n"
    )
    assert sdp.video_direction(offer) == "recvonly"
    assert sdp.video_ssrc(offer) == 11  # the FID group's media SSRC, not the audio's
    plain = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc:42 cname:a\r\n"
    assert sdp.video_direction(plain) == "sendrecv"
    assert sdp.video_ssrc(plain) == 42
    assert sdp.video_direction("v=0\r\nm=audio 9 RTP/AVP 0\r\n") is None
    assert sdp.video_ssrc("v=0\r\nm=video 9 RTP/AVP 96\r\n") is None


def test_opus_stereo_is_declared_in_the_answer() -> None:
    answer = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
        "a=fmtp:111 minptime=10\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n"
    )
    out = sdp.set_opus_stereo(answer)
    assert "a=fmtp:111 minptime=10;stereo=1;sprop-stereo=1\r\n" in out
    assert out.count("a=fmtp:111") == 1 and out.index("a=rtpmap:111") < out.index("a=fmtp:111")
    assert (
        sdp.set_opus_stereo("v=0\r\nm=video 9 RTP/AVP 96\r\n") == "v=0\r\nm=video 9 RTP/AVP 96\r\n"
    )
