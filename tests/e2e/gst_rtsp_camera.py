"""An IP camera for tests: GStreamer's own RTSP server (gst-rtsp-server) with an H.264 test picture.

    /usr/bin/python3 tests/e2e/gst_rtsp_camera.py PORT    # rtsp://127.0.0.1:PORT/cam

Runs on Debian's system Python (python3-gi, gir1.2-gst-rtsp-server-1.0; see tests/run.sh) and
imports nothing of ours. x264enc makes a keyframe every 30 pictures (a camera's own interval);
the stream is shared by every client. Prints "ready" once it listens, and serves until killed.
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30"
    " ! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {sys.argv[1]}")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
