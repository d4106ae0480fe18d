"""Two homes on the internet, each behind a NAT, and a TURN server between them: the path a phone
on 4G takes to a camera at home.

    with Internet() as net:                        # namespaces, links, NATs, the port forward
        with net.coturn(tmp_path, secret="s") as turn_url:   # Debian's coturn on the internet
            daemon = net.home.popen([...])          # the appliance, behind the home router
            net.mobile.popen([...])                 # a viewer, behind the mobile router

The internet is this test session's own namespace (tests/netns.py). Four namespaces are made in
it, named per process: `home` (192.168.77.2) behind `homegw` (WAN 10.77.1.2), and `mobile`
(192.168.78.2) behind `mobgw` (WAN 10.77.2.2). Both routers masquerade (nftables) and forward TCP
port 8080 to their one machine, as an owner's router does for the camera's page (and for a WHIP
endpoint behind NAT). The internet forwards TCP between them but drops every forwarded UDP
datagram, so no direct media path can work: only a relay on the internet (coturn at 10.77.1.1)
joins them. Link ends are not named `veth*` (libnice ignores those).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TURN_ADDRESS = "10.77.1.1"
TURN_PORT = 3478
HOME_WAN = "10.77.1.2"
MOBILE_WAN = "10.77.2.2"
CAMERA = "192.168.77.2"
PHONE = "192.168.78.2"
HTTP_PORT = 8080


def _run(*args: str, stdin: str | None = None) -> None:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr.strip()}"


@dataclass
class Namespace:
    name: str

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.command(argv), **kw)

    def run(self, *args: str, stdin: str | None = None) -> None:
        _run("ip", "netns", "exec", self.name, *args, stdin=stdin)

    def forward(self) -> None:
        """Route between this namespace's links (no sysctl: procps is not in a minimal Debian)."""
        self.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")

    def wrapper(self, folder: Path, program: str) -> Path:
        """An executable that runs `program` in this namespace (for Playwright's Chromium)."""
        path = folder / f"{Path(program).name}-in-{self.name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {program} "$@"\n')
        path.chmod(0o755)
        return path


def _nat(gw: Namespace, wan: str, forward_to: str) -> None:
    rules = f"""
table ip nat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; oifname "{wan}" masquerade; }}
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    iifname "{wan}" tcp dport {HTTP_PORT} dnat to {forward_to}
  }}
}}
"""
    gw.run("nft", "-f", "-", stdin=rules)
    gw.forward()


class Internet:
    """The topology above; a context manager that removes it all."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.homegw = Namespace(f"apl-homegw-{tag}")
        self.home = Namespace(f"apl-home-{tag}")
        self.mobgw = Namespace(f"apl-mobgw-{tag}")
        self.mobile = Namespace(f"apl-mobile-{tag}")
        self._spaces = (self.homegw, self.home, self.mobgw, self.mobile)
        self._links = ("nhw0", "nmw0")
        self._wan = 2  # the mobile router's public address: 10.77.2.<_wan>
        self._ruleset = "inet apl_internet"

    def __enter__(self) -> Internet:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _link(self, a: str, b: str, ns_b: Namespace, ns_a: Namespace | None = None) -> None:
        _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        _run("ip", "link", "set", b, "netns", ns_b.name)
        if ns_a is not None:
            _run("ip", "link", "set", a, "netns", ns_a.name)

    def _build(self) -> None:
        for ns in self._spaces:
            _run("ip", "netns", "add", ns.name)
            ns.run("ip", "link", "set", "lo", "up")
        # The internet (this namespace) to each router.
        for here, there, gw, net in (
            ("nhw0", "nhw1", self.homegw, 1),
            ("nmw0", "nmw1", self.mobgw, 2),
        ):
            self._link(here, there, gw)
            _run("ip", "addr", "add", f"10.77.{net}.1/24", "dev", here)
            _run("ip", "link", "set", here, "up")
            gw.run("ip", "addr", "add", f"10.77.{net}.2/24", "dev", there)
            gw.run("ip", "link", "set", there, "up")
            gw.run("ip", "route", "add", "default", "via", f"10.77.{net}.1")
        # Each router to its LAN, and the LAN's one machine.
        for lan, host, gw, net in (
            ("nhl", self.home, self.homegw, 77),
            ("nml", self.mobile, self.mobgw, 78),
        ):
            self._link(f"{lan}0", f"{lan}1", host, gw)
            gw.run("ip", "addr", "add", f"192.168.{net}.1/24", "dev", f"{lan}0")
            gw.run("ip", "link", "set", f"{lan}0", "up")
            host.run("ip", "addr", "add", f"192.168.{net}.2/24", "dev", f"{lan}1")
            host.run("ip", "link", "set", f"{lan}1", "up")
            host.run("ip", "route", "add", "default", "via", f"192.168.{net}.1")
        _nat(self.homegw, "nhw1", f"{CAMERA}:{HTTP_PORT}")
        _nat(self.mobgw, "nmw1", f"{PHONE}:{HTTP_PORT}")  # for a WHIP endpoint in there
        # The internet routes between the two, but no UDP: a relay is the only media path.
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")  # this namespace's own
        rules = f"""
table {self._ruleset} {{
  chain forward {{ type filter hook forward priority filter; meta l4proto udp counter drop; }}
}}
"""
        _run("nft", "-f", "-", stdin=rules)

    def dropped_udp(self) -> int:
        """Datagrams the internet dropped between the two homes (a direct path tried)."""
        out = subprocess.run(
            ["nft", "list", "table", *self._ruleset.split()], capture_output=True, text=True
        ).stdout
        return int(out.split("packets ", 1)[1].split()[0]) if "packets " in out else 0

    def move_phone(self) -> None:
        """The phone's network gets a new public address, as on a move from Wi-Fi to 4G: its
        NAT mappings are gone, and with them the paths of its TURN allocations and the
        permissions the camera's allocation gave its old address."""
        self._wan += 1
        self.mobgw.run("ip", "addr", "flush", "dev", "nmw1")
        self.mobgw.run("ip", "addr", "add", f"10.77.2.{self._wan}/24", "dev", "nmw1")
        self.mobgw.run("ip", "route", "add", "default", "via", "10.77.2.1")

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["nft", "delete", "table", *self._ruleset.split()], capture_output=True)
        for ns in self._spaces:
            subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)

    @contextlib.contextmanager
    def coturn(
        self, folder: Path, secret: str | None = None, user: tuple[str, str] | None = None
    ) -> Iterator[str]:
        """Debian's coturn on the internet, with a config of its own: long-term credentials
        (`user`) or the shared-secret scheme (`secret`; coturn cannot mix them). Yields its
        `turn:` URL."""
        assert shutil.which("turnserver"), "coturn is not installed (tests/packages.txt)"
        assert (secret is None) != (user is None), "one of secret and user"
        if secret:
            auth = ["use-auth-secret", f"static-auth-secret={secret}"]
        else:
            assert user is not None
            auth = ["lt-cred-mech", f"user={user[0]}:{user[1]}"]
        conf = folder / "turnserver.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listening-ip={TURN_ADDRESS}",
                    f"relay-ip={TURN_ADDRESS}",
                    f"listening-port={TURN_PORT}",
                    "min-port=49152",
                    "max-port=49999",
                    "realm=appliance.test",
                    "fingerprint",
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    "no-multicast-peers",
                    # The README's hardening, but for 10.0.0.0/8: this test's internet.
                    "denied-peer-ip=127.0.0.0-127.255.255.255",
                    "denied-peer-ip=172.16.0.0-172.31.255.255",
                    "denied-peer-ip=192.168.0.0-192.168.255.255",
                    "no-tcp-relay",
                    "total-quota=400",
                    "no-stdout-log",
                    f"log-file={folder / 'turn.log'}",
                    "simple-log",
                    f"pidfile={folder / 'turn.pid'}",
                    f"userdb={folder / 'turndb'}",  # not the system's /var/lib/turn
                    *auth,
                ]
            )
            + "\n"
        )
        proc = subprocess.Popen(
            ["turnserver", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not _listening_udp(TURN_ADDRESS, TURN_PORT):
                assert proc.poll() is None, f"coturn exited:\n{self.turn_log(folder)}"
                assert time.monotonic() < deadline, "coturn did not start listening"
                time.sleep(0.05)
            yield f"turn:{TURN_ADDRESS}:{TURN_PORT}?transport=udp"
        finally:
            stop(proc)

    @staticmethod
    def turn_log(folder: Path) -> str:
        logs = sorted(folder.glob("turn*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)[-4000:]


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _listening_udp(address: str, port: int) -> bool:
    """Whether something is bound to the UDP address (a bind that fails with EADDRINUSE)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return True
    return False
