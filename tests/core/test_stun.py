"""ICE checks answered by rote (core/stun.py), against aioice's STUN (an independent
implementation): our answer is aioice's answer byte for byte, and we accept a check only where
aioice's parser and checks would."""

from __future__ import annotations

import os
import random
import socket

import pytest
from aioice import stun

from appliance.core import stun as core_stun

KEY = b"our-password-22-chars!"
USERNAME = b"ours:theirs"


def check(
    *,
    username: str = "ours:theirs",
    key: bytes = KEY,
    role: str = "ICE-CONTROLLING",
    extra: dict[str, object] | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A Binding request as aioice's Connection.build_request writes one, signed with `key`."""
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1853824767
    message.attributes[role] = 0x0123_4567_89AB_CDEF
    message.attributes.update(extra or {})
    message.add_message_integrity(key)
    if not fingerprint:
        message.attributes.pop("FINGERPRINT")
    return bytes(message)


def verified(data: bytes, key: bytes) -> stun.Message:
    """aioice's parse with MESSAGE-INTEGRITY checked, or ValueError/AssertionError (aioice 0.10
    checks it in parse_message, later ones in Message.check_message_integrity)."""
    message = stun.parse_message(data)
    check = getattr(message, "check_message_integrity", None)
    if check is None:
        return stun.parse_message(data, integrity_key=key)  # type: ignore[call-arg]
    assert check(key)
    return message


@pytest.mark.parametrize(
    ("host", "family"), [("10.99.0.2", socket.AF_INET), ("fd00::2", socket.AF_INET6)]
)
def test_the_answer_is_aioices_byte_for_byte(host: str, family: int) -> None:
    transaction = os.urandom(12)
    theirs = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=transaction,
    )
    theirs.attributes["XOR-MAPPED-ADDRESS"] = (host, 50123)
    theirs.add_message_integrity(KEY)
    ours = core_stun.binding_success(transaction, socket.inet_pton(family, host), 50123, KEY)
    assert ours == bytes(theirs)
    parsed = verified(ours, KEY)  # its fingerprint too
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == (host, 50123)


def test_a_plain_check_is_answered() -> None:
    data = check()
    assert core_stun.check_to_answer(data, USERNAME, KEY, controlling=False) == data[8:20]
    # USE-CANDIDATE, no FINGERPRINT, an optional attribute it does not know (SOFTWARE): still.
    for data in (
        check(extra={"USE-CANDIDATE": None}),
        check(fingerprint=False),
        check(extra={"SOFTWARE": "a browser"}),
    ):
        assert core_stun.check_to_answer(data, USERNAME, KEY, controlling=False) == data[8:20]


@pytest.mark.parametrize(
    ("data", "controlling"),
    [
        (check(key=b"another-password-here!"), False),  # aioice answers 401
        (check(username="ours:someone-else"), False),
        (check(username="ours:theirs", role="ICE-CONTROLLED"), False),  # a role conflict: 487
        (check(), True),  # the same conflict, the other way round
        (check(extra={"CHANGE-REQUEST": 0}), False),  # comprehension-required, not an ICE one
        (check()[:-8] + check()[-8:-1] + b"\x00", False),  # a fingerprint that does not match
        (check(fingerprint=False)[:-24], False),  # no MESSAGE-INTEGRITY
        (check()[:-3], False),  # truncated
        (b"\x01\x01" + check()[2:], False),  # a response, not a request
    ],
)
def test_anything_else_is_left_to_aioice(data: bytes, controlling: bool) -> None:
    assert core_stun.check_to_answer(data, USERNAME, KEY, controlling) is None


def test_it_accepts_only_what_aioice_accepts_on_mutated_checks() -> None:
    """20,000 mutations of real checks: check_to_answer never raises; every byte of a check is
    covered by its MESSAGE-INTEGRITY or FINGERPRINT, so it accepts only the mutations that
    changed nothing (a byte set to its own value), and aioice's parser and checks accept those
    too."""
    rng = random.Random(8489)
    seeds = [check(), check(extra={"USE-CANDIDATE": None}), check(fingerprint=False)]
    accepted = 0
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            op = rng.randrange(3)
            if op == 0:
                data[at] = rng.randrange(256)
            elif op == 1:
                del data[at : at + rng.randint(1, 8)]
            else:
                data[at:at] = data[at : at + rng.choice((4, 8, 12))]
        transaction = core_stun.check_to_answer(bytes(data), USERNAME, KEY, controlling=False)
        if transaction is None:
            continue
        accepted += 1
        assert bytes(data) in seeds, bytes(data).hex()
        message = verified(bytes(data), KEY)
        assert message.transaction_id == transaction
        assert message.message_method == stun.Method.BINDING
        assert message.message_class == stun.Class.REQUEST
        assert message.attributes["USERNAME"] == USERNAME.decode()
        assert "ICE-CONTROLLED" not in message.attributes
    assert accepted > 0


@pytest.mark.parametrize("controlling", [True, False])
def test_our_consent_check_is_aioices_byte_for_byte(controlling: bool) -> None:
    """What aioice's Connection.build_request(pair, nominate=False) and its signing write."""
    transaction = os.urandom(12)
    theirs = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.REQUEST,
        transaction_id=transaction,
    )
    theirs.attributes["USERNAME"] = "theirs:ours"
    theirs.attributes["PRIORITY"] = 1853824767
    theirs.attributes["ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"] = 2**64 - 3
    theirs.add_message_integrity(KEY)
    ours = core_stun.binding_request(
        transaction, b"theirs:ours", 1853824767, controlling, 2**64 - 3, KEY
    )
    assert ours == bytes(theirs)


def test_an_answer_counts_only_when_it_is_ours_and_signed() -> None:
    transaction = os.urandom(12)
    answer = core_stun.binding_success(
        transaction, socket.inet_pton(socket.AF_INET, "10.0.0.9"), 9, KEY
    )
    assert core_stun.answer_is_authentic(answer, transaction, KEY)
    assert not core_stun.answer_is_authentic(answer, os.urandom(12), KEY)  # another check's
    assert not core_stun.answer_is_authentic(answer, transaction, b"another-key")
    tampered = bytearray(answer)
    tampered[27] ^= 1  # the mapped address
    assert not core_stun.answer_is_authentic(bytes(tampered), transaction, KEY)
    error = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.ERROR,
        transaction_id=transaction,
    )
    error.attributes["ERROR-CODE"] = (487, "Role Conflict")
    error.add_message_integrity(KEY)
    assert not core_stun.answer_is_authentic(bytes(error), transaction, KEY)  # not a success
    unsigned = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=transaction,
    )
    unsigned.attributes["XOR-MAPPED-ADDRESS"] = ("10.0.0.9", 9)
    assert not core_stun.answer_is_authentic(bytes(unsigned), transaction, KEY)
