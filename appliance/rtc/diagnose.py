"""Why a WebRTC connection failed, in one line an owner can act on.

aiortc reports only "failed". What ICE and DTLS got to (`internals.handshake_facts`) says more:
that no connectivity check was ever answered (a firewall, or candidates the peer cannot reach),
that the peer refused our DTLS handshake or we refused its (and which alert, and its certificate),
that the handshake stalled (the peer never answered our ClientHello), that no SRTP profile was in
common, or that the peer's certificate did not match the fingerprint in its SDP. Each has a short
`code` for the metric, and a sentence for the log and the status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.rtc.internals import HandshakeFacts, handshake_facts

# What OpenSSL (as the daemon's DTLS stack) accepts in a peer's certificate.
ACCEPTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")


@dataclass(frozen=True)
class Failure:
    code: str  # a label for appliance_connection_failures_total
    text: str

    def __str__(self) -> str:
        return self.text


def why_failed(pc: Any, *, connected: bool) -> Failure:
    """Why `pc` failed or did not connect. Call it before closing `pc`: closing resets ICE.

    It reads aiortc's internals; whatever goes wrong there must not keep a session from closing,
    so an error reading them is the answer, not an exception."""
    try:
        facts = handshake_facts(pc)
    except Exception as e:  # a diagnosis, never a reason to stay open
        return Failure("unknown", f"connection failed (its state unreadable: {e!r})")
    return explain(facts, connected=connected)


def explain(facts: HandshakeFacts | None, *, connected: bool) -> Failure:
    if facts is None:
        return Failure("no_transport", "the connection never started (no transport)")
    if connected:
        if facts.ice_state in ("failed", "closed"):
            return Failure("ice_consent", "the peer stopped answering ICE consent checks")
        return Failure("dtls_closed", "the peer closed its DTLS session")
    trace = facts.trace
    if trace.alert_received:
        return Failure(
            "dtls_alert_received",
            f"DTLS: the peer refused our handshake ({trace.alert_received}, "
            f"at {trace.stage or 'its start'}; we were the DTLS {facts.dtls_role})",
        )
    if trace.alert_sent:
        why = f"DTLS: we refused the peer's handshake ({trace.alert_sent}"
        certificate = facts.peer_certificate
        kind, _, curve = (certificate or "").partition(" ")
        if kind == "ECDSA" and curve not in ACCEPTED_CURVES:
            return Failure(
                "dtls_certificate",
                f"{why}): its certificate's key is on {curve}, a curve our TLS library no longer "
                f"accepts; the peer needs a P-256, P-384 or P-521 (or RSA) certificate",
            )
        detail = f"; its certificate: {certificate}" if certificate else ""
        return Failure("dtls_alert_sent", f"{why}, at {trace.stage or 'its start'}{detail})")
    if facts.encrypted and not facts.srtp_profile:
        return Failure("dtls_srtp", "DTLS: no SRTP protection profile in common with the peer")
    if facts.encrypted and facts.dtls_state == "failed":
        return Failure(
            "dtls_fingerprint",
            "DTLS: the peer's certificate does not match the fingerprint in its SDP",
        )
    if facts.encrypted:
        return Failure(
            "late",
            "ICE and DTLS completed, but only after the connect timeout (webrtc.connect_timeout): "
            "a slow peer, or this machine too busy",
        )
    if facts.ice_state in ("completed", "connected") or facts.pairs_succeeded:
        stage = trace.stage or "its start"
        silent = stage.endswith("write client hello") or stage == "its start"
        return Failure(
            "dtls_timeout",
            f"DTLS: the handshake stalled at {stage} (we were the DTLS {facts.dtls_role})"
            + ("; the peer never answered" if silent and facts.dtls_role == "client" else ""),
        )
    return _ice(facts)


def _ice(facts: HandshakeFacts) -> Failure:
    remote = ", ".join(facts.remote_candidates[:4]) or "none"
    if not facts.remote_candidates and not facts.checked_by_peer:
        return Failure(
            "ice_no_candidates",
            "ICE: the peer gave no candidates and sent no connectivity check",
        )
    if not facts.checked_by_peer:
        return Failure(
            "ice_no_response",
            f"ICE: no answer to our connectivity checks on {facts.pairs} pairs (the peer's "
            f"candidates: {remote}), and no check from the peer",
        )
    return Failure(
        "ice_failed",
        f"ICE: the peer's checks reached us but none of ours to it succeeded ({facts.pairs} "
        f"pairs; its candidates: {remote})",
    )
