"""RTSP 1.0 (RFC 2326) on the wire: requests read from a byte stream, responses written, the
Transport header, and the SDP a DESCRIBE answers with.

Core module: bytes in, bytes out, standard library only. A client's byte stream carries RTSP
requests and, once it plays over TCP, interleaved binary frames (`$`, channel, 16-bit length:
its RTCP receiver reports); `MessageReader` takes both apart and bounds what it holds, so a
client cannot make it buffer without end.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

MAX_HEAD = 8192  # a request line and its headers
MAX_BODY = 4096  # RTSP requests to this server carry no body worth more (GET_PARAMETER, SET_...)
METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER")

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
}


class RtspError(Exception):
    """A request refused with `status`; the message says why, in one line."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class Request:
    method: str
    uri: str
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""

    @property
    def cseq(self) -> str:
        return self.headers.get("cseq", "")


@dataclass(frozen=True)
class Interleaved:
    """A binary frame a TCP client sent on an interleaved channel (its RTCP, usually)."""

    channel: int
    data: bytes


class MessageReader:
    """Requests and interleaved frames out of a client's byte stream, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Request | Interleaved]:
        """What `data` completes; raises RtspError (the connection should then end) for a
        message that cannot be read."""
        self._buf += data
        out: list[Request | Interleaved] = []
        while self._buf:
            if self._buf[0] == 0x24:  # '$': an interleaved frame
                if len(self._buf) < 4:
                    break
                size = int.from_bytes(self._buf[2:4], "big")
                if len(self._buf) < 4 + size:
                    break
                out.append(Interleaved(self._buf[1], bytes(self._buf[4 : 4 + size])))
                del self._buf[: 4 + size]
                continue
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise RtspError(400, f"no end of headers within {MAX_HEAD} bytes")
                break
            if end > MAX_HEAD:
                raise RtspError(400, f"headers longer than {MAX_HEAD} bytes")
            request = _parse_head(bytes(self._buf[:end]))
            length = _content_length(request.headers)
            if len(self._buf) < end + 4 + length:
                break
            request.body = bytes(self._buf[end + 4 : end + 4 + length])
            del self._buf[: end + 4 + length]
            out.append(request)
        return out


def _parse_head(head: bytes) -> Request:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RtspError(400, f"the request is not UTF-8 text (byte {e.start})") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise RtspError(400, f"not an RTSP request line: {lines[0][:80]!r}")
    method, uri, version = parts
    if version != "RTSP/1.0":
        raise RtspError(505, f"this server speaks RTSP/1.0, not {version[:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t"):
            raise RtspError(400, f"not a header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "cseq" not in headers:
        raise RtspError(400, "no CSeq header")
    return Request(method, uri, headers)


def _content_length(headers: dict[str, str]) -> int:
    value = headers.get("content-length", "0")
    if not value.isdigit():
        raise RtspError(400, f"Content-Length is not a number: {value[:20]!r}")
    length = int(value)
    if length > MAX_BODY:
        raise RtspError(413, f"a body of {length} bytes; this server takes {MAX_BODY} at most")
    return length


def response(
    status: int,
    cseq: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str = "",
) -> bytes:
    """An RTSP response; a body gets Content-Type and Content-Length. `headers` as a list may
    repeat a name (two WWW-Authenticate challenges)."""
    lines = [f"RTSP/1.0 {status} {REASONS.get(status, 'Error')}"]
    if cseq:
        lines.append(f"CSeq: {cseq}")
    lines.append("Server: appliance")
    pairs = headers.items() if isinstance(headers, dict) else (headers or [])
    for name, value in pairs:
        lines.append(f"{name}: {value}")
    if body:
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Transport:
    """One transport a SETUP asked for, and this server chose."""

    tcp: bool
    channels: tuple[int, int] = (0, 1)  # interleaved RTP, RTCP (TCP)
    client_ports: tuple[int, int] = (0, 0)  # RTP, RTCP (UDP)

    def header(self, server_ports: tuple[int, int] = (0, 0), ssrc: int | None = None) -> str:
        """The Transport header of the SETUP's response."""
        if self.tcp:
            value = f"RTP/AVP/TCP;unicast;interleaved={self.channels[0]}-{self.channels[1]}"
        else:
            value = (
                f"RTP/AVP;unicast;client_port={self.client_ports[0]}-{self.client_ports[1]}"
                f";server_port={server_ports[0]}-{server_ports[1]}"
            )
        if ssrc is not None:
            value += f";ssrc={ssrc:08X}"
        return value


def parse_transport(value: str) -> Transport:
    """The first transport in a SETUP's Transport header this server can serve: RTP over TCP
    (interleaved) or over UDP unicast. RtspError 461 when there is none."""
    for spec in value.split(","):
        params = [p.strip() for p in spec.split(";")]
        profile = params[0].upper()
        if profile not in ("RTP/AVP", "RTP/AVP/UDP", "RTP/AVP/TCP"):
            continue
        names = {
            p.split("=", 1)[0].lower(): p.split("=", 1)[1] if "=" in p else "" for p in params[1:]
        }
        if "multicast" in names:
            continue
        if profile == "RTP/AVP/TCP":
            pair = _pair(names.get("interleaved", "0-1"), 0, 255)
            if pair is None:
                raise RtspError(400, f"interleaved channels out of range: {value[:80]!r}")
            return Transport(tcp=True, channels=pair)
        pair = _pair(names.get("client_port", ""), 1, 65535)
        if pair is None:
            continue
        return Transport(tcp=False, client_ports=pair)
    raise RtspError(
        461, f"no transport this server sends (RTP/AVP over UDP or TCP): {value[:80]!r}"
    )


def _pair(text: str, low: int, high: int) -> tuple[int, int] | None:
    first, _, second = text.partition("-")
    if not first.isdigit() or (second and not second.isdigit()):
        return None
    a = int(first)
    b = int(second) if second else a + 1
    if not (low <= a <= high and low <= b <= high):
        return None
    return a, b


@dataclass(frozen=True)
class Track:
    """One media section of the DESCRIBE answer."""

    control: str  # "video", "audio": SETUP's URL is <stream URL>/<control>
    payload_type: int
    rtpmap: str  # "H264/90000", "opus/48000/2"
    fmtp: str = ""


@dataclass
class Description:
    name: str
    tracks: list[Track] = field(default_factory=list)


def h264_track(sps: bytes, pps: bytes, profile_level_id: str) -> Track:
    """The video section: the stream's real profile, and its parameter sets (RFC 6184)."""
    sets = ",".join(base64.b64encode(nal).decode() for nal in (sps, pps))
    fmtp = f"packetization-mode=1;profile-level-id={profile_level_id};sprop-parameter-sets={sets}"
    return Track("video", 96, "H264/90000", fmtp)


def opus_track(channels: int) -> Track:
    """The audio section: Opus is always declared with two channels (RFC 7587)."""
    fmtp = "sprop-stereo=1" if channels > 1 else ""
    return Track("audio", 97, "opus/48000/2", fmtp)


def sdp(description: Description, address: str, session_id: int) -> bytes:
    """The SDP of a DESCRIBE (RFC 2326 appendix C): one section per track, each with its own
    `a=control`, relative to the Content-Base."""
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN {family} {address}",
        f"s={description.name}",
        f"c=IN {family} {'::' if family == 'IP6' else '0.0.0.0'}",
        "t=0 0",
        "a=control:*",
        "a=range:npt=now-",
    ]
    for track in description.tracks:
        kind = "video" if track.rtpmap.startswith("H264") else "audio"
        lines += [
            f"m={kind} 0 RTP/AVP {track.payload_type}",
            f"a=rtpmap:{track.payload_type} {track.rtpmap}",
        ]
        if track.fmtp:
            lines.append(f"a=fmtp:{track.payload_type} {track.fmtp}")
        lines.append(f"a=control:{track.control}")
    return ("\r\n".join(lines) + "\r\n").encode()


def digest_params(value: str) -> dict[str, str]:
    """The name=value pairs of a Digest Authorization header (RFC 7616; values quoted or not)."""
    out: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " ,\t":
            i += 1
        eq = value.find("=", i)
        if eq < 0:
            break
        name = value[i:eq].strip().lower()
        i = eq + 1
        if i < n and value[i] == '"':
            end = value.find('"', i + 1)
            end = n if end < 0 else end
            out[name] = value[i + 1 : end]
            i = end + 1
        else:
            end = value.find(",", i)
            end = n if end < 0 else end
            out[name] = value[i:end].strip()
            i = end
    return out
