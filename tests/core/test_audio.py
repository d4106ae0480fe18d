"""The audio path below the network: the test tone, Opus encoding, the track's ring and fan-out,
and what a viewer's socket receives from the same fast-path sender as video (real SRTP)."""

from __future__ import annotations

import os
import socket
import struct
import time

import numpy as np
from pylibsrtp import Policy, Session

from appliance.capture.testsrc import TONE_HZ, TestPattern, flash_box, tone
from appliance.config import AudioConfig
from appliance.core import rtp
from appliance.core.audio import OPUS_MAX_PACKET, AudioTrack
from appliance.core.media import EncodedAudio, audio_pts_from_ns
from appliance.encoders.opus import OpusEncoder
from appliance.send.sender import Negotiated, RtpSender
from appliance.send.udp import UdpOutput
from tests.send.test_sender import Viewer


def test_tone_bursts_on_whole_seconds_at_its_frequency() -> None:
    second = 1_700_000_000 * 10**9
    before = np.frombuffer(tone(second - 10**9 // 50, 960, 1), "<i2")  # the 20 ms before
    burst = np.frombuffer(tone(second, 4800, 1), "<i2")  # the first 100 ms of a second
    after = np.frombuffer(tone(second + 10**8, 960, 1), "<i2")  # the 20 ms after it
    assert not before.any() and not after.any()
    assert abs(int(burst.max()) - 16384) < 50
    spectrum = np.abs(np.fft.rfft(burst))
    assert abs(np.fft.rfftfreq(len(burst), 1 / 48000)[int(np.argmax(spectrum))] - TONE_HZ) < 11
    stereo = np.frombuffer(tone(second, 960, 2), "<i2").reshape(-1, 2)
    assert (stereo[:, 0] == stereo[:, 1]).all()


def test_the_picture_flashes_in_the_first_frame_of_a_second() -> None:
    pattern = TestPattern(640, 360, fps=30)
    top, left, size = flash_box(640, 360)
    lit = pattern.render(0, 1_700_000_000_010)[top + 4 : top + size - 4, left + 4 : left + size - 4]
    assert (lit == 235).all()
    dark = pattern.render(1, 1_700_000_000_043)[
        top + 4 : top + size - 4, left + 4 : left + size - 4
    ]
    assert (dark == 16).all()


def test_opus_packets_carry_the_input_clock_less_the_encoder_lookahead() -> None:
    encoder = OpusEncoder(AudioConfig())
    pts = audio_pts_from_ns(time.monotonic_ns())
    packets = []
    for i in range(5):
        packets += encoder.encode(tone(time.time_ns(), 960, 1), pts + 960 * i)
    assert [p.pts - pts for p in packets] == [-120, 840, 1800, 2760, 3720]  # 2.5 ms lookahead
    assert all(0 < len(p.data) <= OPUS_MAX_PACKET for p in packets)
    # capture_ns is the wall-clock time of the same instant as pts (monotonic, 48 kHz)
    offset = time.time_ns() - time.monotonic_ns()
    for p in packets:
        assert abs(p.capture_ns - (p.pts * 125_000 // 6 + offset)) < 2_000_000


def test_other_capture_rates_are_resampled_into_whole_48k_frames() -> None:
    encoder = OpusEncoder(AudioConfig(rate=44100, channels=2))
    t = np.arange(882) / 44100
    period = (np.repeat(np.sin(2 * np.pi * 440 * t) * 8000, 2)).astype("<i2").tobytes()
    packets = []
    for i in range(10):
        packets += encoder.encode(period, 48_000 + 960 * i)
    steps = {b.pts - a.pts for a, b in zip(packets, packets[1:], strict=False)}
    assert steps == {960} and len(packets) >= 8


class Sink:
    def __init__(self) -> None:
        self.ranges: list[range] = []

    def send_range(self, indices: range) -> None:
        self.ranges.append(indices)


def test_track_copies_each_packet_once_into_its_ring_and_hands_it_to_every_sink() -> None:
    track = AudioTrack()
    a, b = Sink(), Sink()
    track.add_sink(a)
    track.add_sink(b)
    track.publish(EncodedAudio(b"\x01\x02\x03", 960, 123))
    track.publish(EncodedAudio(b"", 1920, 124))  # empty: refused, not sent
    track.publish(EncodedAudio(bytes(OPUS_MAX_PACKET + 1), 1920, 124))  # too long: refused
    track.remove_sink(b)
    track.publish(EncodedAudio(b"\x04" * 100, 1920, 125))
    assert a.ranges == [range(0, 1), range(1, 2)] and b.ranges == [range(0, 1)]
    ring = track.ring
    assert bytes(ring.payload(0)) == b"\x01\x02\x03" and bytes(ring.payload(1)) == b"\x04" * 100
    assert (ring.timestamp[1], ring.capture_ns[1]) == (1920, 125)
    assert track.packets == 2 and track.bytes == 103


def test_a_viewer_receives_opus_rtp_without_marker_and_48k_sender_reports() -> None:
    key = os.urandom(30)
    viewer = Viewer(key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    negotiated = Negotiated(
        payload_type=111, ssrc=0xAABBCCDD, extension_ids={rtp.URI_MID: 9}, mid="1", cname="cn"
    )
    track = AudioTrack()
    sender = RtpSender(
        "t",
        track.ring,
        negotiated,
        Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND)),
        UdpOutput(sock, viewer.sock.getsockname()),
        lambda: None,
        clock_rate=48_000,
    )
    try:
        track.add_sink(sender)
        now = time.time_ns()
        for i in range(3):
            track.publish(EncodedAudio(bytes([i]) * 50, 48_000 + 960 * i, now + 20_000_000 * i))
        received = viewer.packets()
        assert [bytes(p.payload) for p in received] == [bytes([i]) * 50 for i in range(3)]
        assert {p.payload_type for p in received} == {111} and {p.marker for p in received} == {0}
        stamps = [p.timestamp for p in received]
        assert [(s - stamps[0]) & 0xFFFFFFFF for s in stamps] == [0, 960, 1920]
        assert {p.extensions.mid for p in received} == {"1"}
        # The SR's RTP time is the newest packet's, moved on by the time since, at 48 kHz.
        report = sender.sender_report()
        assert report is not None
        ntp, rtp_time = struct.unpack("!QI", report[8:20])
        seconds = (ntp >> 32) - 2_208_988_800 + (ntp & 0xFFFFFFFF) / 2**32
        elapsed = seconds - (now + 40_000_000) / 1e9
        expected = (stamps[2] + round(elapsed * 48_000)) & 0xFFFFFFFF
        assert abs(((rtp_time - expected + 2**31) & 0xFFFFFFFF) - 2**31) <= 2
    finally:
        sender.close()
        sock.close()
        viewer.sock.close()
