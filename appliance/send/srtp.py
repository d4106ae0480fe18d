"""SRTP protection in place, in a viewer's send buffer, through the libsrtp binding pylibsrtp ships.

`pylibsrtp.Session.protect()` copies the packet into a buffer of its own and returns a new `bytes`:
two copies and two allocations per packet per viewer. libsrtp itself protects in place, provided
there is room after the packet for the authentication tag. Here each viewer's send buffer is
exported to C once, with a pointer per packet position computed once, so that protecting a packet
allocates nothing.

Private pylibsrtp symbols used (pylibsrtp is pinned through aiortc; tests/send/test_srtp.py checks them
and checks our output against `Session.protect` byte for byte):
- `Session._srtp`: the `srtp_t *` of the session aiortc keyed after the DTLS handshake;
- `pylibsrtp._binding.ffi` / `.lib.srtp_protect`.
"""

from __future__ import annotations

from typing import Any

from pylibsrtp import Session
from pylibsrtp._binding import ffi, lib

# Room needed after each packet: the longest tag of the profiles WebRTC negotiates
# (AEAD_AES_128_GCM: 16 bytes; AES_CM_128_HMAC_SHA1_80: 10), no MKI.
TRAILER_ROOM = 16


class SrtpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"srtp_protect failed with libsrtp status {status}")
        self.status = status


class InPlaceProtector:
    """Protects packets at fixed positions (`index * stride`) of one buffer, in place."""

    def __init__(self, session: Session, buffer: bytearray, stride: int, count: int) -> None:
        self._session = session  # keeps the srtp_t alive
        self._ctx = session._srtp[0]
        self._buffer = buffer
        self._base: Any = ffi.from_buffer(buffer)
        self._len: Any = ffi.new("int *")
        self._at: list[Any] = []
        self.set_stride(stride, count)

    def set_stride(self, stride: int, count: int) -> None:
        """Place packet `i` at byte `i * stride` from now on."""
        if stride * count > len(self._buffer):
            raise ValueError(
                f"{count} packets of {stride} bytes do not fit a {len(self._buffer)}-byte buffer"
            )
        self._at = [self._base + i * stride for i in range(count)]

    def protect(self, index: int, length: int) -> int:
        """Protect the packet of `length` bytes at position `index`; returns its protected length."""
        self._len[0] = length
        status = lib.srtp_protect(self._ctx, self._at[index], self._len)
        if status:
            raise SrtpError(status)
        return int(self._len[0])
