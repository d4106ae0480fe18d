"""RTSP out (RFC 2326) for NVRs, ffmpeg and VLC: the server and its connections (server.py). The
messages, transports and SDP are in core/rtsp.py; each reader's track is a plain-RTP sink of the
stream's fan-out (send/plain.py), so RTSP readers share the one encode and packetization."""
