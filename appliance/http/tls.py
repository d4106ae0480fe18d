"""HTTPS: a configured certificate, or a self-signed one made on first start and kept.

Edge module (`cryptography`, which aiortc already needs). Browsers need HTTPS for microphone
talkback (getUserMedia), not for watching: plain HTTP stays the default. The self-signed
certificate names the host, `<host>.local` and localhost, lasts ten years, and lives in the state
directory (`$STATE_DIRECTORY`, which systemd's StateDirectory= sets, else /var/lib/appliance), so
that a browser's exception for it survives restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path

from appliance.config import HttpConfig, state_dir
from appliance.core.errors import ConfigError

logger = logging.getLogger(__name__)

CERT_NAME, KEY_NAME = "tls-cert.pem", "tls-key.pem"


def context(cfg: HttpConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP."""
    if cfg.tls_cert:
        cert, key = Path(cfg.tls_cert), Path(cfg.tls_key or cfg.tls_cert)
    elif cfg.tls_self_signed:
        directory = state_dir(cfg)
        cert, key = directory / CERT_NAME, directory / KEY_NAME
        if not (cert.exists() and key.exists()):
            make_self_signed(cert, key, socket.gethostname())
    else:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("http.tls_cert", f"cannot load {cert} / {key}: {e}") from None
    return ctx


def make_self_signed(cert: Path, key: Path, host: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = [
        x509.DNSName(host),
        x509.DNSName(f"{host}.local"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":")
    logger.info("made a self-signed certificate for %s in %s (SHA-256 %s)", host, cert, fingerprint)
