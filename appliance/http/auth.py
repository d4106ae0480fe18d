"""Bearer tokens (RFC 6750, as RFC 9725 §4.5 uses them for WHIP and WHEP): who may watch, publish
and administer which stream.

Core module (stdlib only). A token grants rights (`read`: WHEP; `publish`: WHIP; `admin`: the
status, control and metrics APIs, and everything else) on some streams (`*`: all). Tokens come from
the config or from systemd credentials (`[[auth.tokens]]` in `/etc/appliance/credentials/*.toml`).
A presented token is compared with every configured one in constant time, and all of them are
always compared, so neither the answer's timing nor its text tells how close a guess was.

With no token configured, nothing is enforced (a LAN appliance out of the box, and the daemon says
so in its log). With tokens, `public_read` still lets anyone watch without one.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import RIGHTS, AuthConfig

__all__ = ["RIGHTS", "Authorizer", "Decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int = 200  # 401: no or unknown token; 403: a known token without the right
    error: str = ""  # RFC 6750 error code for WWW-Authenticate
    who: str = ""  # the token's name, for logs (never the token)


class Authorizer:
    def __init__(self, config: AuthConfig) -> None:
        self._tokens = [(t.token.encode(), t) for t in config.tokens]
        self.public_read = config.public_read
        self.enforced = bool(self._tokens)

    def open_to(self, right: str) -> bool:
        """Whether `right` needs no token at all."""
        return not self.enforced or (right == "read" and self.public_read)

    def check(self, authorization: str | None, right: str, stream: str = "*") -> Decision:
        """May the bearer of `authorization` (the Authorization header) use `right` on `stream`?"""
        if self.open_to(right):
            return Decision(True)
        return self.check_token(_bearer(authorization), right, stream)

    def check_token(self, presented: str | None, right: str, stream: str = "*") -> Decision:
        """May the holder of token `presented` (None: none given) use `right` on `stream`? For
        protocols that carry the token otherwise than as a bearer (RTSP's Basic password)."""
        if self.open_to(right):
            return Decision(True)
        if presented is None:
            return Decision(False, 401, "")
        candidate = presented.encode("utf-8", "surrogateescape")  # any bytes the client sent
        return self._grant(lambda secret: hmac.compare_digest(candidate, secret), right, stream)

    def check_digest(
        self, response_for: Callable[[bytes], bytes], response: bytes, right: str, stream: str
    ) -> Decision:
        """HTTP Digest (RFC 7616), as RTSP uses it: `response_for(token)` is the response a
        client that knows `token` would have sent; `response` is what it sent."""
        if self.open_to(right):
            return Decision(True)
        return self._grant(
            lambda secret: hmac.compare_digest(response_for(secret), response), right, stream
        )

    def _grant(self, matches: Callable[[bytes], bool], right: str, stream: str) -> Decision:
        found = None
        for secret, token in self._tokens:  # every one, always: constant time in the match
            if matches(secret) and found is None:
                found = token
        if found is None:
            return Decision(False, 401, "invalid_token")
        if ("admin" in found.rights or right in found.rights) and (
            "*" in found.streams or stream in found.streams
        ):
            return Decision(True, who=found.name)
        return Decision(False, 403, "insufficient_scope", found.name)


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
