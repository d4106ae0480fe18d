"""The aiortc internals rtc.py relies on. When an aiortc upgrade moves them, this fails first."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aiortc
from aiortc import RTCRtpSender
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import is_codec_compatible

from appliance import rtc


def test_aiortc_version_is_the_tested_range() -> None:
    major, minor = (int(x) for x in version("aiortc").split(".")[:2])
    # 1.16 (Python >= 3.11) and 1.15 (the newest for Python 3.10: JetPack 6) both run this suite.
    assert (major, minor) in ((1, 15), (1, 16)), "rtc.py is checked on aiortc 1.15 and 1.16 only"
    assert aiortc.__name__ == "aiortc"


def test_pli_and_fir_reach_send_keyframe() -> None:
    # rtc.answer() points RTCRtpSender._send_keyframe at Stream.request_keyframe.
    assert callable(RTCRtpSender._send_keyframe)
    source = inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    assert "RTCP_PSFB_PLI" in source and "RTCP_PSFB_FIR" in source
    assert "self._send_keyframe()" in source


def test_h264_capabilities_are_baselines_plus_the_profiles_rtc_adds() -> None:
    # rtc._codec_preferences picks among these by profile; the answer's level is ours. aiortc has
    # the two Baselines at 99 and 101; rtc._accept_more_h264_profiles appends Main and High at
    # 103 and 105, which must be free.
    rtc._accept_more_h264_profiles()
    h264 = {
        c.parameters["profile-level-id"]: c.payloadType
        for c in CODECS["video"]
        if c.mimeType == "video/H264"
    }
    assert h264 == {"42001f": 99, "42e01f": 101, "4d001f": 103, "64001f": 105}
    pts = [c.payloadType for c in CODECS["video"]]
    assert len(pts) == len(set(pts))
    assert "parse_h264_profile_level_id" in inspect.getsource(is_codec_compatible)


async def test_sender_internals_the_fast_path_replaces() -> None:
    # rtc._take_over_sender replaces these per instance, and sets the events stop() waits on.
    sender = RTCRtpSender("video", transport=_dtls_transport())
    for name in ("_run_rtp", "_run_rtcp", "_handle_rtcp_packet", "send", "_ssrc", "_rtx_ssrc"):
        assert hasattr(sender, name), name
    for event in ("rtp_started", "rtp_exited", "rtcp_started", "rtcp_exited"):
        assert hasattr(sender, f"_RTCRtpSender__{event}"), event
    assert "self._run_rtp(" in inspect.getsource(RTCRtpSender.send)
    assert "self._run_rtcp()" in inspect.getsource(RTCRtpSender.send)
    stop = inspect.getsource(RTCRtpSender.stop)
    assert "__rtp_started.wait()" in stop and "__rtp_exited.wait()" in stop


def _dtls_transport() -> object:
    from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport

    return RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()]
    )


async def test_transport_internals_the_fast_path_reads() -> None:
    from aioice.ice import CandidatePair, Connection
    from aiortc import RTCDtlsTransport

    transport = _dtls_transport()
    assert hasattr(transport, "_tx_srtp") and callable(RTCDtlsTransport._send_rtp)
    assert hasattr(transport.transport, "_connection")
    assert isinstance(transport.transport._connection, Connection)
    assert hasattr(transport.transport._connection, "_nominated")
    pair_source = inspect.getsource(CandidatePair)
    assert "self.protocol = protocol" in pair_source and "def remote_addr" in pair_source


def test_pylibsrtp_internals_srtp_py_uses() -> None:
    from pylibsrtp import Session
    from pylibsrtp._binding import ffi, lib

    assert callable(lib.srtp_protect) and ffi.sizeof("int") == 4
    assert hasattr(Session(), "_srtp")
    assert "self._srtp = " in inspect.getsource(Session.__init__)


async def test_receiver_internals_whip_ingest_replaces() -> None:
    # rtc.receive() replaces the receiver's decoder queue with an IngestVideo before it starts:
    # aiortc must put (codec, JitterFrame) there from _handle_rtp_packet, start its decoder thread
    # with that same queue in receive(), and end the thread when get() returns None.
    from aiortc import RTCRtpReceiver
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpreceiver import decoder_worker

    receiver = RTCRtpReceiver("video", _dtls_transport())
    assert hasattr(receiver, "_RTCRtpReceiver__decoder_queue")
    handle = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__decoder_queue.put((codec, encoded_frame))" in handle
    assert "self.__jitter_buffer.add(packet)" in handle
    assert "self.__decoder_queue," in inspect.getsource(RTCRtpReceiver.receive)
    assert "if task is None:" in inspect.getsource(decoder_worker)
    assert set(inspect.signature(JitterFrame).parameters) == {"data", "timestamp"}
    assert callable(receiver._send_rtcp_pli)
    assert callable(receiver.getSynchronizationSources)


def test_dtls_context_rtc_widens() -> None:
    # rtc._accept_rsa_dtls_peers wraps RTCCertificate._create_ssl_context: it must return the
    # pyOpenSSL context whose cipher list aiortc sets (ECDSA suites only).
    from aiortc import RTCCertificate
    from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80
    from OpenSSL import SSL

    context = RTCCertificate.generateCertificate()._create_ssl_context([SRTP_AES128_CM_SHA1_80])
    assert isinstance(context, SSL.Context)
    assert getattr(RTCCertificate._create_ssl_context, "wider_ciphers", False)
    connection = SSL.Connection(context)
    ciphers = connection.get_cipher_list()
    assert "ECDHE-RSA-AES128-GCM-SHA256" in ciphers and "ECDHE-ECDSA-AES128-GCM-SHA256" in ciphers


def test_jitter_buffer_internals_the_marker_buffer_reads() -> None:
    # rtc.MarkerJitterBuffer overrides _remove_frame and reads these; the receiver keeps its
    # buffer in _RTCRtpReceiver__jitter_buffer and calls add() from _handle_rtp_packet.
    from aiortc import RTCRtpReceiver
    from aiortc.jitterbuffer import JitterBuffer

    buffer = JitterBuffer(capacity=512, is_video=True)
    for name in ("_packets", "_origin", "_capacity"):
        assert hasattr(buffer, name), name
    assert callable(buffer.remove) and callable(buffer._remove_frame)
    assert "self._remove_frame(packet.sequence_number)" in inspect.getsource(JitterBuffer.add)
    receiver = RTCRtpReceiver("video", _dtls_transport())
    assert isinstance(receiver._RTCRtpReceiver__jitter_buffer, JitterBuffer)  # type: ignore[attr-defined]
