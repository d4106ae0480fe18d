"""The core: bytes in, bytes out, standard library only (tests/test_imports.py enforces it).

Access units and Opus packets (media.py, h264.py), packetized once (packetizer.py) into a
preallocated ring (ring.py) per track; the stream (stream.py, audio.py) hands each one to every
viewer through one fan-out (fanout.py); the registry of streams (streams.py); RTP and RTCP bytes
(rtp.py), SDP text (sdp.py), camera modes and controls (videomode.py, controls.py), counters
(stats.py) and the errors every room raises (errors.py).
"""
