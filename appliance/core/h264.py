"""H.264 Annex-B byte streams: NAL unit scanning by offsets, and what the SDP needs from the SPS.

Core module: bytes in, bytes out, standard library only. References are to ITU-T H.264 (2021) and
RFC 6184 (RTP payload format for H.264).
"""

from __future__ import annotations

from collections.abc import Iterator

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

# profile_idc values (H.264 Annex A.2)
PROFILE_BASELINE = 66
PROFILE_MAIN = 77
PROFILE_EXTENDED = 88
PROFILE_HIGH = 100


def iter_nal_units(data: bytes | bytearray | memoryview) -> Iterator[tuple[int, int]]:
    """Yield `(start, end)` offsets of each NAL unit in an Annex-B stream, start codes excluded.

    Both 3-byte (00 00 01) and 4-byte (00 00 00 01) start codes are accepted; trailing zero bytes
    before a start code belong to the start code (H.264 B.1.1), not to the NAL unit.
    """
    buf = bytes(data) if isinstance(data, memoryview) else data
    n = len(buf)
    start = _next_start(buf, 0)
    while start is not None:
        nal_start = start + 3
        nxt = _next_start(buf, nal_start)
        end = n if nxt is None else nxt
        # zero_byte / trailing_zero_8bits before the next start code are not NAL payload
        while end > nal_start and buf[end - 1] == 0:
            end -= 1
        if end > nal_start:
            yield nal_start, end
        start = nxt


def _next_start(buf: bytes | bytearray, pos: int) -> int | None:
    i = buf.find(b"\x00\x00\x01", pos)
    return None if i < 0 else i


def nal_type(header: int) -> int:
    """The nal_unit_type of a NAL header byte (H.264 7.3.1)."""
    return header & 0x1F


def nal_types(data: bytes | bytearray) -> list[int]:
    """The nal_unit_type of every NAL unit in an Annex-B stream, in order."""
    return [nal_type(data[s]) for s, _ in iter_nal_units(data)]


def is_keyframe(data: bytes | bytearray) -> bool:
    """True when the access unit holds an IDR picture (a viewer can start decoding here)."""
    return NAL_IDR in nal_types(data)


def find_nal(data: bytes | bytearray, kind: int) -> bytes | None:
    """The first NAL unit of type `kind` (header byte included), or None."""
    for s, e in iter_nal_units(data):
        if nal_type(data[s]) == kind:
            return bytes(data[s:e])
    return None


def profile_level_id(sps: bytes) -> str:
    """The SDP `profile-level-id` (RFC 6184 8.1) that truthfully describes this SPS.

    The profile is written in the canonical form WebRTC peers compare (libwebrtc's
    h264_profile_level_id): Constrained Baseline 42e0, Baseline 4200, Main 4d00, High 6400,
    Constrained High 640c; the level is the SPS's level_idc.
    """
    if len(sps) < 4 or nal_type(sps[0]) != NAL_SPS:
        raise ValueError("not an SPS NAL unit")
    return canonical_profile(sps[1], sps[2]) + f"{sps[3]:02x}"


def parse_profile_level_id(text: str) -> tuple[str, int]:
    """(canonical profile, level_idc) of an SDP profile-level-id such as `42001f` or `42c01f`."""
    if len(text) != 6:
        raise ValueError(f"profile-level-id must be 6 hex digits: {text!r}")
    raw = bytes.fromhex(text)
    return canonical_profile(raw[0], raw[1]), raw[2]


def canonical_profile(profile_idc: int, constraints: int) -> str:
    """The profile as libwebrtc compares it: four hex digits (profile_idc, profile-iop)."""
    cs0, cs1 = constraints & 0x80, constraints & 0x40
    if profile_idc == PROFILE_BASELINE:
        profile = "42e0" if cs1 else "4200"
    elif profile_idc == PROFILE_MAIN:
        profile = "42e0" if cs0 else "4d00"
    elif profile_idc == PROFILE_EXTENDED and cs0:
        profile = "42e0" if cs1 else "4200"
    elif profile_idc == PROFILE_HIGH:
        # constraint_set4 and constraint_set5 together: Constrained High
        profile = "640c" if constraints & 0x0C == 0x0C else "6400"
    else:
        raise ValueError(f"H.264 profile_idc {profile_idc} has no WebRTC profile-level-id")
    return profile


# H.264 Table A-1: (level_idc, MaxMBPS, MaxFS, MaxBR in kbit/s for Baseline/Main)
_LEVELS = (
    (10, 1_485, 99, 64),
    (11, 3_000, 396, 192),
    (12, 6_000, 396, 384),
    (13, 11_880, 396, 768),
    (20, 11_880, 396, 2_000),
    (21, 19_800, 792, 4_000),
    (22, 20_250, 1_620, 4_000),
    (30, 40_500, 1_620, 10_000),
    (31, 108_000, 3_600, 14_000),
    (32, 216_000, 5_120, 20_000),
    (40, 245_760, 8_192, 20_000),
    (41, 245_760, 8_192, 50_000),
    (42, 522_240, 8_704, 50_000),
    (50, 589_824, 22_080, 135_000),
    (51, 983_040, 36_864, 240_000),
    (52, 2_073_600, 36_864, 240_000),
)


def min_level(width: int, height: int, fps: float, bitrate: int) -> int:
    """The lowest level_idc (H.264 Table A-1) whose limits hold this picture size, rate and bitrate."""
    frame_mbs = ((width + 15) // 16) * ((height + 15) // 16)
    for level_idc, max_mbps, max_fs, max_kbps in _LEVELS:
        if frame_mbs <= max_fs and frame_mbs * fps <= max_mbps and bitrate <= max_kbps * 1000:
            return level_idc
    raise ValueError(f"{width}x{height} at {fps} fps and {bitrate} bit/s exceeds H.264 level 5.2")
