"""Self-signed P-256 certificates for tests: DTLS peers (FFmpeg's cert_file), certificates near
the end of their validity, and two OpenSSL DTLS connections handshaken in memory."""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL


def self_signed(name: str, valid_for: datetime.timedelta) -> tuple[Any, x509.Certificate]:
    """(private key, certificate) of a P-256 key, valid from a day ago for `valid_for` from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + valid_for)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def dtls_context(suite: str) -> SSL.Context:
    """An OpenSSL DTLS context with its own certificate, offering one cipher suite and SRTP."""
    key, certificate = self_signed("dtls test", datetime.timedelta(days=1))
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(certificate)
    ctx.use_privatekey(key)
    ctx.set_cipher_list(suite.encode())
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
    ctx.set_tlsext_use_srtp(b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")
    return ctx


def _pump(source: SSL.Connection, sink: SSL.Connection) -> None:
    while True:
        try:
            datagram = source.bio_read(65536)
        except SSL.WantReadError:
            return
        sink.bio_write(datagram)


def dtls_pair(suite: str) -> tuple[SSL.Connection, SSL.Connection]:
    """(client, server): two OpenSSL connections, their DTLS 1.2 handshake done in memory."""
    client = SSL.Connection(dtls_context(suite))
    server = SSL.Connection(dtls_context(suite))
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(10):
        for end, other in ((client, server), (server, client)):
            try:
                end.do_handshake()
            except SSL.WantReadError:
                pass
            _pump(end, other)
    done = b"SSL negotiation finished successfully"
    assert client.get_state_string() == server.get_state_string() == done
    assert client.get_cipher_name() == suite and client.get_protocol_version_name() == "DTLSv1.2"
    return client, server
