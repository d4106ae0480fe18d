"""The few SDP edits and reads that aiortc does not do for us. Core module: text in, text out.

- Chromium offers only mDNS (`<uuid>.local`) host candidates; resolving them stalls aiortc's
  setRemoteDescription by about a second (see shared/research/feasibility-webrtc.md §5). ICE works
  without them: the browser's checks reach our host candidates and it is learned peer-reflexive.
- aiortc answers H.264 with a hard-coded profile-level-id; the answer must declare the stream we send.
- WHEP PATCH bodies are `application/trickle-ice-sdpfrag` (RFC 8840).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ ", re.IGNORECASE)


def _lines(sdp: str) -> list[str]:
    return sdp.replace("\r\n", "\n").split("\n")


def _join(lines: list[str]) -> str:
    text = "\r\n".join(lines)
    return text if text.endswith("\r\n") else text + "\r\n"


def webrtc_offer_problem(offer: str) -> str | None:
    """Why this text cannot be a WebRTC offer we can answer, or None. aiortc alone accepts offers
    without ICE credentials or a DTLS fingerprint, which would give a session that never connects."""
    if not offer.startswith("v=0"):
        return "the body is not an SDP offer (it must start with v=0)"
    lines = _lines(offer)
    if not any(line.startswith("m=") for line in lines):
        return "the offer has no media section (m=)"
    ufrag, pwd = ice_credentials(offer)
    if not ufrag or not pwd:
        return "the offer has no ICE credentials (a=ice-ufrag and a=ice-pwd)"
    if not any(line.startswith("a=fingerprint:") for line in lines):
        return "the offer has no DTLS fingerprint (a=fingerprint)"
    return _sections_problem(lines)


_DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")


def _sections_problem(lines: list[str]) -> str | None:
    """What aiortc would trip over in the media sections (each was a 500, or a traceback from
    its connect task, before): a missing, empty or repeated a=mid, a section outside the BUNDLE
    group, a section with no direction, a section with no DTLS fingerprint or ICE credentials of
    its own or at session level."""
    bundle: list[str] | None = None
    for line in lines:
        if line.startswith("a=group:BUNDLE"):
            bundle = line.split()[1:]
    session: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    seen: set[str] = set()
    for number, section in enumerate(sections):
        kind = section[0][2:].split(" ", 1)[0][:20]
        what = f"media section {number} ({kind})"
        mids = [line[6:].strip() for line in section if line.startswith("a=mid:")]
        if len(mids) != 1 or not mids[0]:
            return f"{what} needs exactly one non-empty a=mid"
        if mids[0] in seen:
            return f"{what} repeats a=mid:{mids[0][:32]}"
        seen.add(mids[0])
        if bundle is not None and mids[0] not in bundle:
            return f"{what}: a=mid:{mids[0][:32]} is not in the BUNDLE group"
        if not any(line in _DIRECTIONS for line in section):
            return f"{what} has no direction (a=sendrecv, a=sendonly, a=recvonly or a=inactive)"
        for attribute in ("a=fingerprint:", "a=ice-ufrag:", "a=ice-pwd:"):
            if not any(line.startswith(attribute) for line in section + session):
                return f"{what} has no {attribute[2:-1]}, and the session has none either"
    return None


def has_video(sdp: str) -> bool:
    """True when the SDP has a video media section."""
    return has_media(sdp, "video")


def has_media(sdp: str, kind: str) -> bool:
    """True when the SDP has a media section of `kind` ("audio", "video") with a port (0 is
    a section the offerer rejected)."""
    return any(
        line.startswith(f"m={kind} ") and not line.startswith(f"m={kind} 0 ")
        for line in _lines(sdp)
    )


def _section(sdp: str, kind: str) -> list[str]:
    """The lines of the first media section of `kind` that is not rejected (port 0)."""
    section: list[str] = []
    inside = False
    for line in _lines(sdp):
        if line.startswith("m="):
            if inside:
                break
            inside = line.startswith(f"m={kind} ") and not line.startswith(f"m={kind} 0 ")
        if inside:
            section.append(line)
    return section


DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def video_direction(sdp: str) -> str | None:
    """The direction of the first video section (`sendrecv` when unsaid); None without video."""
    section = _section(sdp, "video")
    if not section:
        return None
    for line in section:
        if line[2:] in DIRECTIONS:
            return line[2:]
    return "sendrecv"


def sends_opus(sdp: str) -> bool:
    """True when the offer has an audio section that sends (sendonly, sendrecv) and offers Opus."""
    section = _section(sdp, "audio")
    if not section:
        return False
    direction = next((line[2:] for line in section if line[2:] in DIRECTIONS), "sendrecv")
    opus = any(re.match(r"^a=rtpmap:\d+ opus/48000", line, re.IGNORECASE) for line in section)
    return opus and direction in ("sendonly", "sendrecv")


def video_ssrc(sdp: str) -> int | None:
    """The SSRC the first video section declares for its media (the first of an FID group, whose
    second is its retransmission stream), or None when it declares none."""
    section = _section(sdp, "video")
    for line in section:
        m = re.match(r"^a=ssrc-group:FID (\d+)", line)
        if m:
            return int(m.group(1))
    for line in section:
        m = re.match(r"^a=ssrc:(\d+) ", line)
        if m:
            return int(m.group(1))
    return None


def is_mdns_candidate(line: str) -> bool:
    """True for an `a=candidate` line whose address is an mDNS name (RFC 8445 + mDNS ICE draft)."""
    m = _CANDIDATE.match(line)
    return bool(m and m.group(1).lower().endswith(".local"))


def candidate_problem(line: str) -> str | None:
    """Why an `a=candidate` line cannot name a UDP or TCP address to check, or None: its address
    must be an IP address and its port 1 to 65535 (a port beyond that once made asyncio close the
    ICE socket with an OverflowError)."""
    fields = line.split()
    if len(fields) < 8 or fields[6] != "typ":
        return "a candidate needs foundation, component, transport, priority, address, port, typ"
    address, port = fields[4], fields[5]
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"candidate port {port[:12]!r} is not 1 to 65535"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return f"candidate address {address[:64]!r} is not an IP address"
    if not fields[1].isdigit() or not fields[3].isdigit():
        return "candidate component and priority must be numbers"
    return None


def strip_mdns_candidates(sdp: str) -> str:
    """The offer without its `.local` host candidates, and without candidates that name no usable
    address (see `candidate_problem`): ICE goes on with the others, as browsers do."""
    lines = [
        line
        for line in _lines(sdp)
        if line
        and not is_mdns_candidate(line)
        and not (line.startswith("a=candidate:") and candidate_problem(line))
    ]
    return _join(lines)


def h264_payload_types(sdp: str) -> list[int]:
    """Payload types mapped to H264/90000 by `a=rtpmap` lines, in order."""
    pts = []
    for line in _lines(sdp):
        m = re.match(r"^a=rtpmap:(\d+) H264/90000", line, re.IGNORECASE)
        if m:
            pts.append(int(m.group(1)))
    return pts


def h264_formats(sdp: str) -> list[tuple[int, int, str]]:
    """`(payload type, packetization-mode, profile-level-id)` of every H.264 format in an SDP.

    A format without `profile-level-id` is Constrained Baseline 3.1 (`42e01f`), as WebRTC reads it.
    """
    formats = []
    fmtp: dict[int, dict[str, str]] = {}
    for line in _lines(sdp):
        m = re.match(r"^a=fmtp:(\d+) (.*)$", line)
        if m:
            params = dict(p.strip().split("=", 1) for p in m.group(2).split(";") if "=" in p)
            fmtp[int(m.group(1))] = {k.lower(): v.strip() for k, v in params.items()}
    for pt in h264_payload_types(sdp):
        params = fmtp.get(pt, {})
        mode = params.get("packetization-mode", "0")
        formats.append(
            (pt, int(mode) if mode.isdigit() else -1, params.get("profile-level-id", "42e01f"))
        )
    return formats


def set_h264_profile_level_id(sdp: str, profile_level_id: str) -> str:
    """Rewrite `profile-level-id` on every H.264 `a=fmtp` line to the given value."""
    pts = {str(pt) for pt in h264_payload_types(sdp)}
    out = []
    for line in _lines(sdp):
        m = re.match(r"^a=fmtp:(\d+) (.*)$", line)
        if m and m.group(1) in pts:
            params = re.sub(
                r"profile-level-id=[0-9a-fA-F]{6}",
                f"profile-level-id={profile_level_id}",
                m.group(2),
            )
            if "profile-level-id=" not in params:
                params += f";profile-level-id={profile_level_id}"
            line = f"a=fmtp:{m.group(1)} {params}"
        if line:
            out.append(line)
    return _join(out)


def set_opus_stereo(sdp: str) -> str:
    """Declare stereo Opus in the audio section (RFC 7587 section 7.1: `stereo=1` asks the
    receiver to decode both channels, `sprop-stereo=1` says we send them)."""
    lines = _lines(sdp)
    pts = [
        m.group(1)
        for line in lines
        if (m := re.match(r"^a=rtpmap:(\d+) opus/48000", line, re.IGNORECASE))
    ]
    if not pts:
        return sdp
    pt = pts[0]
    out = []
    for line in lines:
        if line.startswith(f"a=fmtp:{pt} "):
            continue
        out.append(line)
        if line.startswith(f"a=rtpmap:{pt} "):
            out.append(f"a=fmtp:{pt} minptime=10;stereo=1;sprop-stereo=1")
    return _join(out)


def ice_credentials(sdp: str) -> tuple[str | None, str | None]:
    """The first `a=ice-ufrag` and `a=ice-pwd` values of an SDP (session or media level)."""
    ufrag = pwd = None
    for line in _lines(sdp):
        if line.startswith("a=ice-ufrag:") and ufrag is None:
            ufrag = line.split(":", 1)[1].strip()
        elif line.startswith("a=ice-pwd:") and pwd is None:
            pwd = line.split(":", 1)[1].strip()
    return ufrag, pwd


@dataclass
class FragMedia:
    mid: str | None
    candidates: list[str] = field(default_factory=list)
    end_of_candidates: bool = False


@dataclass
class SdpFrag:
    """A parsed `application/trickle-ice-sdpfrag` body (RFC 8840 section 9)."""

    ufrag: str | None
    pwd: str | None
    media: list[FragMedia]

    @classmethod
    def parse(cls, text: str) -> SdpFrag:
        ufrag = pwd = None
        media: list[FragMedia] = []
        current: FragMedia | None = None
        for raw in _lines(text):
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise ValueError(f"sdpfrag line is not <type>=<value>: {line[:60]!r}")
            if line.startswith("m="):
                current = FragMedia(mid=None)
                media.append(current)
            elif line.startswith("a=ice-ufrag:"):
                ufrag = line.split(":", 1)[1]
            elif line.startswith("a=ice-pwd:"):
                pwd = line.split(":", 1)[1]
            elif line.startswith("a=mid:"):
                if current is None:
                    raise ValueError("sdpfrag a=mid before any m= line")
                current.mid = line.split(":", 1)[1]
            elif line.startswith("a=candidate:"):
                if current is None:
                    current = FragMedia(mid=None)
                    media.append(current)
                current.candidates.append(line[2:])
            elif line == "a=end-of-candidates":
                if current is None:
                    current = FragMedia(mid=None)
                    media.append(current)
                current.end_of_candidates = True
        return cls(ufrag=ufrag, pwd=pwd, media=media)
