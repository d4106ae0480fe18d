"""Issue 13's attacks, rerun from outside against a daemon process with its default limits, and
what they cost it.

    .venv/bin/python -m tests.perf.bench_hostile

Inside a private network namespace (tests/netns.py), a daemon on the test source (640x360) on
10.99.0.1, and a neighbour on the same link (clients bound to 127.0.0.2 to .13 stand for twelve
devices on the LAN). In order, while one real aiortc viewer watches throughout:

1. a sweep of empty and junk datagrams to every UDP port 32768-60999;
2. 300 concurrent WHEP offers from twelve addresses (caps: 64 a stream, 4 half-open a client);
3. 1,100 idle TCP connections from ten addresses, then /healthz timed from another;
4. a second aiortc viewer that NACKs every sequence number of the last second, 10 times a second;
5. 3,000 mutated WHEP offers and 2,000 mutated WHIP offers (tests/fuzz.py's mutator).

Figures: whether the watching viewer still decodes after each step (frames in the next 2 s),
sessions the attack made, the daemon's open descriptors at the worst moment, status codes, the
attacker viewer's traffic with and without its NACK storm, and the daemon's log: lines,
tracebacks, and the biggest burst of lines in one second.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from appliance.devices.headroom import udp_sockets
from tests import netns

OFFER = (Path(__file__).parents[1] / "data/chromium-recvonly-offer.sdp").read_text()
SDP = {"Content-Type": "application/sdp"}


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def udp_ports(pid: int) -> set[int]:
    """The UDP ports the process has sockets on (its ICE sockets), from /proc."""
    return {int(row[1].rsplit(":", 1)[1], 16) for row in udp_sockets(pid).values()}


async def frames_in(viewer: Any, seconds: float) -> int:
    track = await viewer._track
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(track.recv(), max(0.01, deadline - time.monotonic()))
            count += 1
        except (asyncio.TimeoutError, Exception):
            break
    return count


async def status(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/status") as r:
        result: dict[str, Any] = await r.json()
        return result


def log_figures(log: Path) -> dict[str, Any]:
    lines = log.read_text(errors="replace").splitlines()
    per_second = collections.Counter(line[:19] for line in lines if line[:4].isdigit())
    return {
        "lines": len(lines),
        "tracebacks": sum("Traceback" in line for line in lines),
        "worst second": max(per_second.values(), default=0),
        "warnings+": sum(" WARNING " in line or " ERROR " in line for line in lines),
    }


def start(port: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The daemon with its default limits, on every address, its log in a file."""
    state = tempfile.mkdtemp()
    log = Path(state) / "daemon.log"
    env = {**os.environ, "APPLIANCE_VIDEO_WIDTH": "640", "APPLIANCE_VIDEO_HEIGHT": "360",
           "APPLIANCE_HTTP_STATE_DIR": state, "APPLIANCE_AUDIO_SOURCE": "none"}  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--source", "testsrc", "--host",
             "0.0.0.0", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://10.99.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    return proc, url, log


async def main(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    from tests.e2e.peers import AiortcViewer
    from tests.fuzz import mutate

    port = int(url.rsplit(":", 1)[1])
    results: list[tuple[str, str]] = []

    def report(step: str, text: str) -> None:
        results.append((step, text))
        print(f"{step}: {text}", flush=True)

    async with aiohttp.ClientSession() as http:
        watcher = AiortcViewer(http, f"{url}/cam/whep")
        await watcher.connect()
        report("baseline", f"watching viewer decodes {await frames_in(watcher, 2)} frames in 2 s")

        # 1. The datagram sweep: every UDP port the daemon has (its ICE sockets; the watching
        # viewer's own ports, in this process, are left alone: it is not what is measured).
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 0
        ports = udp_ports(proc.pid)
        for _ in range(10):
            for junk in (b"", b"\x16\xfe\xfd" + bytes(20), b"\x80\x60" + bytes(20)):
                for p in ports:
                    for host in ("10.99.0.1", "10.99.0.2"):
                        try:
                            sock.sendto(junk, (host, p))
                            sent += 1
                        except OSError:
                            pass
            await asyncio.sleep(0.05)
        sock.close()
        await asyncio.sleep(0.5)
        st = await status(http, url)
        report(
            "1 datagram sweep",
            f"{sent} datagrams to the daemon's {len(ports)} UDP ports; sessions "
            f"{[v['state'] for v in st['viewers']]}; "
            f"watching viewer decodes {await frames_in(watcher, 2)} frames in 2 s",
        )

        # 2. 300 concurrent offers from twelve addresses.
        worst = fds(proc.pid)

        async def offer(client: int) -> int:
            connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{client}", 0))
            async with aiohttp.ClientSession(connector=connector) as c:
                try:
                    async with c.post(f"http://127.0.0.1:{port}/cam/whep", data=OFFER,
                                      headers=SDP) as r:  # fmt: skip
                        return r.status
                except aiohttp.ClientError:
                    return 0

        tasks = [asyncio.ensure_future(offer(2 + i % 12)) for i in range(300)]
        while not all(t.done() for t in tasks):
            worst = max(worst, fds(proc.pid))
            await asyncio.sleep(0.01)
        codes = collections.Counter(t.result() for t in tasks)
        st = await status(http, url)
        report(
            "2 concurrent offers",
            f"statuses {dict(codes)}; sessions now {len(st['viewers'])}; daemon fds at worst "
            f"{worst}; watching viewer decodes {await frames_in(watcher, 2)} frames in 2 s",
        )

        # 3. 1,100 idle TCP connections.
        before = fds(proc.pid)
        held: list[socket.socket] = []
        refused = 0
        for i in range(1100):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.bind((f"127.0.0.{2 + i % 10}", 0))
                s.connect_ex(("127.0.0.1", port))
                held.append(s)
            except OSError:
                refused += 1
                s.close()
        await asyncio.sleep(1.0)
        started = time.monotonic()
        async with http.get(f"{url}/healthz") as r:
            health = r.status
        took = (time.monotonic() - started) * 1000
        report(
            "3 idle connections",
            f"{len(held)} opened; daemon fds {before} before, {fds(proc.pid)} with them; "
            f"/healthz {health} in {took:.0f} ms",
        )
        await asyncio.sleep(16)  # http.idle_timeout
        report(
            "3 after idle_timeout", f"daemon fds {fds(proc.pid)} (the clients still hold theirs)"
        )
        for s in held:
            s.close()

        # 4. NACK storm from a real viewer.
        attacker = AiortcViewer(http, f"{url}/cam/whep")
        await attacker.connect()
        await frames_in(attacker, 1)
        receiver = attacker.pc.getReceivers()[0]

        def viewer_bytes(st: dict[str, Any]) -> int:
            ids = {attacker.location.rsplit("/", 1)[-1]} if attacker.location else set()
            return sum(v["bytes"] for v in st["viewers"] if v["id"] in ids)

        b0 = viewer_bytes(await status(http, url))
        await asyncio.sleep(3)
        quiet = (viewer_bytes(await status(http, url)) - b0) / 3
        ssrc = receiver.getSynchronizationSources()[0].source
        streams = receiver._RTCRtpReceiver__remote_streams  # the attacker's own aiortc: its seqs
        b0 = viewer_bytes(await status(http, url))
        for _ in range(30):  # the whole ring (2048 packets), ten times a second, for 3 s
            top = streams[ssrc].max_seq
            low = max(0, top - 2047)  # ascending and unwrapped, as aiortc's NACK writer wants
            await receiver._send_rtcp_nack(ssrc, list(range(low, top + 1)))
            await asyncio.sleep(0.1)
        storm = (viewer_bytes(await status(http, url)) - b0) / 3
        report(
            "4 NACK storm",
            f"attacker's traffic {quiet / 1000:.1f} kB/s quiet, {storm / 1000:.1f} kB/s storming "
            f"(x{storm / max(quiet, 1):.2f}); watching viewer decodes "
            f"{await frames_in(watcher, 2)} frames in 2 s",
        )
        await attacker.close()

        # 5. Mutated offers.
        rng = random.Random(13)
        local = f"http://127.0.0.1:{port}"
        publish = OFFER.replace("a=recvonly", "a=sendonly")
        codes = collections.Counter()
        for i in range(5000):
            path, seed = ("/cam/whep", OFFER) if i < 3000 else (f"/f{i % 4}/whip", publish)
            body = mutate(seed.encode(), rng)
            connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{2 + i % 250}", 0))
            async with aiohttp.ClientSession(connector=connector) as c:
                async with c.post(f"{local}{path}", data=body, headers=SDP) as r:
                    codes[r.status] += 1
                    if r.status == 201:
                        await c.delete(f"{local}{r.headers['Location']}")
        report(
            "5 mutated offers",
            f"statuses {dict(sorted(codes.items()))}; watching viewer decodes "
            f"{await frames_in(watcher, 2)} frames in 2 s",
        )
        newcomer = AiortcViewer(http, f"{url}/cam/whep")
        await newcomer.connect()
        report("after", f"a new viewer decodes {await frames_in(newcomer, 2)} frames in 2 s")
        await newcomer.close()
        await watcher.close()
    proc.terminate()
    await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10)
    report("daemon log", str(log_figures(log)))


if __name__ == "__main__":
    problem = netns.enter()
    if problem is not None:
        raise SystemExit(f"needs a private network namespace: {problem}")
    daemon, address, daemon_log = start(8080)
    try:
        asyncio.run(main(daemon, address, daemon_log))
    finally:
        daemon.kill()
