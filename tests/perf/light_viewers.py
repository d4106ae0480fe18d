"""N real WHEP viewers (aiortc: ICE, DTLS, SRTP keys, RTCP) that only count what they receive.

    python -m tests.perf.light_viewers URL N           # WHEP: URL is the stream's WHEP endpoint
    python -m tests.perf.light_viewers URL N --janus   # Janus's HTTP API: watch mountpoint 1

Each viewer negotiates like any other, then its DTLS transport's RTP handler is replaced by a
counter that reads the marker bit from the clear RTP header (no SRTP unprotect, no depacketizing,
no decoding), so that one load process can hold a hundred viewers on a 2-core machine. Like a real
viewer it sends an RTCP receiver report (SRTCP) for the video it gets, once a second. Prints one
JSON line per second: viewers connected, per-viewer frames (marker bits) so far, and the viewers
the daemon refused (503: no room; `refused`, with its Retry-After and reason in `refusals`). Stops
on EOF of standard input.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket


class LightViewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames = 0
        self.packets = 0
        self.dtls: Any = None
        self.ssrc: int | None = None  # the video's, once a packet came
        self.highest = 0  # its highest sequence number
        self.location: str | None = None
        self.refusal: dict[str, str] | None = None  # a 503: Retry-After and the reason

    async def _count(self, data: bytes, arrival_time_ms: int) -> None:
        """In place of the DTLS transport's RTP handler: count, from the clear RTP header."""
        self.packets += 1
        if data[1] & 0x80:
            self.frames += 1
        self.ssrc = int.from_bytes(data[8:12], "big")
        self.highest = int.from_bytes(data[2:4], "big")

    async def report(self) -> None:
        """An RTCP receiver report for the video, as every real viewer sends about once a
        second (aiortc's own receiver sends none: its statistics are never fed here)."""
        if self.ssrc is None or self.pc.connectionState != "connected":
            return
        info = RtcpReceiverInfo(
            ssrc=self.ssrc, fraction_lost=0, packets_lost=0, highest_sequence=self.highest,
            jitter=0, lsr=0, dlsr=0,
        )  # fmt: skip
        await self.dtls._send_rtp(bytes(RtcpRrPacket(ssrc=0x4C49_4748, reports=[info])))

    async def connect(self, http: aiohttp.ClientSession, url: str) -> None:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(
            url, data=self.pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as r:
            answer = await r.text()
            if r.status == 503:
                self.refusal = {"retry_after": r.headers.get("Retry-After", ""), "why": answer}
                await self.pc.close()
                return
            if r.status != 201:
                raise RuntimeError(f"WHEP POST {r.status}: {answer}")
            self.location = r.headers["Location"]
        self.dtls = transceiver.receiver.transport
        self.dtls._handle_rtp_data = self._count
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def connect_janus(self, http: aiohttp.ClientSession, api: str) -> None:
        """Janus's streaming plugin: a session, a handle, `watch` (Janus offers), our answer."""

        async def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(f"{api}{path}", json={**body, "transaction": "t"}) as r:
                reply: dict[str, Any] = await r.json(content_type=None)
            if reply.get("janus") == "error":
                raise RuntimeError(f"janus: {reply}")
            return reply

        session = (await call("", {"janus": "create"}))["data"]["id"]
        attach = {"janus": "attach", "plugin": "janus.plugin.streaming"}
        handle = (await call(f"/{session}", attach))["data"]["id"]
        watch = {"janus": "message", "body": {"request": "watch", "id": 1}}
        await call(f"/{session}/{handle}", watch)
        while True:  # its offer comes as an event
            async with http.get(f"{api}/{session}?maxev=1") as r:
                event = await r.json(content_type=None)
            if isinstance(event, list):
                event = event[0] if event else {}
            if "jsep" in event:
                break
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=event["jsep"]["sdp"], type="offer")
        )
        self.dtls = self.pc.getTransceivers()[0].receiver.transport
        self.dtls._handle_rtp_data = self._count
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        start = {"janus": "message", "body": {"request": "start"}}
        answer = {"type": "answer", "sdp": self.pc.localDescription.sdp}
        await call(f"/{session}/{handle}", {**start, "jsep": answer})


async def main(url: str, count: int, janus: bool) -> None:
    viewers = [LightViewer() for _ in range(count)]
    async with aiohttp.ClientSession() as http:
        for i in range(0, count, 10):  # join in groups of ten
            group = viewers[i : i + 10]
            if janus:
                await asyncio.gather(*(v.connect_janus(http, url) for v in group))
            else:
                await asyncio.gather(*(v.connect(http, url) for v in group))
        stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        while not stdin_closed.done():
            connected = sum(v.pc.connectionState == "connected" for v in viewers)
            print(
                json.dumps(
                    {
                        "connected": connected,
                        "frames": [v.frames for v in viewers],
                        "refused": [v.refusal is not None for v in viewers],
                        "refusals": [v.refusal for v in viewers if v.refusal][:3],
                        "packets": sum(v.packets for v in viewers),
                    }
                ),
                flush=True,
            )
            await asyncio.gather(*(v.report() for v in viewers))
            await asyncio.wait([stdin_closed], timeout=1.0)
        await asyncio.gather(*(v.pc.close() for v in viewers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), "--janus" in sys.argv[3:]))
