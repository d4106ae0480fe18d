"""The ICE servers a session uses, and the `Link` headers that hand them to its peer.

A TURN server configured with a `secret` (coturn's `use-auth-secret` with `static-auth-secret`,
the "REST API" scheme of draft-uberti-behave-turn-rest) gets a credential minted per session: the
username is `<expiry>:<stream>` (Unix time), the credential base64(HMAC-SHA1(secret, username)).
coturn checks both without asking the daemon, and refuses the credential once it has expired, so
a page can be handed one while the long-lived secret stays on the device. Only a peer allowed on
the stream gets them: the POST that creates a session, or an OPTIONS with the same right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from appliance.config import IceServer


def turn_credential(secret: str, stream: str, lifetime: int, now: float) -> tuple[str, str]:
    """(username, credential) for coturn's shared-secret scheme, valid until now + lifetime."""
    username = f"{int(now) + lifetime}:{stream}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def session_servers(
    servers: Sequence[IceServer], stream: str, now: float | None = None
) -> tuple[IceServer, ...]:
    """The configured servers with a fresh credential for each shared-secret one."""
    when = time.time() if now is None else now
    out = []
    for server in servers:
        if server.secret:
            username, credential = turn_credential(server.secret, stream, server.lifetime, when)
            server = IceServer(urls=server.urls, username=username, credential=credential)
        out.append(server)
    return tuple(out)


def links(servers: Sequence[IceServer]) -> list[str]:
    """`Link` header values for these servers (RFC 9725 section 4.6)."""
    out = []
    for server in servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username:
                link += (
                    f'; username="{server.username}"; credential="{server.credential}"'
                    '; credential-type="password"'
                )
            out.append(link)
    return out


def offered(links: Mapping[str, Any]) -> list[IceServer]:
    """The ICE servers a WHIP or WHEP endpoint lists: its `rel="ice-server"` links, as aiohttp
    parses a response's `Link` headers (`ClientResponse.links`)."""
    servers = []
    for link in links.getall("ice-server", []):  # type: ignore[attr-defined]
        url = unquote(str(link.get("url", "")))  # yarl quotes an IPv6 host's brackets
        if url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            servers.append(
                IceServer(
                    urls=(url,),
                    username=str(link.get("username", "")),
                    credential=str(link.get("credential", "")),
                )
            )
    return servers
