"""An independent WHIP peer for tests, both ways, on GStreamer's webrtcbin.

    /usr/bin/python3 tests/e2e/gst_whip.py serve PORT TOKEN    # a WHIP endpoint that decodes
    /usr/bin/python3 tests/e2e/gst_whip.py publish URL TOKEN   # a WHIP publisher (x264enc)

Runs on Debian's system Python (python3-gi and the GStreamer 1.22 packages; see tests/run.sh),
not in our virtual environment, and imports nothing of ours: the WebRTC stack, SDP, ICE, DTLS
(with an RSA certificate, unlike browsers), SRTP, packetization, encoding and decoding are all
GStreamer's. The HTTP parts are the smallest WHIP (RFC 9725): the endpoint takes POST /whip with
the bearer token (201 + Location) and DELETE of the session, one session at a time, and tells the
test what it decoded at GET /stats ({"frames", "width", "height"}); the publisher POSTs its offer
(ICE candidates gathered first), applies the answer, prints "published", and sends until killed,
answering keyframe requests (PLI) through x264enc.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

Gst.init(None)


class Session:
    """One publisher: webrtcbin, and a decoding branch per incoming video pad."""

    def __init__(self, offer: str) -> None:
        self.frames = 0
        self.audio_buffers = 0
        self.width = 0
        self.height = 0
        self.answer: str | None = None
        self._answered = threading.Event()
        self.pipeline = Gst.Pipeline.new("whip")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "recv")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipeline.add(self.webrtc)
        self.webrtc.connect("pad-added", self._on_pad)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self.pipeline.set_state(Gst.State.PLAYING)
        _, sdp = GstSdp.SDPMessage.new_from_text(offer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, sdp)
        promise = Gst.Promise.new_with_change_func(self._on_remote_set, None)
        self.webrtc.emit("set-remote-description", description, promise)

    def _on_remote_set(self, promise: Gst.Promise, _: object) -> None:
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            sys.stderr.write(f"gst-whip: the offer was refused: {reply.get_value('error')}\n")
        promise = Gst.Promise.new_with_change_func(self._on_answer, None)
        self.webrtc.emit("create-answer", None, promise)

    def _on_answer(self, promise: Gst.Promise, _: object) -> None:
        reply = promise.get_reply()
        if reply is None or not reply.has_field("answer"):
            sys.stderr.write(f"gst-whip: no answer: {reply and reply.to_string()}\n")
            self._answered.set()
            return
        answer = reply.get_value("answer")
        self.webrtc.emit("set-local-description", answer, Gst.Promise.new())

    def _on_gathering(self, element: Gst.Element, _: object) -> None:
        if (
            element.get_property("ice-gathering-state")
            == GstWebRTC.WebRTCICEGatheringState.COMPLETE
        ):
            self.answer = element.get_property("local-description").sdp.as_text()
            self._answered.set()

    def wait_answer(self, timeout: float) -> str | None:
        self._answered.wait(timeout)
        return self.answer

    def _on_pad(self, _: Gst.Element, pad: Gst.Pad) -> None:
        if pad.direction != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        if caps.get_structure(0).get_value("media") == "audio":
            audio = Gst.parse_bin_from_description(
                "rtpopusdepay ! opusdec ! fakesink name=sink signal-handoffs=true sync=false", True
            )
            audio.get_by_name("sink").connect("handoff", self._on_audio)
            self.pipeline.add(audio)
            audio.sync_state_with_parent()
            pad.link(audio.get_static_pad("sink"))
            return
        branch = Gst.parse_bin_from_description(
            "rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! "
            "fakesink name=sink signal-handoffs=true sync=false",
            True,
        )
        branch.get_by_name("sink").connect("handoff", self._on_frame)
        self.pipeline.add(branch)
        branch.sync_state_with_parent()
        pad.link(branch.get_static_pad("sink"))

    def _on_audio(self, sink: Gst.Element, buffer: Gst.Buffer, pad: Gst.Pad) -> None:
        self.audio_buffers += 1

    def _on_frame(self, sink: Gst.Element, buffer: Gst.Buffer, pad: Gst.Pad) -> None:
        self.frames += 1
        structure = pad.get_current_caps().get_structure(0)
        self.width = structure.get_value("width")
        self.height = structure.get_value("height")

    def close(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)


class State:
    session: Session | None = None
    closed_frames = 0


def make_handler(token: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {token}":
                return True
            self._reply(401, b"unknown token\n", {"WWW-Authenticate": 'Bearer realm="gst"'})
            return False

        def do_POST(self) -> None:
            if self.path != "/whip" or not self._authorized():
                if self.path != "/whip":
                    self._reply(404)
                return
            if self.headers.get("Content-Type") != "application/sdp":
                self._reply(415)
                return
            offer = self.rfile.read(int(self.headers["Content-Length"])).decode()
            if State.session is not None:
                State.session.close()
            State.session = Session(offer)
            answer = State.session.wait_answer(10)
            if answer is None:
                self._reply(500, b"no answer\n")
                return
            self._reply(
                201,
                answer.encode(),
                {"Content-Type": "application/sdp", "Location": "/whip/session"},
            )

        def do_DELETE(self) -> None:
            if not self._authorized():
                return
            if self.path != "/whip/session" or State.session is None:
                self._reply(404)
                return
            State.closed_frames += State.session.frames
            State.session.close()
            State.session = None
            self._reply(200)

        def do_GET(self) -> None:
            s = State.session
            stats = {
                "session": s is not None,
                "frames": s.frames if s else 0,
                "audio_buffers": s.audio_buffers if s else 0,
                "width": s.width if s else 0,
                "height": s.height if s else 0,
                "closed_frames": State.closed_frames,
            }
            self._reply(200, json.dumps(stats).encode(), {"Content-Type": "application/json"})

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write("gst-whip: " + format % args + "\n")

    return Handler


PUBLISH_PIPELINE = (
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=300 bitrate=1000 ! "
    "video/x-h264,profile=constrained-baseline ! rtph264pay config-interval=-1 pt=102 ! "
    "application/x-rtp,media=video,encoding-name=H264,payload=102 ! "
    "webrtcbin name=send bundle-policy=max-bundle"
)


class Publisher:
    """Offers H.264 from videotestsrc; on "negotiation-needed", gathers, POSTs, applies."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.pipeline = Gst.parse_launch(PUBLISH_PIPELINE)
        self.webrtc = self.pipeline.get_by_name("send")
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self._posted = False
        self.pipeline.set_state(Gst.State.PLAYING)

    def _on_negotiation_needed(self, element: Gst.Element) -> None:
        transceiver = element.emit("get-transceiver", 0)
        transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        promise = Gst.Promise.new_with_change_func(self._on_offer, None)
        element.emit("create-offer", None, promise)

    def _on_offer(self, promise: Gst.Promise, _: object) -> None:
        reply = promise.get_reply()
        if reply is None or not reply.has_field("offer"):
            sys.stderr.write(f"gst-whip: no offer: {reply and reply.to_string()}\n")
            return
        offer = reply.get_value("offer")
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def _on_gathering(self, element: Gst.Element, _: object) -> None:
        state = element.get_property("ice-gathering-state")
        if state != GstWebRTC.WebRTCICEGatheringState.COMPLETE or self._posted:
            return
        self._posted = True
        offer = element.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(
            self.url,
            data=offer.encode(),
            method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201, response.status
            answer = response.read().decode()
        _, sdp = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        element.emit("set-remote-description", description, Gst.Promise.new())
        sys.stdout.write("published\n")
        sys.stdout.flush()


def main() -> None:
    mode = sys.argv[1]
    loop = GLib.MainLoop()
    if mode == "publish":
        publisher = Publisher(sys.argv[2], sys.argv[3])
        loop.run()
        publisher.pipeline.set_state(Gst.State.NULL)
        return
    port, token = int(sys.argv[2]), sys.argv[3]
    threading.Thread(target=loop.run, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(token))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
