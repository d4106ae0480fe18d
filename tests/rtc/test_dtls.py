"""A DTLS connection let go after its handshake (rtc/dtls.py), against OpenSSL's own DTLS on the
other end: real handshakes in memory (pyOpenSSL, as aiortc and every peer that uses OpenSSL), then
the records RetiredDtls reads and writes are what OpenSSL writes and reads."""

from __future__ import annotations

import os

import pytest
from OpenSSL import SSL

from appliance.rtc.dtls import RetiredDtls, prf_sha256, records
from tests.certs import dtls_pair

AEAD_SUITES = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]


def retired(ssl: SSL.Connection, server: bool) -> RetiredDtls:
    keys = RetiredDtls.retire(ssl, server=server, peer_key="ECDSA secp256r1")
    assert keys is not None
    return keys


def close_notify_of(ssl: SSL.Connection) -> bytes:
    ssl.shutdown()
    return ssl.bio_read(65536)


def test_prf_matches_the_tls_1_2_test_vector() -> None:
    """The P_SHA256 test vector published with TLS 1.2 (IETF TLS WG mailing list, 2008)."""
    secret = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
    seed = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
    out = prf_sha256(secret, b"test label", seed, 100)
    assert out.hex() == (
        "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e"
        "14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5"
        "a72e5a5110fff70187347b66"
    )


@pytest.mark.parametrize("suite", AEAD_SUITES)
@pytest.mark.parametrize("role", ["server", "client"])
def test_the_peers_close_notify_ends_it_and_ours_ends_the_peers(suite: str, role: str) -> None:
    client, server = dtls_pair(suite)
    ours, peer = (server, client) if role == "server" else (client, server)

    # The peer closes: its close_notify, sealed by OpenSSL, is read as the end.
    mine = retired(ours, server=role == "server")
    mine.bio_write(close_notify_of(peer))
    with pytest.raises(SSL.ZeroReturnError):
        mine.recv(1500)
    assert mine.closed_by_peer

    # We close: OpenSSL reads our close_notify as the end (a fresh pair: the first one is closed).
    client, server = dtls_pair(suite)
    ours, peer = (server, client) if role == "server" else (client, server)
    mine = retired(ours, server=role == "server")
    assert mine.shutdown()
    sent = mine.bio_read(1500)
    with pytest.raises(SSL.WantReadError):
        mine.bio_read(1500)  # one record, read once
    peer.bio_write(sent)
    with pytest.raises(SSL.ZeroReturnError):
        peer.recv(1500)
    assert mine.get_selected_srtp_profile() == ours.get_selected_srtp_profile()
    assert mine.DTLSv1_get_timeout() is None


@pytest.mark.parametrize("suite", AEAD_SUITES)
def test_nothing_but_the_peers_authenticated_alert_ends_it(suite: str) -> None:
    client, server = dtls_pair(suite)
    mine = retired(server, server=True)
    client.send(b"application data")  # a data channel's bytes: not ours to read, dropped
    application = client.bio_read(65536)
    genuine = close_notify_of(client)
    assert [r[0] for r in records(application)] == [23] and [r[0] for r in records(genuine)] == [21]
    forged = bytearray(genuine)
    forged[-1] ^= 1  # one bit of the tag
    stale = bytearray(genuine)
    stale[4] = 0  # the same bytes claimed for epoch 0 (cleartext alerts are never believed)
    cleartext = bytes.fromhex("15fefd0000000000000007000202") + b"\x00"  # fatal, epoch 0
    header_only = genuine[:13]
    too_long = genuine[:11] + b"\xff\xff" + genuine[13:]
    for datagram in (
        application, bytes(forged), bytes(stale), cleartext, header_only, too_long, b"",
        b"\x15", b"\x17\xfe\xfd", os.urandom(64), genuine[:-1],
    ):  # fmt: skip
        mine.bio_write(datagram)
        with pytest.raises(SSL.WantReadError):
            mine.recv(1500)
    assert not mine.closed_by_peer
    mine.bio_write(genuine)
    with pytest.raises(SSL.ZeroReturnError):
        mine.recv(1500)


def test_a_datagram_of_several_records_is_read_to_its_alert() -> None:
    client, server = dtls_pair(AEAD_SUITES[0])
    mine = retired(server, server=True)
    client.send(b"first")
    first = client.bio_read(65536)
    alert = close_notify_of(client)
    assert [r[0] for r in records(first + alert)] == [23, 21]
    mine.bio_write(first + alert)
    with pytest.raises(SSL.ZeroReturnError):
        mine.recv(1500)


def test_other_suites_keep_openssls_connection() -> None:
    client, server = dtls_pair("ECDHE-ECDSA-AES128-SHA")
    assert RetiredDtls.retire(server, server=True, peer_key=None) is None
    assert RetiredDtls.retire(client, server=False, peer_key=None) is None
