"""N RTSP readers that only count what they receive: SETUP and PLAY as any client, then packets
counted (TCP: interleaved frames parsed; UDP: datagrams on the reader's own ports), nothing
depacketized or decoded, so that one load process can hold many readers on a 2-core machine.

    python -m tests.perf.light_rtsp URL N tcp|udp

Prints one JSON line per second: readers playing, and packets received per reader so far. Sends
GET_PARAMETER every 20 s (the keep-alive). Stops on EOF of standard input.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from urllib.parse import urlsplit


class Reader:
    def __init__(self, url: str, transport: str) -> None:
        self.url = url
        self.transport = transport
        self.packets = 0
        self.session = ""
        self.cseq = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._socks: list[socket.socket] = []

    async def request(self, method: str, uri: str, extra: str = "") -> bytes:
        assert self._writer is not None and self._reader is not None
        self.cseq += 1
        session = f"Session: {self.session}\r\n" if self.session else ""
        self._writer.write(
            f"{method} {uri} RTSP/1.0\r\nCSeq: {self.cseq}\r\n{session}{extra}\r\n".encode()
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"{method}: {head[:80]!r}")
        return head

    async def start(self) -> None:
        parts = urlsplit(self.url)
        self._reader, self._writer = await asyncio.open_connection(parts.hostname, parts.port)
        if self.transport == "tcp":
            spec = "RTP/AVP/TCP;unicast;interleaved=0-1"
        else:
            rtp_sock, rtcp_sock = (
                socket.socket(type=socket.SOCK_DGRAM),
                socket.socket(type=socket.SOCK_DGRAM),
            )
            rtp_sock.bind(("127.0.0.1", 0))
            rtcp_sock.bind(("127.0.0.1", 0))
            for s in (rtp_sock, rtcp_sock):
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._socks = [rtp_sock, rtcp_sock]
            ports = f"{rtp_sock.getsockname()[1]}-{rtcp_sock.getsockname()[1]}"
            spec = f"RTP/AVP;unicast;client_port={ports}"
            asyncio.get_running_loop().add_reader(rtp_sock.fileno(), self._datagrams, rtp_sock)
        head = await self.request("SETUP", f"{self.url}/video", f"Transport: {spec}\r\n")
        self.session = head.split(b"Session: ", 1)[1].split(b";", 1)[0].split(b"\r")[0].decode()
        await self.request("PLAY", self.url)
        if self.transport == "tcp":
            asyncio.get_running_loop().create_task(self._interleaved())

    def _datagrams(self, sock: socket.socket) -> None:
        try:
            while True:
                sock.recv(2048)
                self.packets += 1
        except BlockingIOError:
            return

    async def _interleaved(self) -> None:
        assert self._reader is not None
        buf = bytearray()
        while True:
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                return
            buf += chunk
            at = 0
            while len(buf) - at >= 4:
                if buf[at] != 0x24:  # a keep-alive's answer between frames
                    end = buf.find(b"\r\n\r\n", at)
                    if end < 0:
                        break
                    at = end + 4
                    continue
                size = int.from_bytes(buf[at + 2 : at + 4], "big")
                if len(buf) - at < 4 + size:
                    break
                if buf[at + 1] == 0:
                    self.packets += 1
                at += 4 + size
            del buf[:at]

    def keepalive(self) -> None:
        assert self._writer is not None
        self.cseq += 1
        self._writer.write(
            f"GET_PARAMETER {self.url} RTSP/1.0\r\nCSeq: {self.cseq}\r\n"
            f"Session: {self.session}\r\n\r\n".encode()
        )


async def main(url: str, count: int, transport: str) -> None:
    readers = [Reader(url, transport) for _ in range(count)]
    for reader in readers:
        await reader.start()
    loop = asyncio.get_running_loop()
    eof = loop.run_in_executor(None, sys.stdin.read)
    ticks = 0
    while not eof.done():
        await asyncio.sleep(1)
        ticks += 1
        if ticks % 20 == 0:
            for reader in readers:
                reader.keepalive()
        print(json.dumps({"readers": count, "packets": [r.packets for r in readers]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
