"""The packet loop in C (packetloop.c), loaded with cffi in ABI mode.

`lib/packetloop-<machine>.so` is built by the package's build hook (image/build_native.py) for every
architecture a compiler is found for, and ships inside the package (the .deb carries x86_64 and
aarch64). ABI mode needs no Python headers and no per-version build: one shared object per
architecture serves CPython 3.10 and 3.11 alike. Where it is missing (a developer's machine
without a C compiler, a 32-bit Pi OS) or fails to load, `RtpSender` uses the Python path, which
is the reference the C loop is tested against, and the daemon says so in one log line.

The C declarations come from `_packetloop_ffi.py`, which the build hook writes from packetloop.h
(cffi's out-of-line ABI mode: no C parser at start-up); in a source tree that was not built, or
with a cffi that cannot read it, packetloop.h is parsed here instead.

`APPLIANCE_PACKET_LOOP=python` chooses the Python path even where the C loop is there (benchmarks
compare the two).

Edge module: loads native code, and reads pylibsrtp's private `Session._srtp` and its binding's
`srtp_protect` and `srtp_protect_rtcp` (see send/srtp.py), so that both paths protect with the
same libsrtp.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import platform
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pylibsrtp import Session
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from appliance.core import rtp
from appliance.core.ring import PacketRing

logger = logging.getLogger(__name__)

# The struct and the function, as packetloop.c itself includes them.
HEADER = Path(__file__).with_name("packetloop.h")


def _declarations() -> tuple[Any, str]:
    """(cffi's FFI of packetloop.h, where it came from: "built" or "parsed")."""
    try:
        return importlib.import_module("appliance.send._packetloop_ffi").ffi, "built"
    except Exception:  # not built here (a source tree), or written by a cffi this one cannot read
        from cffi import FFI

        parsed = FFI()
        parsed.cdef(HEADER.read_text())
        return parsed, "parsed"


_ffi, DECLARATIONS = _declarations()
HEADER_MAX = len(_ffi.new("struct pl_viewer *").header)  # the longest RTP header it takes


def library_path(machine: str | None = None) -> Path:
    return Path(__file__).with_name("lib") / f"packetloop-{machine or platform.machine()}.so"


def _load() -> tuple[Any, str | None]:
    """(the library, None), or (None, why the Python path serves)."""
    if os.environ.get("APPLIANCE_PACKET_LOOP", "").lower() == "python":
        return None, "APPLIANCE_PACKET_LOOP=python"
    return load(library_path())


def load(path: Path) -> tuple[Any, str | None]:
    """The C loop in `path`, as `_load`."""
    if not path.exists():
        return None, f"{path.name} was not built (no C compiler when the package was built?)"
    try:
        lib = _ffi.dlopen(str(path))
    except OSError as e:
        return None, f"{path.name} does not load: {e}"
    if lib.pl_layout() != _ffi.sizeof("struct pl_viewer"):
        return None, f"{path.name} was built from another packetloop.h (reinstall to rebuild it)"
    return lib, None


LIB, WHY_NOT = _load()


def _libsrtp(name: str) -> Any:
    """A libsrtp function, as the pointer pylibsrtp's binding holds."""
    return _ffi.cast(
        "pl_protect_fn", int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, name)))
    )


_PROTECT, _PROTECT_RTCP = (
    (_libsrtp("srtp_protect"), _libsrtp("srtp_protect_rtcp")) if LIB is not None else (None, None)
)
REPORT_INTERVAL_S = 1.0  # RTCP sender reports, every viewer of a fan-out at once
_said = False


def available() -> bool:
    """Whether the C loop serves; the first call logs which path does."""
    global _said
    if not _said:
        _said = True
        if LIB is None:
            logger.info("the C packet loop is not here (%s): the Python send path serves", WHY_NOT)
        else:
            logger.info("the C packet loop serves (%s)", library_path().name)
    return LIB is not None


def sockaddr(family: int, address: Any) -> bytes:
    """The C `struct sockaddr_in`, `sockaddr_in6` or `sockaddr_un` of a socket module address."""
    if family == socket.AF_UNIX:  # a local viewer (tests: a peer that stops reading)
        path = os.fsencode(address)
        if len(path) >= 108:
            raise ValueError(f"socket path too long: {address!r}")
        return struct.pack("=H", socket.AF_UNIX) + path + b"\0"
    host, port = address[0], address[1]
    if family == socket.AF_INET:
        return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton(host))
    scope = address[3] if len(address) > 3 else 0
    ip = ipaddress.IPv6Address(host.split("%")[0])
    if not scope and "%" in host:
        scope = socket.if_nametoindex(host.split("%", 1)[1])
    flowinfo = address[2] if len(address) > 2 else 0
    return struct.pack(
        "=HHI16sI", socket.AF_INET6, socket.htons(port), socket.htonl(flowinfo), ip.packed, scope
    )


class NativeLoop:
    """One viewer's state for the C loop: its socket, address, header template, SRTP session,
    the ring's arrays and the send buffer, set once; `send()` per access unit."""

    def __init__(
        self,
        session: Session,
        sock: socket.socket,
        address: Any,
        layout: rtp.HeaderLayout,
        ring: PacketRing,
        buffer: bytearray,
        seq: int,
        ts_offset: int,
        clock_rate: int,
        sdes: bytes,
    ) -> None:
        if LIB is None:
            raise RuntimeError(f"no C packet loop: {WHY_NOT}")
        if layout.size > HEADER_MAX:
            raise ValueError(f"a {layout.size}-byte RTP header is longer than the C loop takes")
        v = self.v = _ffi.new("struct pl_viewer *")
        # What the struct points into stays referenced here for as long as it lives.
        self._keep = (
            session,
            sock,
            ring,
            buffer,
            _ffi.from_buffer(buffer),
            _ffi.from_buffer(ring.buffer),
            _ffi.from_buffer("uint32_t[]", ring.length),
            _ffi.from_buffer("int64_t[]", ring.timestamp),
            _ffi.from_buffer("int64_t[]", ring.capture_ns),
            _ffi.from_buffer("uint8_t[]", ring.flags),
        )
        _, _, _, _, v.buf, v.ring, v.lengths, v.timestamps, v.capture_ns, v.flags = self._keep
        v.srtp = _ffi.cast("void *", int(srtp_ffi.cast("uintptr_t", session._srtp[0])))
        v.protect = _PROTECT
        v.fd = sock.fileno()
        v.gso = 1
        addr = sockaddr(sock.family, address)
        _ffi.memmove(v.addr, addr, len(addr))
        v.addrlen = len(addr)
        v.buf_size = len(buffer)
        _ffi.memmove(v.header, layout.template, layout.size)
        v.header_len = layout.size
        v.abs_send_at = layout.abs_send_time_at
        v.abs_capture_at = layout.abs_capture_time_at
        v.slot_size = ring.slot_size
        v.mask = ring.capacity - 1
        v.ts_offset = ts_offset & 0xFFFFFFFF
        v.seq = seq & 0xFFFF
        v.last_capture_ns = -1
        v.waiting = 1
        v.protect_rtcp = _PROTECT_RTCP
        v.clock_rate = clock_rate
        if len(sdes) > len(v.sdes):
            raise ValueError(f"a {len(sdes)}-byte SDES is longer than the C loop takes")
        _ffi.memmove(v.sdes, sdes, len(sdes))
        v.sdes_len = len(sdes)
        self.ring = ring
        self._one = _ffi.new("struct pl_viewer *[1]", [v])
        self._attention = _ffi.new("int[1]")

    def send(self, first: int, count: int) -> bool:
        """One access unit to this viewer alone; whether the sender must look at what happened
        (see NativeBatch for every viewer at once)."""
        assert LIB is not None
        return bool(LIB.pl_send_all(self._one, 1, first, count, self._attention))

    def close(self) -> None:
        self.v.closed = 1


class Attended(Protocol):
    native: NativeLoop | None

    def attend(self) -> None: ...


class NativeBatch:
    """Every sender of one fan-out on the C loop, sent for in one C call per access unit
    (core/fanout.py's Batch): the per-viewer cost of an access unit is then the C loop's alone,
    with no Python call per viewer. The senders whose access unit needs more (the first frame's
    time, refused sends, a keyframe to ask for, libsrtp failing) are listed by the C call and
    handled by their own `attend()`."""

    def __init__(self) -> None:
        self._senders: list[Attended] = []
        self._array: Any = None
        self._attention: Any = None
        self._reports: asyncio.TimerHandle | None = None

    def _rebuild(self) -> None:
        loops = [s.native.v for s in self._senders if s.native is not None]
        self._array = _ffi.new("struct pl_viewer *[]", loops)
        self._attention = _ffi.new("int[]", max(1, len(loops)))

    def add(self, sender: Attended) -> None:
        if sender.native is None:
            raise ValueError("only a sender on the C loop joins a NativeBatch")
        self._senders.append(sender)
        self._rebuild()
        if self._reports is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # driven by hand (tests): reports only when asked, `report()`
                return
            self._reports = loop.call_later(REPORT_INTERVAL_S, self._tick)

    def remove(self, sender: Attended) -> None:
        if sender in self._senders:
            self._senders.remove(sender)
            self._rebuild()
        if not self._senders and self._reports is not None:
            self._reports.cancel()
            self._reports = None

    def _tick(self) -> None:
        self._reports = asyncio.get_running_loop().call_later(REPORT_INTERVAL_S, self._tick)
        self.report()

    def report(self) -> int:
        """An RTCP sender report to every viewer that has had a packet: one stream-wide tick
        instead of a timer per viewer (rtc/internals.py's run_rtcp leaves C-loop viewers to it).
        Returns the reports sent."""
        senders = self._senders
        if not senders or LIB is None:
            return 0
        first = senders[0].native
        assert first is not None
        head = first.ring.head
        if not head:
            return 0
        return int(LIB.pl_report_all(self._array, len(senders), head - 1))

    def __len__(self) -> int:
        return len(self._senders)

    def __iter__(self) -> Iterator[Attended]:
        return iter(self._senders)

    def send_range(self, indices: range) -> list[tuple[Attended, Exception]]:
        """The access unit at `indices` to every sender; those whose `attend()` failed."""
        senders = self._senders
        if not senders or not indices or LIB is None:
            return []
        attention = self._attention
        needs = LIB.pl_send_all(self._array, len(senders), indices[0], len(indices), attention)
        failed: list[tuple[Attended, Exception]] = []
        for i in range(needs):
            sender = senders[attention[i]]
            try:
                sender.attend()
            except Exception as e:  # one viewer's trouble is that viewer's alone
                failed.append((sender, e))
        return failed
