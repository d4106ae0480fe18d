"""WHIP ingest below the network: aiortc's RTP packets into access units (MarkerJitterBuffer), and
access units into a stream on the daemon's clocks (IngestVideo)."""

from __future__ import annotations

import time

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from appliance.core.media import pts_from_ns
from appliance.core.stream import Stream
from appliance.rtc import IngestVideo
from appliance.rtc.internals import MarkerJitterBuffer

IDR = b"\x00\x00\x00\x01\x67\x42\xe0\x1f\xaa\x00\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88\x84"
P = b"\x00\x00\x00\x01\x41\x9a\x00"


def packet(seq: int, timestamp: int, marker: bool) -> RtpPacket:
    p = RtpPacket(payload_type=102, marker=int(marker), sequence_number=seq, timestamp=timestamp)
    p._data = bytes([seq & 0xFF])  # type: ignore[attr-defined]  # what the depayloader leaves
    return p


def frames(buffer: MarkerJitterBuffer, *packets: RtpPacket) -> list[tuple[bytes, int] | None]:
    out = []
    for p in packets:
        _, frame = buffer.add(p)
        out.append((frame.data, frame.timestamp) if frame else None)
    return out


def test_an_access_unit_is_complete_at_its_marker_packet() -> None:
    buffer = MarkerJitterBuffer()
    # In order: out at the marker, not one frame later.
    assert frames(buffer, packet(1, 0, False), packet(2, 0, True)) == [None, (b"\x01\x02", 0)]
    # Reordered: out when the gap is filled.
    assert frames(buffer, packet(4, 3000, True), packet(3, 3000, False)) == [
        None,
        (b"\x03\x04", 3000),
    ]
    # Its marker packet lost: out when the next access unit starts, as aiortc does.
    assert frames(buffer, packet(5, 6000, False), packet(7, 9000, False)) == [None, None]
    assert frames(buffer, packet(8, 9000, True)) == [None]  # 6 missing: 7-8 wait behind it
    assert frames(buffer, packet(6, 6000, False)) == [(b"\x05\x06", 6000)]
    assert frames(buffer, packet(9, 12000, True)) == [(b"\x07\x08", 9000)]


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


def test_opus_packets_pass_at_once_in_order_and_late_ones_are_dropped() -> None:
    from appliance.core.audio import AudioTrack
    from appliance.core.media import audio_pts_from_ns
    from appliance.rtc import IngestAudio
    from appliance.rtc.internals import PassThroughAudioBuffer

    buffer = PassThroughAudioBuffer()
    got = [buffer.add(packet(seq, ts, False))[1] for seq, ts in ((1, 0), (3, 1920), (2, 960))]
    assert [(f.data, f.timestamp) if f else None for f in got] == [
        (b"\x01", 0),
        (b"\x03", 1920),  # 2 is lost for now: a gap the viewers conceal
        None,  # and when it comes late, it is dropped
    ]
    wrapped = PassThroughAudioBuffer()
    assert wrapped.add(packet(0xFFFF, 0, False))[1] is not None
    assert wrapped.add(packet(1, 1920, False))[1] is not None  # past the wrap: newer

    track = AudioTrack()
    ingest = IngestAudio(track)
    before = audio_pts_from_ns(time.monotonic_ns())
    for ts in (500, 1460, 2420):
        ingest.put((None, JitterFrame(b"\xfc\x00", ts)))
    ring = track.ring
    assert [ring.timestamp[i] - ring.timestamp[0] for i in range(3)] == [0, 960, 1920]
    assert ring.timestamp[0] >= before
    assert [ring.capture_ns[i] - ring.capture_ns[0] for i in range(3)] == [
        0,
        20_000_000,
        40_000_000,
    ]
    ingest.close()
    ingest.put((None, JitterFrame(b"\xfc\x00", 3380)))
    assert track.packets == 3
