"""The send path per packet per viewer: ours against aiortc's, on the same access units.

    .venv/bin/python -m tests.perf.bench_sendpath [--viewers 1,10,100] [--passes 3] [--workload 720p]
        [--paths c,python,aiortc]

Workload: tests/perf/workload.py (1080p30 H.264, ~4 Mbit/s, GOP 2 s, 180 access units; or 720p30
at ~600 kbit/s, one or two packets per access unit, where the per-access-unit cost shows). Every
viewer has its own real SRTP session (AEAD_AES_128_GCM, as aiortc and Chromium negotiate) and sends
real UDP datagrams to a sink in another process on 127.0.0.1 that reads them all.

- c / python: the access unit is packetized once into the ring; each viewer's RtpSender writes its
  header, copies the payload once, protects in place and sends with UDP GSO (send/sender.py), in
  the C packet loop (send/packetloop.c) or the Python one.
- aiortc: what RTCRtpSender._run_rtp does per viewer for pre-encoded media, minus asyncio:
  H264Encoder.pack(av.Packet), an RtpPacket with mid and abs-send-time, serialize(),
  pylibsrtp Session.protect(), sendto(). (aiortc adds about 4 awaits per packet on top: this
  comparison flatters aiortc.)

Figures: CPU µs per packet per viewer (this thread's CPU time, user + kernel, so the kernel's
loopback delivery to the sink counts for both paths; best of `--passes`, no pacing), and of it
the user-space part (our code, Python, libsrtp; the rest is sendmsg in the kernel), heap
allocations per packet per viewer (malloc calls counted by tests/perf/malloc_count.c under
PYTHONMALLOC=malloc, steady state), send syscalls per packet (counted where they are made), and
userspace payload copies per packet by construction. The benchmark re-runs itself under the
malloc counter (it builds it with cc) unless --no-malloc-count.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from pylibsrtp import Policy, Session

from appliance.core import rtp
from appliance.core.fanout import FanOut
from appliance.core.packetizer import H264Packetizer
from appliance.core.ring import PacketRing
from appliance.core.stream import max_payload
from appliance.send.sender import Negotiated, RtpSender
from appliance.send.udp import UdpOutput
from tests.perf.workload import WORKLOADS, access_units

HERE = Path(__file__).parent
RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", 1)
SHIM = Path("/tmp/appliance-malloc-count.so")
IDS = {rtp.URI_MID: 9, rtp.URI_ABS_SEND_TIME: 2}


def _counter(name: str) -> int:
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except AttributeError:
        return -1
    fn.restype = ctypes.c_ulonglong
    return int(fn())


def user_time() -> float:
    """This thread's CPU time in user space (the rest of thread_time() is the kernel's: sendmsg,
    GSO segmentation and the loopback delivery to the sink)."""
    return resource.getrusage(RUSAGE_THREAD).ru_utime


def mallocs() -> tuple[int, int]:
    """(malloc calls, bytes asked for) so far; (-1, -1) without the counter."""
    return _counter("malloc_count"), _counter("malloc_bytes")


def session() -> Session:
    return Session(
        Policy(
            key=os.urandom(28),
            ssrc_type=Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
    )


def sink() -> tuple[subprocess.Popen[str], tuple[str, int]]:
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<25)\n"
        "s.bind(('127.0.0.1',0));print(s.getsockname()[1],flush=True)\n"
        "b=bytearray(65536)\n"
        "while True: s.recv_into(b)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, ("127.0.0.1", int(proc.stdout.readline()))


class Fast:
    def __init__(self, viewers: int, address: tuple[str, int], packet_loop: str) -> None:
        mp = max_payload(1400)
        self.ring = PacketRing(4096, mp)
        self.packetizer = H264Packetizer(self.ring, mp)
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(viewers)]
        self.senders = [
            RtpSender(
                f"v{i}",
                self.ring,
                Negotiated(102, 1000 + i, IDS, "0", "bench", 103, 2000 + i),
                session(),
                UdpOutput(sock, address),
                lambda: None,
                packet_loop=packet_loop,
            )
            for i, sock in enumerate(self.socks)
        ]
        self.fanout = FanOut("bench", "video")  # as the stream sends: C senders in one batch
        for sender in self.senders:
            self.fanout.add(sender)

    def run(self, aus: list[tuple[bytes, bool]], start: int) -> int:
        packets = 0
        for i, (au, key) in enumerate(aus):
            indices = self.packetizer.packetize(au, (start + i) * 3000, 0, key)
            self.fanout.send(indices)
            packets += len(indices)
        return packets * len(self.senders)

    def syscalls(self) -> tuple[int, int]:
        sends = [s.sends() for s in self.senders]
        return sum(c for c, _ in sends), sum(d for _, d in sends)

    def close(self) -> None:
        for s in self.senders:
            s.close()
        for sock in self.socks:
            sock.close()


class Aiortc:
    def __init__(self, viewers: int, address: tuple[str, int]) -> None:
        import av
        from aiortc.codecs.h264 import H264Encoder
        from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
        from aiortc.rtp import HeaderExtensionsMap, RtpPacket

        self.av, self.RtpPacket = av, RtpPacket
        self.hmap = HeaderExtensionsMap()
        self.hmap.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in IDS.items()
                ]
            )
        )
        self.address = address
        self.viewers = [
            (H264Encoder(), session(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM), [0])
            for _ in range(viewers)
        ]
        self.sends = 0

    def run(self, aus: list[tuple[bytes, bool]], start: int) -> int:
        from aiortc import clock

        av, RtpPacket = self.av, self.RtpPacket
        packets = 0
        for i, (au, _) in enumerate(aus):
            for encoder, srtp, sock, seq in self.viewers:
                packet = av.Packet(au)
                packet.pts, packet.time_base = (start + i) * 3000, Fraction(1, 90000)
                payloads, timestamp = encoder.pack(packet)
                for n, payload in enumerate(payloads):
                    rtp_packet = RtpPacket(
                        payload_type=102, sequence_number=seq[0], timestamp=timestamp
                    )
                    rtp_packet.ssrc = 1234
                    rtp_packet.payload = payload
                    rtp_packet.marker = 1 if n == len(payloads) - 1 else 0
                    rtp_packet.extensions.abs_send_time = (
                        clock.current_ntp_time() >> 14
                    ) & 0xFFFFFF
                    rtp_packet.extensions.mid = "0"
                    sock.sendto(srtp.protect(rtp_packet.serialize(self.hmap)), self.address)
                    self.sends += 1
                    seq[0] = (seq[0] + 1) & 0xFFFF
                    packets += 1
        return packets

    def syscalls(self) -> tuple[int, int]:
        return self.sends, self.sends

    def close(self) -> None:
        for _, _, sock, _ in self.viewers:
            sock.close()


def measure(
    kind: str, viewers: int, passes: int, address: tuple[str, int], workload: str
) -> dict[str, float]:
    aus = access_units(workload=workload)
    path: Any = Aiortc(viewers, address) if kind == "aiortc" else Fast(viewers, address, kind)
    try:
        path.run(aus[:30], 0)  # warm up: caches, first-packet work
        best = float("inf")
        allocs = alloc_bytes = packets_total = 0
        calls0, datagrams0 = path.syscalls()
        best_user = float("inf")
        for p in range(passes):
            (m0, b0), c0, u0 = mallocs(), time.thread_time(), user_time()
            packets = path.run(aus, 30 + p * len(aus))
            cpu, user = time.thread_time() - c0, user_time() - u0
            m1, b1 = mallocs()
            allocs, alloc_bytes = (m1 - m0, b1 - b0) if m0 >= 0 else (-1, -1)
            packets_total = packets
            if cpu / packets < best:
                best, best_user = cpu / packets, user / packets
        calls, datagrams = path.syscalls()
        return {
            "cpu_us_per_packet_viewer": best * 1e6,
            "user_us_per_packet_viewer": best_user * 1e6,
            "mallocs_per_packet_viewer": allocs / packets_total if allocs >= 0 else float("nan"),
            "malloc_bytes_per_packet_viewer": (
                alloc_bytes / packets_total if alloc_bytes >= 0 else float("nan")
            ),
            "syscalls_per_packet": (calls - calls0) / max(1, datagrams - datagrams0),
            "packets_per_pass": packets_total,
        }
    finally:
        path.close()


COPIES = {
    # by construction: our paths: packetizer's copy into the ring (shared by all viewers) + one copy
    # into the viewer's send buffer; SRTP in place. aiortc: bytes(packet), NAL split, FU-A slice,
    # header+payload concat, serialize, protect copy-in, protect copy-out (perf-anchors.md §1.3).
    "c": "1 + 1/N",
    "python": "1 + 1/N",
    "aiortc": "about 6",
}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--viewers", default="1,10,100")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="1080p")
    p.add_argument("--paths", default="c,python,aiortc")
    p.add_argument("--no-malloc-count", action="store_true")
    args = p.parse_args()
    if not args.no_malloc_count and "APPLIANCE_BENCH_MALLOC_COUNT" not in os.environ:
        subprocess.run(
            [
                "cc",
                "-O2",
                "-shared",
                "-fPIC",
                "-o",
                str(SHIM),
                str(HERE / "malloc_count.c"),
                "-ldl",
            ],
            check=True,
        )
        env = {
            **os.environ,
            "LD_PRELOAD": str(SHIM),
            "PYTHONMALLOC": "malloc",
            "APPLIANCE_BENCH_MALLOC_COUNT": "1",
        }
        os.execve(
            sys.executable, [sys.executable, "-m", "tests.perf.bench_sendpath", *sys.argv[1:]], env
        )
    access_units(workload=args.workload)  # build the workload before measuring
    proc, address = sink()
    try:
        print(
            f"{'path':7} {'viewers':>7} {'CPU µs/pkt/viewer':>18} {'of it user':>10} "
            f"{'mallocs/pkt/viewer':>19} "
            f"{'bytes/pkt/viewer':>17} {'send syscalls/pkt':>18} {'payload copies/pkt':>19}"
        )
        for n in (int(x) for x in args.viewers.split(",")):
            for kind in args.paths.split(","):
                r = measure(kind, n, args.passes, address, args.workload)
                allocs, nbytes = r["mallocs_per_packet_viewer"], r["malloc_bytes_per_packet_viewer"]
                allocs_text = "n/a" if allocs != allocs else f"{allocs:.2f}"  # NaN: no counter
                bytes_text = "n/a" if nbytes != nbytes else f"{nbytes:.0f}"
                print(
                    f"{kind:7} {n:7d} {r['cpu_us_per_packet_viewer']:18.2f} "
                    f"{r['user_us_per_packet_viewer']:10.2f} "
                    f"{allocs_text:>19} {bytes_text:>17} {r['syscalls_per_packet']:18.3f} "
                    f"{COPIES[kind]:>19}",
                    flush=True,
                )
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
