"""A DTLS 1.2 connection after its handshake, without OpenSSL's connection object.

In WebRTC, DTLS carries the handshake that keys SRTP and, after it, nothing but the closing alert
(media is SRTP beside it; a viewer has no data channel). Yet a handshaken DTLS connection of
OpenSSL's holds about 80 KB (measured in the daemon, with the OpenSSL 4 that cryptography's
wheel carries, its buffers released while idle): half of what a viewer cost. `RetiredDtls` takes
its place once the peer has proved it holds the keys too (rtc/internals.retire_dtls, at the
peer's first SRTCP packet that authenticates). It keeps the record keys (about 4 KB with their
two AEAD contexts, measured) and does the one job left:

- a datagram from the peer: each DTLS record in it (RFC 6347 4.1) is opened with the peer's
  write key; an authenticated alert that is close_notify or fatal ends the connection
  (`SSL.ZeroReturnError`, as OpenSSL's `recv` would). Anything else, authenticated or not
  (a stranger's bytes, a stale retransmission, a tampered alert) is dropped: `SSL.WantReadError`.
- our own close: `shutdown()` seals a close_notify with our write key, and `bio_read()` hands it
  to the caller to send, so the peer learns at once that we closed.

It answers the pyOpenSSL `Connection` calls aiortc's RTCDtlsTransport makes after the handshake
(`bio_write`, `recv`, `bio_read`, `shutdown`, `DTLSv1_get_timeout`) and what rtc.diagnose reads
(`get_selected_srtp_profile`, the peer's key). Only the AEAD suites we offer are sealed here
(RFC 5288 AES-GCM, RFC 7905 ChaCha20-Poly1305, both with TLS 1.2's SHA-256 PRF, RFC 5246 5, 6.3);
a connection on another suite or version keeps OpenSSL's object (`retire` returns None).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from OpenSSL import SSL

VERSION = 0xFEFD  # DTLS 1.2 on the wire
HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, sequence (48 bits: 16 + 32), length
AAD = struct.Struct("!HHIBHH")  # epoch, sequence, type, version, length
ALERT = 21
CLOSE_NOTIFY = 0
FATAL = 2
# Our close_notify's record number: above any OpenSSL used for the handshake at epoch 1 (a few),
# so that the nonce is never reused and the peer's replay window lets it through.
CLOSE_SEQUENCE = 1 << 32


@dataclass(frozen=True)
class Suite:
    key_length: int
    iv_length: int  # the implicit part: GCM's 4-byte salt, ChaCha20's 12-byte IV
    explicit_nonce: int  # bytes of nonce carried in each record (GCM: 8; ChaCha20: 0)
    aead: type[AESGCM] | type[ChaCha20Poly1305]


SUITES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": Suite(16, 4, 8, AESGCM),
    "ECDHE-RSA-AES128-GCM-SHA256": Suite(16, 4, 8, AESGCM),
    "ECDHE-ECDSA-CHACHA20-POLY1305": Suite(32, 12, 0, ChaCha20Poly1305),
    "ECDHE-RSA-CHACHA20-POLY1305": Suite(32, 12, 0, ChaCha20Poly1305),
}
TAG = 16


def prf_sha256(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """TLS 1.2's PRF (RFC 5246 5): P_SHA256(secret, label + seed), `length` bytes."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + seed, hashlib.sha256).digest()
    return out[:length]


class RecordKeys:
    """One direction's AEAD key and implicit IV for DTLS 1.2 records of epoch 1."""

    def __init__(self, suite: Suite, key: bytes, iv: bytes) -> None:
        self._suite = suite
        self._aead = suite.aead(key)
        self._iv = iv

    def _nonce(self, epoch: int, sequence: int, explicit: bytes) -> bytes:
        if self._suite.explicit_nonce:  # RFC 5288 3: salt + the record's explicit nonce
            return self._iv + explicit
        number = epoch << 48 | sequence  # RFC 7905 2: the IV xor the 64-bit record number
        return (int.from_bytes(self._iv, "big") ^ number).to_bytes(12, "big")

    @staticmethod
    def _aad(content: int, epoch: int, sequence: int, length: int) -> bytes:
        """RFC 5246 6.2.3.3, with DTLS's epoch and sequence as the record number (RFC 6347
        4.1.2.1): number, type, version, the plaintext's length."""
        return AAD.pack(epoch, sequence >> 32, sequence & 0xFFFFFFFF, content, VERSION, length)

    def seal(self, content: int, epoch: int, sequence: int, plaintext: bytes) -> bytes:
        """One record, header included."""
        explicit = struct.pack("!HHI", epoch, sequence >> 32, sequence & 0xFFFFFFFF)
        explicit = explicit[: self._suite.explicit_nonce]
        nonce = self._nonce(epoch, sequence, explicit)
        sealed = self._aead.encrypt(
            nonce, plaintext, self._aad(content, epoch, sequence, len(plaintext))
        )
        fragment = explicit + sealed
        header = HEADER.pack(
            content, VERSION, epoch, sequence >> 32, sequence & 0xFFFFFFFF, len(fragment)
        )
        return header + fragment

    def open(self, content: int, epoch: int, sequence: int, fragment: bytes) -> bytes | None:
        """The plaintext of a record's fragment, or None when it does not authenticate."""
        explicit = fragment[: self._suite.explicit_nonce]
        sealed = fragment[self._suite.explicit_nonce :]
        if len(sealed) < TAG:
            return None
        aad = self._aad(content, epoch, sequence, len(sealed) - TAG)
        try:
            return self._aead.decrypt(self._nonce(epoch, sequence, explicit), sealed, aad)
        except InvalidTag:
            return None


def records(datagram: bytes) -> list[tuple[int, int, int, bytes]]:
    """The DTLS 1.2 records of a datagram, as (type, epoch, sequence, fragment); parsing stops
    at the first record that is not whole (RFC 6347 4.1: a datagram holds whole records)."""
    out = []
    at = 0
    while at + 13 <= len(datagram):
        content, version, epoch, high, low, length = HEADER.unpack_from(datagram, at)
        at += 13
        if version != VERSION or at + length > len(datagram):
            break
        out.append((content, epoch, high << 32 | low, datagram[at : at + length]))
        at += length
    return out


class RetiredDtls:
    """In place of a handshaken `OpenSSL.SSL.Connection` (see the module docstring)."""

    def __init__(
        self,
        peer: RecordKeys,
        ours: RecordKeys,
        srtp_profile: bytes,
        peer_key: str | None,
    ) -> None:
        self._peer = peer
        self._ours = ours
        self._srtp_profile = srtp_profile
        self.peer_key = peer_key  # "ECDSA secp256r1": what rtc.diagnose reports
        self._incoming = b""
        self._outgoing = b""
        self._sequence = CLOSE_SEQUENCE
        self.closed_by_peer = False

    @classmethod
    def retire(cls, ssl: SSL.Connection, server: bool, peer_key: str | None) -> RetiredDtls | None:
        """The record keys of `ssl`, a handshaken connection (`server`: our role), or None when
        its version or suite is not one sealed here."""
        suite = SUITES.get(ssl.get_cipher_name() or "")
        if suite is None or ssl.get_protocol_version_name() != "DTLSv1.2":
            return None
        master = ssl.master_key()
        client_random, server_random = ssl.client_random(), ssl.server_random()
        if not master or not client_random or not server_random:
            return None
        k, v = suite.key_length, suite.iv_length
        block = prf_sha256(master, b"key expansion", server_random + client_random, 2 * (k + v))
        client = RecordKeys(suite, block[:k], block[2 * k : 2 * k + v])
        server_keys = RecordKeys(suite, block[k : 2 * k], block[2 * k + v : 2 * k + 2 * v])
        peer, ours = (client, server_keys) if server else (server_keys, client)
        return cls(peer, ours, ssl.get_selected_srtp_profile(), peer_key)

    # What aiortc's RTCDtlsTransport calls after its handshake.

    def DTLSv1_get_timeout(self) -> None:
        """None: no flight is ever retransmitted, both ends hold their keys."""
        return None

    def bio_write(self, data: bytes) -> int:
        self._incoming = bytes(data)
        return len(data)

    def recv(self, bufsiz: int) -> bytes:
        datagram, self._incoming = self._incoming, b""
        for content, epoch, sequence, fragment in records(datagram):
            if content != ALERT or epoch != 1:
                continue
            alert = self._peer.open(content, epoch, sequence, fragment)
            if alert is None or len(alert) != 2:
                continue
            if alert[1] == CLOSE_NOTIFY or alert[0] == FATAL:
                self.closed_by_peer = True
                raise SSL.ZeroReturnError()
        raise SSL.WantReadError()

    def shutdown(self) -> bool:
        alert = bytes((1, CLOSE_NOTIFY))  # warning level, close_notify (RFC 5246 7.2.1)
        self._outgoing = self._ours.seal(ALERT, 1, self._sequence, alert)
        self._sequence += 1
        return True

    def bio_read(self, bufsiz: int) -> bytes:
        if not self._outgoing:
            raise SSL.WantReadError()
        data, self._outgoing = self._outgoing[:bufsiz], self._outgoing[bufsiz:]
        return data

    # What rtc.diagnose reads.

    def get_selected_srtp_profile(self) -> bytes:
        return self._srtp_profile
