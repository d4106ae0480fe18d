"""Fuzz targets: what a stranger can hand the daemon, as bytes, through the code that reads it.

Each target takes one input (bytes) and raises only when the code under test fails in a way it
must not: an exception other than the precise error it documents, or a datagram from nobody that
reached DTLS. tests/test_fuzz.py runs every target on a few hundred inputs in each test run
(hypothesis: random bytes and mutations of real inputs); tests/perf/bench_fuzz.py runs each for a
million or more, coverage-guided with atheris, and reports the figures.

- `offer`: an SDP offer through our checks and codec choice (sdp.py, rtc.choose_h264_format).
- `trickle`: a PATCH body (application/trickle-ice-sdpfrag) through SdpFrag and our candidate
  checks, then aiortc's candidate parser as rtc.add_candidates calls it.
- `rtcp`: a decrypted RTCP datagram through our parser (core/rtp.read_feedback: only ValueError)
  into a real fast-path sender (rtc.deliver_feedback: NACK, PLI, FIR, receiver reports), which
  sends over real SRTP and UDP.
- `datagram`: a UDP datagram from a stranger to an ICE socket (rtc.install's guard in front of
  aioice): nothing may reach the DTLS queue, and nothing may raise.
- `dtls`: a datagram to a connection whose DTLS was let go after its handshake (rtc/dtls.py's
  RetiredDtls, keyed from a real OpenSSL handshake): only "nothing for us" (SSL.WantReadError),
  and the end of the connection (SSL.ZeroReturnError) only for the peer's genuine close_notify.
- `check`: an ICE check on a nominated pair, as rtc.install's guard answers it by rote
  (core/stun.check_to_answer), and the same bytes as the answer to one of our consent checks
  (core/stun.answer_is_authentic): neither raises, and what check_to_answer accepts aioice's
  parser reads as a Binding request with our USERNAME and the same transaction.
- `rtsp`: what an RTSP client sends, as the server reads it (core/rtsp.py's MessageReader, the
  Transport header, the Digest header): only RtspError, with a status the server sends.
- `config`, `firstboot`: a file as the daemon or the first boot reads it.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aioice import stun
from aioice.candidate import Candidate
from aioice.ice import Connection, StunProtocol
from aiortc.sdp import candidate_from_sdp
from OpenSSL import SSL
from pylibsrtp import Policy, Session

from appliance import config, firstboot, rtc
from appliance.core import rtp, rtsp, sdp
from appliance.core import stun as core_stun
from appliance.core.errors import ConfigError, RequestError
from appliance.core.packetizer import H264Packetizer
from appliance.core.ring import PacketRing
from appliance.rtc.dtls import RetiredDtls
from appliance.send.sender import Negotiated, RtpSender
from appliance.send.udp import UdpOutput
from tests.certs import dtls_pair
from tests.core.test_stun import KEY, USERNAME, check

DATA = Path(__file__).parent / "data"
SEEDS = {
    "offer": [(DATA / "chromium-recvonly-offer.sdp").read_bytes()],
    "trickle": [
        b"a=ice-ufrag:Y2MF\r\na=ice-pwd:tx3yFmNWxCgIYlRdm0iIKhsw\r\nm=audio 9 RTP/AVP 0\r\n"
        b"a=mid:0\r\na=candidate:1 1 udp 2113937151 10.99.0.2 50000 typ host\r\n"
        b"a=end-of-candidates\r\n"
    ],
    "rtcp": [
        bytes.fromhex("81cd0003") + bytes(4) + (0x11223344).to_bytes(4, "big") + bytes(4),
        bytes.fromhex("81ce0002") + bytes(4) + (0x11223344).to_bytes(4, "big"),
        bytes.fromhex("81c90007") + bytes(4) + (0x11223344).to_bytes(4, "big") + bytes(20),
        bytes.fromhex("84ce0004") + bytes(8) + (0x11223344).to_bytes(4, "big") + bytes(4),  # FIR
    ],
    "check": [check(), check(extra={"USE-CANDIDATE": None})],
    "datagram": [b"", b"\x16\xfe\xfd" + bytes(20), b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)],
    "dtls": [  # the shapes of what a peer sends after its handshake (epoch 1, AES-GCM)
        b"\x15\xfe\xfd\x00\x01\x00\x00\x00\x00\x00\x01\x00\x1a" + bytes(26),  # an alert
        b"\x17\xfe\xfd\x00\x01\x00\x00\x00\x00\x00\x02\x00\x20"
        + bytes(32)  # data, then
        + b"\x15\xfe\xfd\x00\x01\x00\x00\x00\x00\x00\x03\x00\x1a"
        + bytes(26),  # an alert
        b"\x16\xfe\xfd\x00\x00\x00\x00\x00\x00\x00\x05\x00\x0c" + bytes(12),  # handshake
    ],
    "rtsp": [
        b"SETUP rtsp://10.0.0.2:8554/cam/video RTSP/1.0\r\nCSeq: 3\r\nAuthorization: Digest "
        b'username="nvr", realm="appliance", nonce="ab", uri="rtsp://10.0.0.2:8554/cam", '
        b'response="00"\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n'
        b"$\x01\x00\x04abcdGET_PARAMETER rtsp://h/cam RTSP/1.0\r\nCSeq: 4\r\n"
        b"Content-Length: 2\r\n\r\nhi",
    ],
    "config": [(Path(config.__file__).parent / "appliance.example.toml").read_bytes()],
    "firstboot": [b'[system]\nhostname = "door"\n[stream]\nname = "door"\n'],
}


def mutate(seed: bytes, rng: random.Random) -> bytes:
    """A real input with a few of its lines dropped, doubled, cut short, rewritten or inserted:
    such inputs reach far deeper than random bytes do."""
    lines = seed.split(b"\n")
    for _ in range(rng.randint(1, 6)):
        if not lines:
            break
        at = rng.randrange(len(lines))
        action = rng.choice(("drop", "double", "cut", "replace", "insert"))
        if action == "drop":
            del lines[at]
        elif action == "double":
            lines.insert(at, lines[at])
        elif action == "cut":
            lines[at] = lines[at][: rng.randint(0, len(lines[at]))]
        elif action == "replace":
            head = lines[at].split(b":", 1)[0].split(b"=", 1)[0]
            tail = rng.choice((b"", b"0", b"-1", b"99999999999", b"\xff\xfe", rng.randbytes(12)))
            lines[at] = head + rng.choice((b":", b"=", b" ")) + tail
        else:
            lines.insert(at, rng.choice(lines) + rng.randbytes(rng.randint(0, 8)))
    return b"\n".join(lines)


def offer(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    if sdp.webrtc_offer_problem(text) is not None:
        return
    text = sdp.strip_mdns_candidates(text)
    sdp.has_video(text)
    sdp.has_media(text, "audio")
    sdp.ice_credentials(text)
    sdp.video_ssrc(text)
    sdp.video_direction(text)
    sdp.sends_opus(text)
    for line in text.splitlines():
        if line.startswith("a=candidate:"):
            sdp.candidate_problem(line)
    try:
        rtc.choose_h264_format(text, "42e01f")
    except RequestError:
        pass


def trickle(data: bytes) -> None:
    try:
        frag = sdp.SdpFrag.parse(data.decode("utf-8", "replace"))
    except ValueError:
        return
    for media in frag.media:
        for line in media.candidates:
            if sdp.is_mdns_candidate("a=" + line) or sdp.candidate_problem("a=" + line):
                continue
            try:  # as rtc.add_candidates calls it
                candidate_from_sdp(line.split(":", 1)[1])
            except (AssertionError, ValueError, IndexError):
                pass


def ice_check(data: bytes) -> None:
    core_stun.answer_is_authentic(data, data[8:20], KEY)  # as if it answered ours
    transaction = core_stun.check_to_answer(data, USERNAME, KEY, controlling=False)
    if transaction is not None:
        message = stun.parse_message(data)
        assert message.message_class == stun.Class.REQUEST
        assert message.transaction_id == transaction
        assert message.attributes["USERNAME"] == USERNAME.decode()


def rtsp_stream(data: bytes) -> None:
    try:
        messages = rtsp.MessageReader().feed(data)
    except rtsp.RtspError as e:
        assert e.status in rtsp.REASONS, e.status
        return
    for message in messages:
        if isinstance(message, rtsp.Request):
            try:
                rtsp.parse_transport(message.headers.get("transport", ""))
            except rtsp.RtspError as e:
                assert e.status in rtsp.REASONS, e.status
            rtsp.digest_params(message.headers.get("authorization", ""))


class _RtcpTarget:
    """A real fast-path sender with packets in its ring, sending SRTP to a UDP sink."""

    def __init__(self) -> None:
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.setblocking(False)
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.out.bind(("127.0.0.1", 0))
        ring = PacketRing(256, 1200)
        negotiated = Negotiated(108, 0x11223344, {}, "0", "fuzz", 109, 0x55667788)
        session = Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        output = UdpOutput(self.out, self.sink.getsockname())
        self.sender = RtpSender("fuzz", ring, negotiated, session, output, lambda: None)
        packetizer = H264Packetizer(ring, 1200)
        nal = b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 20
        for i in range(8):
            self.sender.send_range(packetizer.packetize(nal, i * 3000, 0, i == 0))

    def close(self) -> None:
        self.sender.close()
        self.sink.close()
        self.out.close()

    def __call__(self, data: bytes) -> None:
        try:
            items = rtp.read_feedback(data)
        except ValueError:
            return
        for item in items:
            rtc.deliver_feedback(self.sender, item)
        try:
            while self.sink.recv(65536):
                pass
        except BlockingIOError:
            pass


class _DatagramTarget:
    """An aioice connection with one real UDP socket, behind rtc.install's guard."""

    def __init__(self) -> None:
        rtc.install()
        self.loop = asyncio.new_event_loop()
        self.connection = Connection(ice_controlling=False)
        self.protocol: Any = None

        async def endpoint() -> None:
            _, self.protocol = await self.loop.create_datagram_endpoint(
                lambda: StunProtocol(self.connection), local_addr=("127.0.0.1", 0)
            )

        self.loop.run_until_complete(endpoint())
        port = self.protocol.transport.get_extra_info("sockname")[1]
        self.protocol.local_candidate = Candidate(  # as aioice's gathering sets it
            foundation="fuzz", component=1, transport="udp", priority=1, host="127.0.0.1",
            port=port, type="host",
        )  # fmt: skip

    def close(self) -> None:
        self.protocol.transport.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def __call__(self, data: bytes) -> None:
        self.protocol.datagram_received(data, ("127.0.0.1", 9))
        queue = self.connection._queue
        if not queue.empty():
            raise AssertionError(f"a stranger's datagram reached DTLS: {queue.get_nowait()!r}")


class _DtlsTarget:
    """A RetiredDtls keyed from a real OpenSSL handshake, as the daemon's side (the DTLS client,
    as when it answers), and the peer's genuine close_notify."""

    def __init__(self) -> None:
        ours, peer = dtls_pair("ECDHE-ECDSA-AES128-GCM-SHA256")
        retired = RetiredDtls.retire(ours, server=False, peer_key=None)
        assert retired is not None
        self.retired = retired
        peer.shutdown()
        self.genuine = peer.bio_read(65536)
        retired.bio_write(self.genuine)  # the keys are right: the genuine alert ends it
        try:
            retired.recv(1500)
            raise AssertionError("the peer's close_notify did not end the connection")
        except SSL.ZeroReturnError:
            retired.closed_by_peer = False

    def __call__(self, data: bytes) -> None:
        self.retired.bio_write(data)
        try:
            self.retired.recv(1500)
        except SSL.WantReadError:
            return
        except SSL.ZeroReturnError:
            if self.genuine not in data:
                raise AssertionError(
                    f"a datagram without the peer's close_notify closed: {data!r}"
                ) from None
            self.retired.closed_by_peer = False
            return
        raise AssertionError("recv returned data: nothing after the handshake is for us")


def _file_target(
    read: Callable[[Path], object], allowed: type[Exception]
) -> Callable[[bytes], None]:
    folder = Path(tempfile.mkdtemp(prefix="appliance-fuzz-"))

    def target(data: bytes) -> None:
        path = folder / "input.toml"
        path.write_bytes(data)
        try:
            read(path)
        except allowed:
            pass

    return target


def _firstboot(path: Path) -> object:
    root = path.parent / "root"
    return firstboot.apply(path, root=root, config_path=root / "appliance.toml")


def targets() -> dict[str, Callable[[bytes], None]]:
    """Every target by name, built now (the stateful ones hold sockets: `close()` them)."""
    return {
        "offer": offer,
        "trickle": trickle,
        "rtsp": rtsp_stream,
        "check": ice_check,
        "rtcp": _RtcpTarget(),
        "datagram": _DatagramTarget(),
        "dtls": _DtlsTarget(),
        "config": _file_target(lambda p: config.load(p, env={}), ConfigError),
        "firstboot": _file_target(_firstboot, firstboot.FirstBootError),
    }
