from __future__ import annotations

import pytest

from appliance.core import h264

SPS_CB_31 = bytes.fromhex("6742c01fda014016")  # libx264 baseline, level 3.1
PPS = bytes.fromhex("68ce3c80")


def annexb(*nals: bytes, four: bool = True) -> bytes:
    sc = b"\x00\x00\x00\x01" if four else b"\x00\x00\x01"
    return b"".join(sc + n for n in nals)


def test_iter_nal_units_with_both_start_code_lengths() -> None:
    idr = bytes([0x65, 1, 2, 3])
    data = annexb(SPS_CB_31, four=True) + annexb(PPS, four=False) + annexb(idr)
    units = [data[s:e] for s, e in h264.iter_nal_units(data)]
    assert units == [SPS_CB_31, PPS, idr]
    assert h264.nal_types(data) == [7, 8, 5]
    assert h264.is_keyframe(data)
    assert not h264.is_keyframe(annexb(bytes([0x41, 9, 9])))


def test_trailing_zero_bytes_belong_to_the_start_code() -> None:
    data = b"\x00\x00\x01\x09\xf0\x00\x00\x00\x00\x01\x41\x01\x00\x00"
    assert [data[s:e] for s, e in h264.iter_nal_units(data)] == [b"\x09\xf0", b"\x41\x01"]


def test_no_start_code_means_no_nal_units() -> None:
    assert list(h264.iter_nal_units(b"\x01\x02\x03")) == []
    assert h264.find_nal(b"", h264.NAL_SPS) is None


@pytest.mark.parametrize(
    ("sps_head", "expected"),
    [
        ("6742c01f", "42e01f"),  # baseline + constraint_set1: Constrained Baseline
        ("6742e01f", "42e01f"),
        ("6742001e", "42001e"),  # plain Baseline
        ("674d4028", "4d0028"),  # Main 4.0
        ("674d8028", "42e028"),  # Main with constraint_set0: Constrained Baseline
        ("67640032", "640032"),  # High 5.0
        ("67640c1f", "640c1f"),  # Constrained High
    ],
)
def test_profile_level_id_from_sps(sps_head: str, expected: str) -> None:
    assert h264.profile_level_id(bytes.fromhex(sps_head) + b"\x00") == expected


def test_profile_level_id_refuses_what_webrtc_cannot_name() -> None:
    with pytest.raises(ValueError, match="not an SPS NAL unit"):
        h264.profile_level_id(PPS)
    with pytest.raises(ValueError, match="profile_idc 244 has no WebRTC profile-level-id"):
        h264.profile_level_id(bytes.fromhex("67f4001f"))


def test_parse_profile_level_id() -> None:
    assert h264.parse_profile_level_id("42001f") == ("4200", 0x1F)
    assert h264.parse_profile_level_id("42C01F") == ("42e0", 0x1F)
    with pytest.raises(ValueError, match="6 hex digits"):
        h264.parse_profile_level_id("42e0")


@pytest.mark.parametrize(
    ("size", "fps", "bitrate", "level"),
    [
        ((320, 180), 30, 500_000, 0x0D),  # 7200 MB/s is over level 1.2
        ((640, 360), 30, 2_000_000, 0x1E),
        ((1280, 720), 30, 2_000_000, 0x1F),
        ((1280, 720), 60, 4_000_000, 0x20),
        ((1920, 1080), 30, 4_000_000, 0x28),
        ((1920, 1080), 30, 30_000_000, 0x29),
        ((3840, 2160), 30, 20_000_000, 0x33),
    ],
)
def test_min_level(size: tuple[int, int], fps: int, bitrate: int, level: int) -> None:
    assert h264.min_level(*size, fps, bitrate) == level


def test_min_level_refuses_beyond_5_2() -> None:
    with pytest.raises(ValueError, match="exceeds H.264 level 5.2"):
        h264.min_level(4096, 4096, 120, 1_000_000)
