"""`/metrics` in Prometheus text format: streams, the camera, viewers, publishers, egress and the
ICE ports, per stream where it applies (written with prometheus.py).
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from appliance import __version__
from appliance.http.prometheus import Exposition
from appliance.http.status import STATUS_KEY
from appliance.rtc.internals import FEEDBACK, STRAY

logger = logging.getLogger(__name__)


# (name, help, key in the sessions' totals): counters summed over every viewer of a stream, ever.
VIEWER_COUNTERS = (
    ("appliance_sent_bytes_total", "Bytes sent to viewers, SRTP included.", "bytes"),
    ("appliance_sent_packets_total", "RTP packets sent to viewers.", "packets"),
    ("appliance_retransmitted_packets_total", "Packets resent on NACK.", "retransmits"),
    ("appliance_retransmissions_refused_total",
     "NACKed packets not resent: over the viewer's retransmission budget.", "retransmits_refused"),
    ("appliance_nacks_received_total", "RTCP NACKs received from viewers.", "nacks"),
    ("appliance_plis_received_total", "RTCP PLIs received from viewers.", "plis"),
    ("appliance_firs_received_total", "RTCP FIRs received from viewers.", "firs"),
    ("appliance_viewer_dropped_total", "Sends the kernel refused, or frames a slow viewer lost.",
     "dropped"),
)  # fmt: skip

# (name, type, help, what of a stream): one sample per stream.
STREAM_FAMILIES = (
    ("appliance_encoded_frames_total", "counter", "Access units published.", "frames"),
    ("appliance_encoded_bytes_total", "counter", "Bytes published.", "bytes"),
    ("appliance_keyframes_total", "counter", "Keyframes published.", "keyframes"),
    ("appliance_keyframes_forced_total", "counter",
     "Keyframes asked of the encoder or publisher for viewers.", "keyframes_forced"),
    ("appliance_keyframe_requests_total", "counter", "Keyframe requests (joins, PLI, FIR).",
     "keyframe_requests"),
)  # fmt: skip


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text format: streams, the camera, viewers, publishers, egress."""
    st = request.app[STATUS_KEY]
    viewers = st.viewers
    streams = list(st.streams)
    names = sorted({s.name for s in streams} | viewers.streams())
    viewers.observe_first_frames()
    totals = {name: viewers.totals(name) for name in names}
    e = Exposition()
    e.family("appliance_info", "gauge", "The daemon's version.", [({"version": __version__}, 1)])
    e.family(
        "appliance_uptime_seconds", "gauge", "Seconds since start.",
        [(None, time.monotonic() - st.started)],
    )  # fmt: skip
    e.family("appliance_streams", "gauge", "Streams served now.", [(None, len(streams))])
    e.family(
        "appliance_ice_stray_datagrams_total", "counter",
        "Datagrams to ICE ports dropped: empty, or not STUN and from no validated peer.",
        [(None, STRAY.total)],
    )  # fmt: skip
    e.family(
        "appliance_rtcp_dropped_total", "counter",
        "Viewers' RTCP dropped: SRTCP that did not authenticate (or a replay), RTCP that did not parse.",
        [
            ({"reason": "unauthenticated"}, FEEDBACK.unauthenticated.total),
            ({"reason": "malformed"}, FEEDBACK.malformed.total),
        ],
    )  # fmt: skip
    if st.headroom is not None:
        h = st.headroom.headroom
        e.family(
            "appliance_loop_busy_ratio", "gauge",
            "Share of one core the event loop used, smoothed over about 2 s.", [(None, h.busy)],
        )  # fmt: skip
        e.family(
            "appliance_loop_lag_seconds", "gauge", "How late the event loop's last tick woke.",
            [(None, h.last_lag)],
        )  # fmt: skip
        e.family(
            "appliance_udp_drops_total", "counter",
            "Datagrams the kernel dropped on the daemon's UDP sockets (not read in time).",
            [(None, h.drops_total)],
        )  # fmt: skip
        e.family(
            "appliance_viewers_refused_total", "counter",
            "New viewers (WHEP, RTSP) refused with 503 for lack of room, by reason.",
            [({"reason": r}, n) for r, n in h.refused.items()],
        )  # fmt: skip
    e.family(
        "appliance_viewers", "gauge", "Viewers connected now.",
        [({"stream": n}, viewers.count(n)) for n in names],
    )  # fmt: skip
    rtsp = st.rtsp
    e.family(
        "appliance_rtsp_readers", "gauge", "RTSP readers with a session now, per transport.",
        [
            ({"stream": n, "transport": t}, rtsp.by_transport(n)[t] if rtsp else 0)
            for n in names for t in ("tcp", "udp")
        ],
    )  # fmt: skip
    e.family(
        "appliance_viewer_sessions_total", "counter", "WHEP sessions created.",
        [({"stream": n}, viewers.created.get(n, 0)) for n in names],
    )  # fmt: skip
    for name, text, key in VIEWER_COUNTERS:
        e.family(name, "counter", text, [({"stream": n}, totals[n][key]) for n in names])
    for name, kind, text, attr in STREAM_FAMILIES:
        e.family(name, kind, text, [({"stream": s.name}, getattr(s, attr)) for s in streams])
    rates = [(s.name, *s.rates()) for s in streams]
    e.family(
        "appliance_encoder_fps", "gauge", "Frames published per second (last 2 s).",
        [({"stream": n}, fps) for n, fps, _ in rates],
    )  # fmt: skip
    e.family(
        "appliance_encoder_bitrate_bps", "gauge", "Bits published per second (last 2 s).",
        [({"stream": n}, bps) for n, _, bps in rates],
    )  # fmt: skip
    e.family(
        "appliance_publishers", "gauge", "WHIP publishers connected now.",
        [(None, st.publishers.count())],
    )  # fmt: skip
    e.family(
        "appliance_publisher_sessions_total", "counter", "WHIP sessions created.",
        [(None, sum(st.publishers.created.values()))],
    )  # fmt: skip
    e.family(
        "appliance_connection_failures_total", "counter",
        "WebRTC connections that failed or never connected, by role and why (rtc/diagnose.py).",
        [
            ({"role": role, "reason": code}, count)
            for role, registry in (("viewer", viewers), ("publisher", st.publishers))
            for code, count in sorted(registry.failures.items())
        ],
    )  # fmt: skip
    sources = [(c.name, c.slot.describe()) for c in st.cameras.values()]
    for name, kind, text, key in (
        ("appliance_source_up", "gauge", "1 while the video source runs.", "running"),
        ("appliance_source_restarts_total", "counter", "Video source restarts.", "restarts"),
        ("appliance_capture_drops_total", "counter",
         "Captured pictures dropped because the encoder was busy.", "capture_drops"),
        ("appliance_capture_corrupt_frames_total", "counter",
         "Captured frames that could not be used.", "corrupt_frames"),
    ):  # fmt: skip
        e.family(
            name, kind, text, [({"stream": cam}, int(src.get(key) or 0)) for cam, src in sources]
        )
    camera = st.streams.camera
    audio = st.audio.describe()
    track = camera.audio if camera is not None else None
    e.family(
        "appliance_audio_source_up", "gauge", "1 while the audio source runs.",
        [(None, 1 if audio["running"] else 0)],
    )  # fmt: skip
    e.family(
        "appliance_audio_source_restarts_total", "counter", "Audio source restarts.",
        [(None, audio["restarts"])],
    )  # fmt: skip
    e.family(
        "appliance_audio_packets_total", "counter", "Opus packets encoded.",
        [(None, track.packets if track is not None else 0)],
    )  # fmt: skip
    targets = st.egress.targets
    if targets:
        e.family(
            "appliance_egress_up", "gauge", "1 while publishing to the WHIP endpoint.",
            [({"url": t.url}, 1 if t.state == "connected" else 0) for t in targets],
        )  # fmt: skip
        e.family(
            "appliance_egress_failures_total", "counter",
            "Egress sessions that failed or could not be set up.",
            [({"url": t.url}, t.failures) for t in targets],
        )  # fmt: skip
    for n in names:
        e.histogram(
            "appliance_time_to_first_frame_seconds",
            "From a viewer's WHEP POST to the first access unit sent to it.",
            viewers.histogram(n),
            {"stream": n},
        )
    return web.Response(
        body=e.render().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
