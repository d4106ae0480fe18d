"""The packetizer against an independent oracle: aiortc's H.264 depayloader, and PyAV's decoder."""

from __future__ import annotations

import os

import av
import pytest
from aiortc.codecs.h264 import H264PayloadDescriptor, h264_depayload

from appliance import config
from appliance.capture.testsrc import TestPattern
from appliance.core import h264
from appliance.core.packetizer import NAL_FU_A, NAL_STAP_A, H264Packetizer
from appliance.core.ring import FLAG_KEYFRAME, FLAG_MARKER, PacketRing
from appliance.encoders.software import X264Encoder
from tests.apps import yuv420p

MAX = 1200


def nal(kind: int, size: int, nri: int = 0x60) -> bytes:
    # no start-code emulation inside, and a non-zero last byte (the RBSP stop bit), as in real NALs
    body = os.urandom(size - 2).replace(b"\x00\x00", b"\x00\x01") + b"\x80"
    return bytes([nri | kind]) + body


def annexb(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def packets(ring: PacketRing, indices: range) -> list[bytes]:
    return [bytes(ring.payload(i)) for i in indices]


def depayload(payloads: list[bytes]) -> bytes:
    """What aiortc's receiver reassembles: Annex-B with 4-byte start codes."""
    return b"".join(h264_depayload(p) for p in payloads)


def roundtrip(*nals: bytes, keyframe: bool = False, max_payload: int = MAX) -> list[bytes]:
    ring = PacketRing(1024, 1500)
    indices = H264Packetizer(ring, max_payload).packetize(annexb(*nals), 9000, 5, keyframe)
    out = packets(ring, indices)
    assert depayload(out) == annexb(*(n for n in nals if n[0] & 0x1F not in (9, 12)))
    assert all(len(p) <= max_payload for p in out)
    flags = [ring.flags[ring.slot(i)] for i in indices]
    assert [bool(f & FLAG_MARKER) for f in flags] == [False] * (len(out) - 1) + [True]
    assert bool(flags[0] & FLAG_KEYFRAME) == keyframe
    assert not any(f & FLAG_KEYFRAME for f in flags[1:])
    assert {ring.timestamp[ring.slot(i)] for i in indices} == {9000}
    return out


def test_sps_pps_and_idr_become_stap_a_then_fu_a() -> None:
    sps, pps, idr = nal(7, 20), nal(8, 5), nal(5, 5000)
    out = roundtrip(sps, pps, idr, keyframe=True)
    assert out[0][0] & 0x1F == NAL_STAP_A
    assert all(p[0] & 0x1F == NAL_FU_A for p in out[1:])
    # every FU-A fragment but the last is full size: one segment size for GSO
    assert {len(p) for p in out[1:-1]} == {MAX}
    assert len(out) == 1 + -(-(5000 - 1) // (MAX - 2))


def test_sps_pps_only_access_unit() -> None:
    out = roundtrip(nal(7, 20), nal(8, 5))
    assert len(out) == 1 and out[0][0] & 0x1F == NAL_STAP_A


def test_single_small_nal_is_a_single_nal_unit_packet() -> None:
    p = nal(1, 300, nri=0x40)
    assert roundtrip(p) == [p]


def test_nal_exactly_at_the_limit_and_one_byte_over() -> None:
    at = nal(1, MAX)
    assert roundtrip(at) == [at]
    over = roundtrip(nal(1, MAX + 1))
    assert len(over) == 2 and all(p[0] & 0x1F == NAL_FU_A for p in over)
    descriptors = [H264PayloadDescriptor.parse(p)[0] for p in over]
    assert [d.first_fragment for d in descriptors] == [True, False]


def test_300_kb_idr() -> None:
    out = roundtrip(nal(7, 20), nal(8, 5), nal(5, 300_000), keyframe=True)
    assert len(out) == 1 + -(-(300_000 - 1) // (MAX - 2))


def test_aud_and_filler_are_dropped_sei_is_kept() -> None:
    aud, sei, filler, slice_ = nal(9, 2, nri=0), nal(6, 40, nri=0), nal(12, 30, nri=0), nal(1, 900)
    out = roundtrip(aud, sei, filler, slice_)
    assert len(out) == 1 and out[0][0] & 0x1F == NAL_STAP_A  # SEI + slice aggregated
    assert out[0][0] & 0x60 == 0x60  # STAP-A NRI is the highest of its units


def test_stap_a_is_closed_when_the_next_nal_would_not_fit() -> None:
    a, b, c = nal(1, 700), nal(1, 480), nal(1, 400)
    out = roundtrip(a, b, c)
    assert [p[0] & 0x1F for p in out] == [NAL_STAP_A, 1]
    assert len(out[0]) == 1 + 2 + 700 + 2 + 480


def test_ring_wraps_and_old_slots_become_invalid() -> None:
    ring = PacketRing(8, 1500)
    packetizer = H264Packetizer(ring, MAX)
    for i in range(5):
        packetizer.packetize(annexb(nal(1, 2000)), i, i, False)  # 2 packets each
    assert ring.head == 10
    assert not ring.valid(1) and ring.valid(2) and ring.valid(9) and not ring.valid(10)


def test_real_encoder_output_decodes_after_the_roundtrip() -> None:
    cfg = config.load(None, env={}, overrides={"video.width": 640, "video.height": 360})
    encoder = X264Encoder(cfg.video)
    pattern = TestPattern(640, 360)
    ring = PacketRing(4096, 1500)
    packetizer = H264Packetizer(ring, MAX)
    decoder = av.CodecContext.create("h264", "r")
    decoded = 0
    for i in range(30):
        for frame in encoder.encode_frame(yuv420p(pattern.render(i, i)), i * 3000, i):
            indices = packetizer.packetize(frame.data, frame.pts, 0, frame.keyframe)
            au = depayload(packets(ring, indices))
            assert h264.nal_types(au) == h264.nal_types(frame.data)
            decoded += len(decoder.decode(av.Packet(au)))
    assert decoded == 30


def test_max_payload_must_fit_the_slot() -> None:
    with pytest.raises(ValueError, match="max_payload 1600 must be 16..1500"):
        H264Packetizer(PacketRing(8, 1500), 1600)
    with pytest.raises(ValueError, match="power of two"):
        PacketRing(1000, 1500)
