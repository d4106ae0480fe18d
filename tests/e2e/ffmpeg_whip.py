"""FFmpeg's own WHIP muxer as a publisher, in a process of its own (PyAV holds the GIL while the
muxer does its HTTP, ICE and DTLS, so it cannot share an event loop with the daemon).

    python tests/e2e/ffmpeg_whip.py URL SECONDS [--token T] [--cert C --key K] [--audio]
    python tests/e2e/ffmpeg_whip.py rtp://127.0.0.1:PORT SECONDS --rtp   # plain RTP, video only

FFmpeg 8.1 inside PyAV's wheels does the WHIP POST, ICE, DTLS (GnuTLS) and SRTP itself; we only
hand it packets from libx264 (Baseline, no B-frames, as its WHIP muxer requires) and libopus.
640x360 at 30 fps, each picture a flat grey whose level steps by 8 per frame; a 1 kHz tone.
Prints "published N" after the muxer's close, which sends the WHIP DELETE. With --rtp, FFmpeg's
RTP muxer packetizes the same video (RFC 6184, 1200-byte packets) to a UDP port instead.
"""

from __future__ import annotations

import argparse
import fractions
import sys
import time

import av
import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--token")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--audio", action="store_true")
    parser.add_argument("--rtp", action="store_true")
    args = parser.parse_args()
    options = {}
    if args.token:
        options["authorization"] = args.token
    if args.cert:
        options["cert_file"], options["key_file"] = args.cert, args.key
    av.logging.set_level(av.logging.ERROR)
    try:
        if args.rtp:
            out = av.open(args.url, mode="w", format="rtp", options={"pkt_size": "1200"})
        else:
            out = av.open(args.url, mode="w", format="whip", options=options)
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        video.options = {"profile": "baseline", "tune": "zerolatency", "bf": "0", "g": "30"}
        audio = out.add_stream("libopus", rate=48000) if args.audio else None
        if audio is not None:
            audio.layout = "stereo"
        start = time.monotonic()
        frames = samples = 0
        while time.monotonic() - start < args.seconds:
            picture = np.full((360, 640, 3), (frames * 8) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = frames, fractions.Fraction(1, 30)
            for packet in video.encode(frame):
                out.mux(packet)
            frames += 1
            if audio is not None:
                t = (samples + np.arange(1600)) / 48000
                tone = (np.sin(2 * np.pi * 1000 * t) * 8000).astype(np.int16)
                sound = av.AudioFrame.from_ndarray(
                    np.repeat(tone[None, :], 2, axis=0).reshape(1, -1),
                    format="s16",
                    layout="stereo",
                )
                sound.sample_rate, sound.pts = 48000, samples
                samples += 1600
                for packet in audio.encode(sound):
                    out.mux(packet)
            time.sleep(max(0.0, start + frames / 30 - time.monotonic()))
        out.close()
    except (OSError, av.FFmpegError) as e:
        sys.stderr.write(f"ffmpeg whip failed: {e}\n")
        return 1
    sys.stdout.write(f"published {frames}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
