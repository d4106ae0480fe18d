"""The aiortc internals rtc.py relies on. When an aiortc upgrade moves them, this fails first."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aiortc
from aiortc import RTCRtpSender
from aiortc.codecs import CODECS


def test_aiortc_version_is_the_tested_range() -> None:
    major, minor = (int(x) for x in version("aiortc").split(".")[:2])
    assert (major, minor) == (1, 16), "rtc.py was written against aiortc 1.16: re-check it"
    assert aiortc.__name__ == "aiortc"


def test_pli_and_fir_reach_send_keyframe() -> None:
    # rtc.answer() points RTCRtpSender._send_keyframe at Stream.request_keyframe.
    assert callable(RTCRtpSender._send_keyframe)
    source = inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    assert "RTCP_PSFB_PLI" in source and "RTCP_PSFB_FIR" in source
    assert "self._send_keyframe()" in source


def test_h264_capabilities_are_baseline_and_constrained_baseline() -> None:
    # rtc._codec_preferences picks among these by profile; the answer's level is ours.
    plids = {
        c.parameters["profile-level-id"] for c in CODECS["video"] if c.mimeType == "video/H264"
    }
    assert plids == {"42001f", "42e01f"}
