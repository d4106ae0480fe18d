from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from appliance import config
from appliance.config import Config, IceServer
from appliance.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_defaults_without_file_or_environment() -> None:
    c = config.load(None, env={})
    assert c == Config()
    assert c.webrtc.ice_servers == ()  # never a public STUN server by default
    assert (c.video.width, c.video.height, c.video.fps) == (1280, 720, 30)


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[video]\nwidth = 640\nheight = 480\n[http]\nport = 9000\n")
    env = {"APPLIANCE_VIDEO_WIDTH": "800", "APPLIANCE_LOG_LEVEL": "debug", "HOME": "/root"}
    c = config.load(path, env=env, overrides={"http.port": 9100})
    assert (c.video.width, c.video.height) == (800, 480)
    assert c.http.port == 9100
    assert c.log_level == "debug"


def test_environment_lists_and_ice_servers() -> None:
    env = {
        "APPLIANCE_WEBRTC_ICE_SERVERS": "stun:stun.lan:3478, turn:turn.lan:3478",
        "APPLIANCE_HTTP_CORS_ORIGINS": "https://a.example,https://b.example",
    }
    c = config.load(None, env=env)
    assert c.webrtc.ice_servers == (
        IceServer(urls=("stun:stun.lan:3478",)),
        IceServer(urls=("turn:turn.lan:3478",)),
    )
    assert c.http.cors_origins == ("https://a.example", "https://b.example")


def test_ice_server_tables_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        '[webrtc]\nice_servers = ["stun:s.lan", '
        '{ urls = "turn:t.lan", username = "u", credential = "p" }]\n'
    )
    c = config.load(path, env={})
    assert c.webrtc.ice_servers[1] == IceServer(urls=("turn:t.lan",), username="u", credential="p")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[video]\nwidht = 3\n",
            "config: video.widht: unknown key; known keys here: bitrate, controls, device, encoder,",
        ),
        ("[video]\nwidth = 'big'\n", "config: video.width: must be an integer, got 'big'"),
        ("[video]\nwidth = 641\n", "config: video.width: must be even (4:2:0 chroma); got 641"),
        ("[video]\nfps = 0\n", "config: video.fps: must be between 1 and 120; got 0"),
        (
            "[video]\nprofile = 'extended'\n",
            "config: video.profile: must be one of constrained-baseline",
        ),
        (
            "[video]\nsource = 'webcam'\n",
            "config: video.source: must be one of auto, testsrc, v4l2, picamera2, gstreamer; got 'webcam'",
        ),
        (
            "[video]\nsource = 'gstreamer'\n",
            'config: video.pipeline: is needed with source = "gstreamer"',
        ),
        (
            "[video]\nsource = 'gstreamer'\npipeline = 'v4l2src ! x264enc ! appsink'\n",
            "config: video.pipeline: ends where H.264 comes out: the daemon adds h264parse",
        ),
        (
            "[video]\ndevice = 'video0'\n",
            'config: video.device: must be "auto", a /dev path, or with source = "picamera2"',
        ),
        (
            "[video]\npixel_format = 'yuyv'\n",
            "config: video.pixel_format: must be one of auto, H264, MJPG",
        ),
        ("[http]\nport = 70000\n", "config: http.port: must be between 0 and 65535; got 70000"),
        ("[http]\nport = true\n", "config: http.port: must be an integer, got True"),
        ("[stream]\nname = 'a b'\n", "config: stream.name: a stream name is 1 to 64 letters"),
        ("[stream]\nname = 'api'\n", "config: stream.name: 'api' is reserved for the HTTP API"),
        ("video = 3\n", "config: video: must be a table"),
        (
            "[webrtc]\nice_servers = ['stun.l.google.com:19302']\n",
            "config: webrtc.ice_servers[0].urls: must start with stun:",
        ),
        ("log_level = 'loud'\n", "config: log_level: must be one of debug, info, warning, error"),
        ("[[camera]]\nwidth = 640\n", "config: camera[0].name: a camera needs a name"),
        ('[[camera]]\nname = "api"\n', "config: camera[0].name: 'api' is reserved"),
        (
            '[[camera]]\nname = "a"\n[[camera]]\nname = "a"\n',
            "config: camera[1].name: two cameras are called 'a'",
        ),
        ('[[camera]]\nname = "a"\nwidth = 641\n', "config: camera[0].width: must be even"),
        (
            '[[camera]]\nname = "a"\ndevice = "/dev/video0"\n'
            '[[camera]]\nname = "b"\ndevice = "/dev/video0"\n',
            "config: camera: two cameras name the same device /dev/video0",
        ),
        (
            '[video]\nwidth = 640\n[[camera]]\nname = "a"\n',
            "config: video: describes the one camera (from [video], APPLIANCE_VIDEO_* or --source",
        ),
        (
            '[[camera]]\nname = "a"\ncontrols = {brightness = [1]}\n',
            "config: camera[0].controls.brightness: must be an integer, true or false, or a text",
        ),
        ('[[camera]]\nname = "a"\ncontrols = 3\n', "config: camera[0].controls: must be a table"),
    ],
)
def test_refusals_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(path, env={})
    assert str(e.value).startswith(message)


def test_environment_refusal_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^config: video.fps: must be an integer, got 'fast'$"):
        config.load(None, env={"APPLIANCE_VIDEO_FPS": "fast"})


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[video\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(broken, env={})


def _keys(cls: type, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            keys |= _keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_example_file_documents_every_key_with_its_default() -> None:
    text = config.EXAMPLE_PATH.read_text()
    example = _flatten(tomllib.loads(text))
    assert set(example) == _keys(Config)
    assert config.load(config.EXAMPLE_PATH, env={}) == Config()
    # every key line has a comment line just above it (or above its group)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            above = [x for x in lines[max(0, i - 3) : i] if x.startswith("#")]
            assert above, f"no comment above: {line}"


def test_systemd_credentials_are_merged_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text('[webrtc]\nice_servers = ["stun:stun.example.net"]\n[stream]\nname = "door"\n')
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "turn.toml").write_text(
        '[webrtc]\nice_servers = [{urls = "turn:turn.example.net", username = "cam", '
        'credential = "s3cret"}]\n'
    )
    (creds / "notes.txt").write_text("not TOML, not read")
    c = config.load(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert c.webrtc.ice_servers == (IceServer(("turn:turn.example.net",), "cam", "s3cret"),)
    assert c.stream.name == "door"  # the rest of the file stands


def test_camera_tables_describe_several_cameras(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text(
        '[[camera]]\nname = "front"\nsource = "picamera2"\ndevice = "0"\n'
        '[[camera]]\nname = "desk"\ndevice = "/dev/video4"\nwidth = 640\nheight = 360\n'
        "controls = {brightness = 140, white_balance_automatic = false}\n"
    )
    c = config.load(path, env={})
    assert [cam.name for cam in c.cameras] == ["front", "desk"]
    assert (c.cameras[0].source, c.cameras[0].device) == ("picamera2", "0")
    assert (c.cameras[1].width, c.cameras[1].height, c.cameras[1].fps) == (640, 360, 30)
    assert c.cameras[1].controls == {"brightness": 140, "white_balance_automatic": False}


def test_video_is_the_one_camera_shorthand(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text(
        '[video]\nwidth = 640\nheight = 360\ncontrols = {contrast = 3}\n[stream]\nname = "door"\n'
    )
    [camera] = config.load(path, env={}).cameras
    assert (camera.name, camera.width, camera.height) == ("door", 640, 360)
    assert camera.controls == {"contrast": 3}
