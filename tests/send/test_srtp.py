from __future__ import annotations

import os

import pytest
from pylibsrtp import Policy, Session

from appliance.send.srtp import TRAILER_ROOM, InPlaceProtector, SrtpError

PROFILES = [Policy.SRTP_PROFILE_AES128_CM_SHA1_80, Policy.SRTP_PROFILE_AEAD_AES_128_GCM]
KEY_LENGTH = {Policy.SRTP_PROFILE_AES128_CM_SHA1_80: 30, Policy.SRTP_PROFILE_AEAD_AES_128_GCM: 28}


def session(profile: int, key: bytes, direction: int) -> Session:
    return Session(Policy(key=key, ssrc_type=direction, srtp_profile=profile))


def rtp_packet(seq: int, size: int) -> bytes:
    header = (
        bytes([0x80, 96]) + seq.to_bytes(2, "big") + (1000).to_bytes(4, "big") + bytes([0, 0, 0, 7])
    )
    return header + os.urandom(size - 12)


@pytest.mark.parametrize("profile", PROFILES)
def test_in_place_equals_pylibsrtp_and_decrypts(profile: int) -> None:
    key = os.urandom(KEY_LENGTH[profile])
    reference = session(profile, key, Policy.SSRC_ANY_OUTBOUND)
    ours = session(profile, key, Policy.SSRC_ANY_OUTBOUND)
    receiver = session(profile, key, Policy.SSRC_ANY_INBOUND)
    stride = 1200 + TRAILER_ROOM
    buffer = bytearray(stride * 4)
    protector = InPlaceProtector(ours, buffer, stride, 4)
    for seq, size in enumerate([1200, 1200, 1200, 333]):
        packet = rtp_packet(seq, size)
        at = seq * stride
        buffer[at : at + size] = packet
        n = protector.protect(seq, size)
        assert bytes(buffer[at : at + n]) == reference.protect(packet)
        assert receiver.unprotect(bytes(buffer[at : at + n])) == packet


def test_failure_is_reported_not_ignored() -> None:
    key = os.urandom(30)
    protector = InPlaceProtector(
        session(Policy.SRTP_PROFILE_AES128_CM_SHA1_80, key, Policy.SSRC_ANY_OUTBOUND),
        bytearray(64),
        32,
        2,
    )
    with pytest.raises(SrtpError, match="srtp_protect failed with libsrtp status"):
        protector.protect(0, 4)  # shorter than an RTP header


def test_positions_must_fit_the_buffer() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        InPlaceProtector(Session(), bytearray(100), 60, 2)
