"""The addresses other machines can reach this one at, for the start-up log. Edge module.

A device's log must not point its owner at 127.0.0.1: it names `<hostname>.local` when Avahi
announces it (the image runs avahi-daemon), and each address of each interface, IPv4 and IPv6,
less loopback and link-local ones (an IPv6 link-local URL needs a zone, which browsers refuse).
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import ifaddr

AVAHI_PID = Path("/run/avahi-daemon/pid")


def addresses() -> list[str]:
    """Every address of this machine others can reach, IPv4 first."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ipaddress.ip_address(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
            if address.is_loopback or address.is_link_local or address.is_multicast:
                continue
            if address not in found:
                found.append(address)
    return [str(a) for a in sorted(found, key=lambda a: (a.version, int(a)))]


def reachable_urls(scheme: str, host: str, port: int) -> list[str]:
    """The URLs to print for a daemon listening on `host` ("" or a wildcard: every address)."""
    if host not in ("", "0.0.0.0", "::"):
        return [url(scheme, host, port)]
    names = [f"{socket.gethostname()}.local"] if AVAHI_PID.exists() else []
    every = [a for a in addresses() if host != "0.0.0.0" or ":" not in a]
    return [url(scheme, h, port) for h in names + every] or [url(scheme, "127.0.0.1", port)]


def url(scheme: str, host: str, port: int) -> str:
    """`scheme://host:port`, with an IPv6 address in brackets."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
