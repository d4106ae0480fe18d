"""A viewer's datagrams on the wire: the UDP socket ICE nominated, with GSO where the kernel has
it (one `sendmsg` for a run of equal-size packets, `UDP_SEGMENT`), one `sendto` each otherwise.
Edge module: sockets only.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from typing import Any, Protocol

logger = logging.getLogger(__name__)

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_NO_GSO = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)


class Output(Protocol):
    """Where a sender's datagrams go."""

    def send(self, data: memoryview, segment: int) -> int:
        """Send `data`, cut into datagrams of `segment` bytes (the last may be shorter; 0: one
        datagram). Returns 0, or the errno of why the kernel did not take it (EAGAIN: no room)."""
        ...

    def close(self) -> None: ...


_gso_missing_said = False


def gso_unavailable(reason: str) -> None:
    """Say once per process that the kernel sends no GSO batches here (it is the same for every
    viewer's socket): each viewer finds it out on its own, in Python or in the C loop."""
    global _gso_missing_said
    if not _gso_missing_said:
        _gso_missing_said = True
        logger.info("UDP GSO unavailable here (%s): one datagram at a time", reason)


class UdpOutput:
    """A connected viewer's UDP path: GSO `sendmsg` where the kernel has it, `sendto` otherwise."""

    def __init__(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        # Our own descriptor for the ICE socket aioice reads from: same socket, separately closed.
        self.sock = socket.socket(sock.family, socket.SOCK_DGRAM, 0, os.dup(sock.fileno()))
        self.sock.setblocking(False)
        self.address = address
        self._gso = True
        self._cmsg: dict[int, list[tuple[int, int, bytes]]] = {}
        self.calls = 0
        self.datagrams = 0

    def send(self, data: memoryview, segment: int) -> int:
        try:
            if segment and len(data) > segment:
                if self._gso:
                    try:
                        self._send_gso(data, segment)
                        return 0
                    except OSError as e:
                        if e.errno not in _NO_GSO:
                            raise
                        gso_unavailable(e.strerror or str(e))
                        self._gso = False
                for at in range(0, len(data), segment):
                    self.sock.sendto(data[at : at + segment], self.address)
                    self.calls += 1
                    self.datagrams += 1
                return 0
            self.sock.sendto(data, self.address)
            self.calls += 1
            self.datagrams += 1
            return 0
        except OSError as e:  # EAGAIN: socket buffer full; EPERM: a firewall; ENETUNREACH...
            return e.errno or errno.EIO

    def _send_gso(self, data: memoryview, segment: int) -> None:
        cmsg = self._cmsg.get(segment)
        if cmsg is None:
            cmsg = self._cmsg[segment] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment))]
        self.sock.sendmsg([data], cmsg, 0, self.address)
        self.calls += 1
        self.datagrams += -(-len(data) // segment)

    def close(self) -> None:
        self.sock.close()
