"""`appliance probe`: what this machine has, and what `appliance serve` would pick.

Edge module: reads /proc, /sys and every /dev/videoN (opening each one briefly, never streaming),
and asks picamera2 for cameras only where picamera2 is installed. Nothing is started.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

from appliance.capture import gstreamer, picamera
from appliance.config import Config, VideoConfig
from appliance.core.errors import DeviceError
from appliance.core.videomode import pick_mode, usable
from appliance.devices import v4l2 as dev

# The GStreamer elements that decide what a pipeline source can do on this machine: NVIDIA's
# (Argus CSI cameras, NVENC), Rockchip's, VA-API, the V4L2 encoders, x264, and RTSP cameras.
GST_ELEMENTS = (
    "nvarguscamerasrc", "nvv4l2h264enc", "nvvidconv", "mpph264enc", "vah264enc", "vaapih264enc",
    "v4l2h264enc", "x264enc", "v4l2src", "rtspsrc", "rtph264depay",
)  # fmt: skip


def board() -> str:
    """The board's model (Raspberry Pi, Jetson: from the device tree), else the DMI product."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(path).read_text(errors="replace").rstrip("\x00\n ")
        except OSError:
            pass
    for path in ("/sys/class/dmi/id/product_name", "/sys/class/dmi/id/board_name"):
        try:
            return Path(path).read_text(errors="replace").strip()
        except OSError:
            pass
    return "unknown"


def video_devices() -> list[dict[str, Any]]:
    stable = dev.stable_names()
    out = []
    for node in dev.video_nodes():
        entry: dict[str, Any] = {"path": node}
        if node in stable:
            entry["stable_path"] = stable[node]
        try:
            with dev.Device(node) as d:
                caps = d.caps
                entry.update(driver=caps.driver, card=caps.card, bus=caps.bus_info)
                if caps.is_m2m:
                    coded = dev.CAPTURE_MPLANE if caps.multiplanar else dev.CAPTURE
                    raw = dev.OUTPUT_MPLANE if caps.multiplanar else dev.OUTPUT
                    entry["kind"] = "m2m"
                    entry["produces"] = [o.pixel_format for o in d.formats(coded)]
                    entry["consumes"] = [o.pixel_format for o in d.formats(raw)]
                elif caps.is_capture:
                    entry["kind"] = "capture"
                    entry["formats"] = [
                        {
                            "pixel_format": o.pixel_format,
                            "description": o.description,
                            "usable": usable(o.pixel_format),
                            "sizes": [s.describe() for s in o.sizes],
                        }
                        for o in d.formats()
                    ]
                    entry["controls"] = [c.name for c in d.controls()]
                else:
                    entry["kind"] = "other"
        except DeviceError as e:
            entry["error"] = str(e)
        out.append(entry)
    return out


def sound_cards() -> list[dict[str, Any]]:
    """ALSA capture devices, from /proc/asound (no library needed)."""
    out: list[dict[str, Any]] = []
    try:
        lines = Path("/proc/asound/pcm").read_text().splitlines()
    except OSError:
        return out
    for line in lines:  # "00-00: Loopback PCM : Loopback PCM : playback 8 : capture 8"
        m = re.match(r"(\d+)-(\d+): ([^:]*) : ([^:]*) :(.*)", line)
        if m and "capture" in m.group(5):
            card, device = int(m.group(1)), int(m.group(2))
            out.append({"device": f"hw:{card},{device}", "name": m.group(3).strip(), "card": card})
    return out


def encoders(video_nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [
        {"name": f"V4L2 M2M {v.get('card', '')}".strip(), "device": v["path"], "hardware": True}
        for v in video_nodes
        if v.get("kind") == "m2m" and "H264" in v.get("produces", [])
    ]
    for path in ("/dev/v4l2-nvenc", "/dev/nvhost-msenc"):
        if os.path.exists(path):
            found.append(
                {"name": "Jetson NVENC (libv4l2 plugin)", "device": path, "hardware": True}
            )
    try:
        import av

        av.codec.Codec("libx264", "w")
        found.append({"name": "libx264 (PyAV)", "device": "", "hardware": False})
    except Exception:  # a PyAV build without libx264
        pass
    return found


def selections(config: Config) -> dict[str, dict[str, Any]]:
    """What serve would run for each camera, by name: distinct devices, in config order, as the
    daemon's supervisors claim them (sources.Claims)."""
    from appliance.capture.sources import Claims, claim

    taken = Claims(list(config.cameras)).taken
    out = {}
    for i, video in enumerate(config.cameras):
        out[video.name] = selection(config, video, frozenset(taken), audio=i == 0)
        if "source" in out[video.name]:
            taken.add(claim(out[video.name]["source"], out[video.name].get("device", "")))
    return out


def selection(
    config: Config,
    video: VideoConfig | None = None,
    taken: frozenset[str] = frozenset(),
    audio: bool = True,
) -> dict[str, Any]:
    """What serve would run for one camera (the first by default)."""
    from appliance.capture.sources import resolve

    video = video if video is not None else config.cameras[0]
    try:
        kind, device = resolve(video, taken)
    except DeviceError as e:
        return {"error": str(e)}
    out: dict[str, Any] = {"source": kind}
    if kind == "v4l2":
        out["device"] = device
        try:
            with dev.Device(device) as d:
                mode, note = pick_mode(
                    d.formats(),
                    video.width,
                    video.height,
                    video.fps,
                    video.pixel_format,
                    device,
                    video.source == "auto",
                )
            if note:
                out["note"] = note
            out["mode"] = f"{mode.pixel_format} {mode.width}x{mode.height}@{float(mode.fps):g}"
            out["encoder"] = (
                "none (camera H.264 passed through)" if mode.kind == "passthrough" else ""
            )
        except DeviceError as e:
            out["error"] = str(e)
    elif kind == "testsrc":
        out["mode"] = f"test pattern {video.width}x{video.height}@{video.fps}"
    if not out.get("encoder") and kind != "picamera2":
        from appliance.encoders.v4l2m2m import is_h264_encoder

        m2m = video.encoder != "libx264" and is_h264_encoder(video.m2m_device)
        out["encoder"] = f"V4L2 M2M {video.m2m_device}" if m2m else "libx264"
    if kind == "picamera2":
        out["device"] = f"camera {device or 0}"
    if audio:  # the daemon's audio goes with its first camera
        from appliance.capture.sources import resolve_audio

        audio_kind, why = resolve_audio(config, kind)
        out["audio"] = f"{audio_kind} ({why})"
    return out


def probe(config: Config) -> dict[str, Any]:
    videos = video_devices()
    cameras = selections(config)
    return {
        "board": board(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "video_devices": videos,
        "picamera2": {"installed": picamera.available(), "cameras": picamera.cameras()},
        "encoders": encoders(videos),
        "gstreamer": gstreamer.available_elements(GST_ELEMENTS),
        "sound_capture": sound_cards(),
        "selected": cameras[config.cameras[0].name],
        "cameras": cameras,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"board:    {report['board']} ({report['machine']}, Linux {report['kernel']}, "
        f"Python {report['python']})",
        "",
        "video devices:",
    ]
    for v in report["video_devices"]:
        name = v.get("card", "?")
        head = f"  {v['path']}  {name} [{v.get('driver', '?')}] {v.get('kind', '')}"
        lines.append(head + (f"  ({v['stable_path']})" if "stable_path" in v else ""))
        if "error" in v:
            lines.append(f"      error: {v['error']}")
        formats = v.get("formats", [])
        groups: dict[str, list[str]] = {}
        for f in formats:
            if f["usable"]:
                groups.setdefault(", ".join(f["sizes"]), []).append(f["pixel_format"])
        for sizes, names in groups.items():
            lines.append(f"      {'/'.join(names)}: {sizes}")
        others = sum(1 for f in formats if not f["usable"])
        if others:
            lines.append(f"      (and {others} formats that cannot be streamed)")
        if v.get("controls"):
            lines.append(f"      controls: {', '.join(v['controls'])}")
        if v.get("kind") == "m2m":
            lines.append(f"      {'/'.join(v['consumes'])} -> {'/'.join(v['produces'])}")
    if not report["video_devices"]:
        lines.append("  none")
    pc = report["picamera2"]
    lines += ["", f"picamera2: {'installed' if pc['installed'] else 'not installed'}"]
    lines += [f"  camera {i}: {c.get('Model', c)}" for i, c in enumerate(pc["cameras"])]
    lines += ["", "H.264 encoders:"]
    lines += [
        f"  {e['name']}{'  ' + e['device'] if e['device'] else ''}" for e in report["encoders"]
    ] or ["  none"]
    found = [name for name, there in report["gstreamer"].items() if there]
    lines += ["", 'GStreamer (video.source = "gstreamer"):']
    if not report["gstreamer"]:
        lines.append(f"  not available from Python: install {gstreamer.NEEDS}")
    else:
        lines.append(f"  {', '.join(found) or 'none of the elements that matter here'}")
    lines += ["", "sound capture:"]
    lines += [f"  {s['device']}  {s['name']}" for s in report["sound_capture"]] or ["  none"]
    for name, sel in report["cameras"].items():
        several = len(report["cameras"]) > 1
        lines += ["", f"serve would use for camera {name}:" if several else "serve would use:"]
        lines += [f"  {k}: {v}" for k, v in sel.items() if v]
    return "\n".join(lines)
