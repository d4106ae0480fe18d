from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("appliance ")


def test_invalid_config_is_refused_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[video]\nfps = 500\n")
    out = run("serve", "--config", str(path))
    assert out.returncode == 2
    assert out.stderr.strip() == "appliance: config: video.fps: must be between 1 and 120; got 500"


def test_invalid_environment_is_refused_with_the_key() -> None:
    out = run("serve", env={"APPLIANCE_HTTP_PORT": "eighty", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert "config: http.port: must be an integer, got 'eighty'" in out.stderr


def test_serve_answers_and_stops_cleanly_on_sigterm() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            "APPLIANCE_VIDEO_WIDTH": "320",
            "APPLIANCE_VIDEO_HEIGHT": "240",
            "PATH": "/usr/bin:/bin",
        },
    )
    try:
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(0.1)
        assert body == "ok\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "serving stream 'cam'" in err and "stopping" in err


def test_probe_reports_the_machine_as_json() -> None:
    out = run("probe", "--json", env={**os.environ, "APPLIANCE_AUDIO_SOURCE": "testsrc"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) >= {"board", "video_devices", "encoders", "sound_capture", "selected"}
    assert "libx264 (PyAV)" in [e["name"] for e in report["encoders"]]
    # Debian's GStreamer (tests/packages.txt) has x264enc and rtspsrc, and no NVIDIA elements.
    gst = report["gstreamer"]
    assert gst["x264enc"] and gst["rtspsrc"] and not gst["nvv4l2h264enc"], gst
    cameras = [v for v in report["video_devices"] if v.get("kind") == "capture"]
    if not cameras:  # this machine (CI): nothing to capture, so serve would run the test pattern
        assert report["selected"] == {
            "source": "testsrc",
            "mode": "test pattern 1280x720@30",
            "encoder": "libx264",
            "audio": "testsrc (configured)",
        }


def test_probe_prints_for_people() -> None:
    out = run("probe")
    assert out.returncode == 0, out.stderr
    for heading in (
        "board:",
        "video devices:",
        "H.264 encoders:",
        'GStreamer (video.source = "gstreamer"):',
        "sound capture:",
        "serve would use:",
    ):
        assert heading in out.stdout
