"""STUN for a connection that is up: the ICE checks on the pair already nominated (keepalives,
and consent freshness, RFC 7675), the peer's read and answered and ours written and their
answers read, by rote.

Core module: bytes in, bytes out, standard library only. References: RFC 8489 (STUN: the
header, MESSAGE-INTEGRITY, FINGERPRINT, XOR-MAPPED-ADDRESS), RFC 8445 7.3 (an ICE check: USERNAME,
PRIORITY, USE-CANDIDATE, ICE-CONTROLLING / ICE-CONTROLLED).

A browser checks every 2.5 s or so, and aioice's general parser and writer spent about 100 µs
of Python on each (parsing every attribute, `ipaddress`, the HMAC over a rebuilt message).
`check_to_answer` accepts only the plain case and says None for anything else: a wrong
credential, a role conflict, an attribute it does not know that the peer requires understood,
a bad fingerprint. The caller then hands the datagram to aioice, which answers or refuses it
as it always did. `binding_success` writes the answer byte for byte as aioice writes it.
Our own consent checks the same way: `binding_request` writes one as aioice does, and
`answer_is_authentic` reads its answer.
"""

from __future__ import annotations

import binascii
import hmac
import struct

COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101

USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

_FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_ATTRIBUTE = struct.Struct("!HH")
_U32 = struct.Struct("!I")
# Comprehension-required attributes (type below 0x8000, RFC 8489 14) an ICE check may carry.
_UNDERSTOOD = frozenset((USERNAME, PRIORITY, USE_CANDIDATE))


def check_to_answer(data: bytes, username: bytes, key: bytes, controlling: bool) -> bytes | None:
    """The transaction ID of `data` when it is a Binding request we may answer with a success
    and nothing else: the magic cookie, lengths that add up, USERNAME exactly `username`
    ("ours:theirs"), MESSAGE-INTEGRITY that verifies with `key` (our password), a FINGERPRINT
    (if any) that matches, no role conflict with `controlling` (RFC 8445 7.3.1.1), and no
    comprehension-required attribute but USERNAME, PRIORITY and USE-CANDIDATE. None otherwise."""
    conflict = ICE_CONTROLLING if controlling else ICE_CONTROLLED
    return _authenticated(data, BINDING_REQUEST, key, username, conflict)


def answer_is_authentic(data: bytes, transaction_id: bytes, key: bytes) -> bool:
    """Whether `data` is the Binding success response to our request `transaction_id`, with a
    MESSAGE-INTEGRITY that verifies with `key` (the peer's password) and a FINGERPRINT (if any)
    that matches (what RFC 8489 9.1.4 asks of a response before it counts)."""
    return _authenticated(data, BINDING_SUCCESS, key) == transaction_id


def _authenticated(
    data: bytes, kind: int, key: bytes, username: bytes | None = None, conflict: int = -1
) -> bytes | None:
    """The transaction ID of a message of type `kind` whose MESSAGE-INTEGRITY verifies with
    `key`, followed by nothing but a matching FINGERPRINT; with `username`, its one USERNAME
    must be that, before the integrity; the `conflict` attribute, or a comprehension-required
    one other than an ICE check's, before the integrity makes it None. None otherwise."""
    size = len(data)
    if size < 20:
        return None
    found, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if found != kind or cookie != COOKIE or length != size - 20 or length % 4:
        return None
    pos = 20
    seen_username = username is None
    integrity_at = -1
    while pos < size:
        if size - pos < 4:
            return None
        attribute, attr_len = _ATTRIBUTE.unpack_from(data, pos)
        value = pos + 4
        end = value + attr_len + (-attr_len % 4)
        if end > size:
            return None
        if integrity_at >= 0:  # after MESSAGE-INTEGRITY only a FINGERPRINT, and last
            if attribute != FINGERPRINT or attr_len != 4 or end != size:
                return None
            crc = binascii.crc32(_with_length(data, pos, pos - 20 + 8))
            if _U32.unpack_from(data, value)[0] != crc ^ _FINGERPRINT_XOR:
                return None
        elif attribute == MESSAGE_INTEGRITY:
            if attr_len != 20 or not seen_username:
                return None
            digest = hmac.digest(key, _with_length(data, pos, pos - 20 + 24), "sha1")
            if not hmac.compare_digest(digest, data[value : value + 20]):
                return None
            integrity_at = pos
        elif username is not None:  # a request: what an ICE check may hold
            if attribute == USERNAME:
                if seen_username or data[value : value + attr_len] != username:
                    return None
                seen_username = True
            elif attribute == conflict:
                return None  # both ends in one role: aioice resolves the conflict
            elif attribute < 0x8000 and attribute not in _UNDERSTOOD:
                return None
        pos = end
    return transaction_id if integrity_at >= 0 else None


def binding_request(
    transaction_id: bytes,
    username: bytes,
    priority: int,
    controlling: bool,
    tie_breaker: int,
    key: bytes,
) -> bytes:
    """An ICE check that nominates nothing (a consent check, RFC 7675), as aioice's
    Connection.build_request writes it: USERNAME ("theirs:ours"), PRIORITY, ICE-CONTROLLING or
    ICE-CONTROLLED with our tie-breaker, MESSAGE-INTEGRITY with `key` (the peer's password),
    FINGERPRINT."""
    padded = username + bytes(-len(username) % 4)
    role = ICE_CONTROLLING if controlling else ICE_CONTROLLED
    body = (
        _ATTRIBUTE.pack(USERNAME, len(username))
        + padded
        + struct.pack("!HHI", PRIORITY, 4, priority)
        + struct.pack("!HHQ", role, 8, tie_breaker)
    )
    return _signed(BINDING_REQUEST, transaction_id, body, key)


def binding_success(transaction_id: bytes, address: bytes, port: int, key: bytes) -> bytes:
    """A Binding success response: XOR-MAPPED-ADDRESS (`address`: 4 bytes IPv4 or 16 IPv6, as
    socket.inet_pton packs it), MESSAGE-INTEGRITY with `key`, FINGERPRINT."""
    n = len(address)
    pad = _U32.pack(COOKIE) + transaction_id  # what the address is XORed with (RFC 8489 14.2)
    xored = (int.from_bytes(address, "big") ^ int.from_bytes(pad[:n], "big")).to_bytes(n, "big")
    family = 1 if n == 4 else 2
    mapped = struct.pack("!HHBBH", XOR_MAPPED_ADDRESS, 4 + n, 0, family, port ^ 0x2112) + xored
    return _signed(BINDING_SUCCESS, transaction_id, mapped, key)


def _signed(kind: int, transaction_id: bytes, body: bytes, key: bytes) -> bytes:
    """A message of `body`'s attributes, then MESSAGE-INTEGRITY with `key` and FINGERPRINT."""
    head = _HEADER.pack(kind, len(body) + 24, COOKIE, transaction_id)
    body += _ATTRIBUTE.pack(MESSAGE_INTEGRITY, 20) + hmac.digest(key, head + body, "sha1")
    head = _HEADER.pack(kind, len(body) + 8, COOKIE, transaction_id)
    crc = binascii.crc32(head + body) ^ _FINGERPRINT_XOR
    return head + body + _ATTRIBUTE.pack(FINGERPRINT, 4) + _U32.pack(crc)


def _with_length(data: bytes, end: int, length: int) -> bytes:
    """`data[:end]` with the header's length field set to `length` (what MESSAGE-INTEGRITY and
    FINGERPRINT are computed over, RFC 8489 14.5 and 14.7)."""
    return data[:2] + length.to_bytes(2, "big") + data[4:end]
