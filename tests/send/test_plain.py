"""An RTSP reader's plain-RTP sender with real sockets: what the reader receives, over UDP (GSO
batches) and over a TCP connection (interleaved frames)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest
from aiortc.rtp import RtpPacket

from appliance.core.packetizer import H264Packetizer
from appliance.core.ring import PacketRing
from appliance.send.plain import PlainRtpSender
from tests.send.test_sender import MAX, annexb, nal


class UdpReader:
    def __init__(self) -> None:
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rtp.settimeout(0)

    def datagrams(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.rtp.recv(65536))
            except BlockingIOError:
                return out


@pytest.fixture
def udp() -> Iterator[tuple[PlainRtpSender, H264Packetizer, UdpReader, list[int]]]:
    reader = UdpReader()
    socks = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM),) * 2
    socks[0].bind(("127.0.0.1", 0))
    ring = PacketRing(256, MAX)
    asked: list[int] = []
    address = reader.rtp.getsockname()
    sender = PlainRtpSender(
        "t", ring, 96, lambda: asked.append(1), udp=socks, addresses=(address, address)
    )
    yield sender, H264Packetizer(ring, MAX), reader, asked
    sender.close()
    socks[0].close()
    reader.rtp.close()


def test_udp_sends_each_packet_once_in_gso_batches(udp) -> None:
    sender, packetizer, reader, _ = udp
    sender.send_range(packetizer.packetize(annexb(nal(1, 3000)), 3000, 0, False))
    assert reader.datagrams() == []  # a reader starts at a keyframe
    idr = packetizer.packetize(annexb(nal(7, 20), nal(8, 5), nal(5, 40_000)), 6000, 0, True)
    sender.send_range(idr)
    p_frame = packetizer.packetize(annexb(nal(1, 2500)), 9000, 0, False)
    sender.send_range(p_frame)
    got = [RtpPacket.parse(d) for d in reader.datagrams()]
    ring = packetizer.ring
    assert [bytes(p.payload) for p in got] == [bytes(ring.payload(i)) for i in [*idr, *p_frame]]
    seqs = [p.sequence_number for p in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    assert {p.ssrc for p in got} == {sender.ssrc} and {p.payload_type for p in got} == {96}
    assert [p.marker for p in got] == [0] * (len(idr) - 1) + [1] + [0] * (len(p_frame) - 1) + [1]
    assert {(p.timestamp - got[0].timestamp) & 0xFFFFFFFF for p in got} == {0, 3000}
    assert sender.packets == len(got) and sender.frames == 2
    output = sender._output
    assert output is not None and output.datagrams == len(got)
    # SPS and PPS go together in one STAP-A; the IDR's 35 full-size fragments in one call
    # (MAX_SEGMENTS is 40); the P-frame's three in another.
    assert output.calls < len(got) // 4, (output.calls, len(got))


async def test_tcp_frames_each_packet_on_its_channel_and_drops_a_stuck_reader() -> None:
    ring = PacketRing(512, MAX)
    packetizer = H264Packetizer(ring, MAX)
    asked: list[int] = []
    received = bytearray()
    got_some = asyncio.Event()
    accepted: list[asyncio.StreamWriter] = []

    first_frame: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def reader(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)
        received.extend(await r.readexactly(await first_frame))
        got_some.set()  # and reads no more

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)  # small kernel buffers,
    listener.bind(("127.0.0.1", 0))  # so that a reader that stops reading is found at once
    server = await asyncio.start_server(reader, sock=listener)
    _, writer = await asyncio.open_connection(*listener.getsockname())
    writer.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 10
    )
    sender = PlainRtpSender(
        "t", ring, 96, lambda: asked.append(1), tcp=writer.transport, channels=(2, 3),
        max_backlog=64 << 10,
    )  # fmt: skip
    idr = packetizer.packetize(annexb(nal(5, 4000)), 0, 0, True)
    sender.send_range(idr)
    first_frame.set_result(sender.bytes)
    await asyncio.wait_for(got_some.wait(), 5)
    frames, at = [], 0
    while at < len(received):
        dollar, channel, length = struct.unpack_from("!BBH", received, at)
        assert (dollar, channel) == (0x24, 2)
        frames.append(RtpPacket.parse(bytes(received[at + 4 : at + 4 + length])))
        at += 4 + length
    assert [bytes(p.payload) for p in frames] == [bytes(ring.payload(i)) for i in idr]
    # The reader has stopped reading: once its connection holds more than max_backlog unsent,
    # the sender skips frames (counted) and asks for a keyframe to start again from.
    sent_frames = sender.frames
    for n in range(400):
        sender.send_range(packetizer.packetize(annexb(nal(1, 8000)), 3000 * n, 0, False))
    assert sender.drops.total > 0 and asked == [1]  # asked once, then waits for it
    assert sender.frames < sent_frames + 400
    assert writer.transport.get_write_buffer_size() <= (64 << 10) + 20_000  # one frame past it
    sender.close()
    for w in (writer, *accepted):
        w.close()
    server.close()
    await server.wait_closed()
