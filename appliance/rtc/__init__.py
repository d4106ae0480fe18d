"""WebRTC through aiortc: negotiation (negotiate.py), a viewer's media (viewer.py), a WHIP
publisher's media (ingest.py), why a connection failed (diagnose.py), and internals.py, the only
file that names private symbols of aiortc, aioice and pylibsrtp.

aiortc gives us SDP, ICE (aioice), the DTLS handshake and SRTP keys; on the fast
path our own sender (send/) replaces its media send path. Nothing here changes aiortc when
imported: `install()` does, once, at start-up (app.py), and says what and why.
"""

from __future__ import annotations

from appliance.rtc.diagnose import Failure, why_failed
from appliance.rtc.ingest import IngestAudio, IngestVideo
from appliance.rtc.internals import FEEDBACK, STRAY, install
from appliance.rtc.negotiate import (
    accept_answer,
    add_candidates,
    answer,
    choose_h264_format,
    close_quietly,
    ice_configuration,
    offer,
    receive,
)
from appliance.rtc.viewer import AiortcVideo, FastAudio, FastVideo, deliver_feedback

__all__ = [
    "FEEDBACK",
    "STRAY",
    "AiortcVideo",
    "FastAudio",
    "FastVideo",
    "Failure",
    "IngestAudio",
    "IngestVideo",
    "accept_answer",
    "add_candidates",
    "answer",
    "choose_h264_format",
    "close_quietly",
    "deliver_feedback",
    "ice_configuration",
    "install",
    "offer",
    "receive",
    "why_failed",
]
