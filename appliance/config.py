"""One typed configuration tree: defaults in code, then a TOML file, then the `*.toml` credentials
systemd passes in `$CREDENTIALS_DIRECTORY`, then `APPLIANCE_*` variables.

Every refusal is a ConfigError that names the key (`video.width`) and what it accepts. The example
file `appliance.example.toml` beside this module documents every key; a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.core.errors import ConfigError
from appliance.core.streams import name_problem
from appliance.core.videomode import COMPRESSED_FORMATS, PASSTHROUGH_FORMATS, RAW_FORMATS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ENV_PREFIX = "APPLIANCE_"
DEFAULT_PATH = Path("/etc/appliance/appliance.toml")
EXAMPLE_PATH = Path(__file__).with_name("appliance.example.toml")

VIDEO_SOURCES = ("auto", "testsrc", "v4l2", "picamera2", "gstreamer")
VIDEO_ENCODERS = ("auto", "libx264", "v4l2m2m")
AUDIO_SOURCES = ("auto", "none", "alsa", "testsrc")
AUDIO_RATES = (8000, 12000, 16000, 24000, 44100, 48000)
OPUS_FRAME_MS = (10, 20, 40, 60)
PIXEL_FORMATS = ("auto", *PASSTHROUGH_FORMATS, *COMPRESSED_FORMATS, *RAW_FORMATS)
H264_PROFILES = ("constrained-baseline", "baseline", "main", "high")
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
LOG_LEVELS = ("debug", "info", "warning", "error")
RIGHTS = ("read", "publish", "admin")
SENDERS = ("fast", "aiortc")
WHIP_CONFLICTS = ("reject", "replace")


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = ""  # every address, IPv4 and IPv6
    port: int = 8080
    cors_origins: tuple[str, ...] = ()
    web_root: str = ""
    sessions_per_minute: float = 30.0
    sessions_burst: int = 10
    idle_timeout: float = 15.0
    max_connections_per_client: int = 32
    tls_cert: str = ""
    tls_key: str = ""
    tls_self_signed: bool = False
    state_dir: str = ""


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""
    # TURN's shared-secret scheme (coturn's use-auth-secret, static-auth-secret): the daemon mints
    # a credential per session that expires after `lifetime` seconds; the secret never leaves it.
    secret: str = ""
    lifetime: int = 86400


@dataclass(frozen=True, slots=True)
class WebRTCConfig:
    ice_servers: tuple[IceServer, ...] = ()
    connect_timeout: float = 10.0
    sender: str = "fast"
    interfaces: tuple[str, ...] = ()
    half_open_per_client: int = 4


@dataclass(frozen=True, slots=True)
class VideoConfig:
    source: str = "auto"
    device: str = "auto"
    pixel_format: str = "auto"
    encoder: str = "auto"
    m2m_device: str = "/dev/video11"
    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate: int = 2_000_000
    gop: int = 60
    profile: str = "constrained-baseline"
    preset: str = "veryfast"
    pipeline: str = ""  # source = "gstreamer": up to where H.264 comes out
    # Camera controls set when the camera opens ({"brightness": 140}); values set later through
    # the API are kept in the state directory and win over these.
    controls: dict[str, int | bool | str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CameraConfig(VideoConfig):
    """One `[[camera]]` table: a name (its stream's) and the keys `[video]` has."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class AudioConfig:
    source: str = "auto"
    device: str = "default"
    rate: int = 48000
    channels: int = 1
    period_ms: int = 20
    bitrate: int = 64000


@dataclass(frozen=True, slots=True)
class StreamConfig:
    name: str = "cam"
    max_viewers: int = 64
    max_viewers_total: int = 128
    max_load: float = 0.8
    keyframe_interval_min: float = 0.25
    mtu: int = 1400
    ring_packets: int = 2048


@dataclass(frozen=True, slots=True)
class Token:
    token: str
    rights: tuple[str, ...] = ("read",)
    streams: tuple[str, ...] = ("*",)
    name: str = ""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    public_read: bool = True
    tokens: tuple[Token, ...] = ()


@dataclass(frozen=True, slots=True)
class WhipConfig:
    ingest: bool = True
    on_conflict: str = "reject"
    max_streams: int = 4
    linger: float = 30.0


@dataclass(frozen=True, slots=True)
class EgressTarget:
    url: str
    token: str = ""
    stream: str = ""
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class RtspConfig:
    enabled: bool = True
    port: int = 8554
    session_timeout: float = 60.0  # a reader that sends nothing for this long is freed
    max_connections: int = 256


@dataclass(frozen=True, slots=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    webrtc: WebRTCConfig = field(default_factory=WebRTCConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    whip: WhipConfig = field(default_factory=WhipConfig)
    rtsp: RtspConfig = field(default_factory=RtspConfig)
    egress: tuple[EgressTarget, ...] = ()
    camera: tuple[CameraConfig, ...] = ()  # [[camera]] tables; none: [video] and stream.name
    log_level: str = "info"

    @property
    def cameras(self) -> tuple[CameraConfig, ...]:
        """Every camera: the `[[camera]]` tables, else the one `[video]` describes, named
        `stream.name`."""
        if self.camera:
            return self.camera
        fields = {f.name: getattr(self.video, f.name) for f in dataclasses.fields(VideoConfig)}
        return (CameraConfig(name=self.stream.name, **fields),)


def state_dir(http: HttpConfig, env: Mapping[str, str] | None = None) -> Path:
    """Where the daemon keeps what it makes: http.state_dir, else $STATE_DIRECTORY (systemd's
    StateDirectory=), else /var/lib/appliance."""
    if http.state_dir:
        return Path(http.state_dir)
    env = os.environ if env is None else env
    return Path(env.get("STATE_DIRECTORY", "/var/lib/appliance").split(":")[0])


def load(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config: defaults, then the file at `path` (if given), then `env`, then `overrides`.

    `overrides` maps dotted keys (`"http.port"`) to values, as the command line gives them.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        tree = _read_toml(path)
    env = os.environ if env is None else env
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:  # systemd's LoadCredential=: secrets kept out of the world-readable config
        for secret in sorted(Path(credentials).glob("*.toml")):
            _merge(tree, _read_toml(secret))
    for key, text in _env_items(env):
        _set_dotted(tree, key, _EnvText(text))
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    config: Config = _build(Config, tree, "")
    _validate(config)
    return config


def _merge(tree: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = value


class _EnvText(str):
    """A value from the environment: text to be parsed for the target type."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            tree: dict[str, Any] = tomllib.load(f)
            return tree
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(str(path), f"cannot be read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not UTF-8 text (byte {e.start})") from None


def _env_items(env: Mapping[str, str]) -> list[tuple[str, str]]:
    items = []
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section in SECTIONS and key:
            items.append((f"{section}.{key}", text))
        else:
            items.append((rest, text))
    return items


SECTIONS = ("http", "webrtc", "video", "audio", "stream", "auth", "whip", "rtsp")


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(key, f"{part} is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: Any, values: Any, prefix: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(prefix.rstrip("."), "must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for name in values:
        if name not in known:
            raise ConfigError(
                f"{prefix}{name}", f"unknown key; known keys here: {', '.join(sorted(known))}"
            )
    kwargs = {
        name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in values.items()
    }
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.")
    origin = typing.get_origin(tp)
    if origin is dict:  # camera controls: names to numbers, switches or menu labels
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table, e.g. {{brightness = 140}}; got {value!r}")
        for name, item in value.items():
            if not isinstance(item, (int, bool, str)):
                raise ConfigError(
                    f"{key}.{name}", f"must be an integer, true or false, or a text; got {item!r}"
                )
        return dict(value)
    if origin is tuple:
        (item_type, _) = typing.get_args(tp)
        if isinstance(value, _EnvText):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {value!r}")
        if item_type is IceServer:
            return tuple(_ice_server(item, f"{key}[{i}]") for i, item in enumerate(value))
        if dataclasses.is_dataclass(item_type):
            return tuple(_build(item_type, item, f"{key}[{i}].") for i, item in enumerate(value))
        return tuple(_coerce(item_type, item, f"{key}[{i}]") for i, item in enumerate(value))
    return _scalar(tp, value, key)


def _ice_server(value: Any, key: str) -> IceServer:
    if isinstance(value, str):
        return IceServer(urls=(value,))
    if isinstance(value, Mapping) and isinstance(value.get("urls"), str):
        value = {**value, "urls": [value["urls"]]}
    return typing.cast(IceServer, _build(IceServer, value, f"{key}."))


def _scalar(tp: Any, value: Any, key: str) -> Any:
    if isinstance(value, _EnvText):
        text = str(value)
        try:
            if tp is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            return tp(text)
        except ValueError:
            raise ConfigError(key, f"must be {_type_name(tp)}, got {text!r}") from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(key, f"must be {_type_name(tp)}, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _one_of(key: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(key, f"must be one of {', '.join(accepted)}; got {value!r}")


def _in_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(key, f"must be between {low:g} and {high:g}; got {value!r}")


def _is_host(host: str) -> bool:
    """An IP address, or a name a resolver could take (RFC 1123 labels)."""
    if host == "":
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(
        re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label) for label in labels
    )


def _validate(c: Config) -> None:
    _in_range("http.port", c.http.port, 0, 65535)
    if not _is_host(c.http.host):
        raise ConfigError("http.host", f"must be an IP address or a host name; got {c.http.host!r}")
    if c.http.state_dir and not Path(c.http.state_dir).is_absolute():
        raise ConfigError("http.state_dir", f"must be an absolute path; got {c.http.state_dir!r}")
    if c.http.state_dir and Path(c.http.state_dir).exists() and not Path(c.http.state_dir).is_dir():
        raise ConfigError("http.state_dir", f"not a directory: {c.http.state_dir}")
    for i, origin in enumerate(c.http.cors_origins):
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(
                f"http.cors_origins[{i}]",
                f'must be "*" or an origin such as "https://example.net"; got {origin!r}',
            )
    _in_range("http.idle_timeout", c.http.idle_timeout, 1, 3600)
    _in_range("http.max_connections_per_client", c.http.max_connections_per_client, 1, 100_000)
    _in_range("webrtc.half_open_per_client", c.webrtc.half_open_per_client, 1, 10_000)
    for i, name in enumerate(c.webrtc.interfaces):
        if not re.fullmatch(r"[\w.:@-]{1,15}", name):
            raise ConfigError(f"webrtc.interfaces[{i}]", f"not a network interface name: {name!r}")
    _in_range("http.sessions_per_minute", c.http.sessions_per_minute, 0.1, 100_000)
    _in_range("http.sessions_burst", c.http.sessions_burst, 1, 10_000)
    for key, path in (("http.tls_cert", c.http.tls_cert), ("http.tls_key", c.http.tls_key)):
        if path and not Path(path).is_file():
            raise ConfigError(key, f"no such file: {path}")
    if c.http.tls_key and not c.http.tls_cert:
        raise ConfigError("http.tls_key", "needs http.tls_cert too")
    if c.http.web_root and not Path(c.http.web_root).is_dir():
        raise ConfigError("http.web_root", f"not a directory: {c.http.web_root}")
    for i, server in enumerate(c.webrtc.ice_servers):
        for url in server.urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ConfigError(
                    f"webrtc.ice_servers[{i}].urls",
                    f"must start with stun:, stuns:, turn: or turns:; got {url!r}",
                )
        key = f"webrtc.ice_servers[{i}]"
        if server.secret and (server.username or server.credential):
            raise ConfigError(f"{key}.secret", "takes the place of username and credential")
        if server.secret and not all(u.startswith(("turn:", "turns:")) for u in server.urls):
            raise ConfigError(f"{key}.secret", "is for TURN servers (turn: or turns: URLs)")
        _in_range(f"{key}.lifetime", server.lifetime, 60, 30 * 86400)
    _in_range("webrtc.connect_timeout", c.webrtc.connect_timeout, 1, 600)
    _one_of("webrtc.sender", c.webrtc.sender, SENDERS)
    if c.camera and c.video != VideoConfig():
        raise ConfigError(
            "video",
            "describes the one camera (from [video], APPLIANCE_VIDEO_* or --source/--device); "
            "with [[camera]] tables, put its keys in one of them",
        )
    _validate_video("video.", c.video)
    camera_names: set[str] = set()
    for i, cam in enumerate(c.camera):
        key = f"camera[{i}]"
        problem = name_problem(cam.name) if cam.name else "a camera needs a name (its stream's)"
        if problem is not None:
            raise ConfigError(f"{key}.name", problem)
        if cam.name in camera_names:
            raise ConfigError(f"{key}.name", f"two cameras are called {cam.name!r}")
        camera_names.add(cam.name)
        _validate_video(f"{key}.", cam)
    devices = [cam.device for cam in c.cameras if cam.device != "auto"]
    for device in devices:
        if devices.count(device) > 1:
            raise ConfigError("camera", f"two cameras name the same device {device}")
    _one_of("audio.source", c.audio.source, AUDIO_SOURCES)
    if not c.audio.device:
        raise ConfigError("audio.device", 'must name an ALSA PCM, e.g. "default" or "hw:1,0"')
    if c.audio.rate not in AUDIO_RATES:
        raise ConfigError(
            "audio.rate", f"must be one of {', '.join(map(str, AUDIO_RATES))}; got {c.audio.rate}"
        )
    _in_range("audio.channels", c.audio.channels, 1, 2)
    if c.audio.period_ms not in OPUS_FRAME_MS:
        raise ConfigError(
            "audio.period_ms",
            f"must be an Opus frame length: {', '.join(map(str, OPUS_FRAME_MS))}; got "
            f"{c.audio.period_ms}",
        )
    _in_range("audio.bitrate", c.audio.bitrate, 6000, 510_000)
    problem = name_problem(c.stream.name)
    if problem is not None:
        raise ConfigError("stream.name", problem)
    _in_range("stream.max_viewers", c.stream.max_viewers, 1, 10_000)
    _in_range("stream.max_viewers_total", c.stream.max_viewers_total, 1, 10_000)
    _in_range("stream.max_load", c.stream.max_load, 0.01, 1.0)
    _in_range("rtsp.port", c.rtsp.port, 0, 65535)
    _in_range("rtsp.session_timeout", c.rtsp.session_timeout, 5, 3600)
    _in_range("rtsp.max_connections", c.rtsp.max_connections, 1, 100_000)
    _one_of("whip.on_conflict", c.whip.on_conflict, WHIP_CONFLICTS)
    _in_range("whip.max_streams", c.whip.max_streams, 0, 64)
    _in_range("whip.linger", c.whip.linger, 0, 3600)
    for i, target in enumerate(c.egress):
        key = f"egress[{i}]"
        if not target.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{key}.url", f"must be an http:// or https:// URL; got {target.url!r}"
            )
        problem = target.stream and name_problem(target.stream)
        if problem:
            raise ConfigError(f"{key}.stream", problem)
    _in_range("stream.keyframe_interval_min", c.stream.keyframe_interval_min, 0, 10)
    _in_range("stream.mtu", c.stream.mtu, 576, 9000)
    ring = c.stream.ring_packets
    if ring < 256 or ring > 65536 or ring & (ring - 1):
        raise ConfigError(
            "stream.ring_packets", f"must be a power of two from 256 to 65536; got {ring}"
        )
    _one_of("log_level", c.log_level, LOG_LEVELS)
    names = [t.name for t in c.auth.tokens if t.name]
    for i, token in enumerate(c.auth.tokens):
        key = f"auth.tokens[{i}]"
        if len(token.token) < 16:
            raise ConfigError(f"{key}.token", "must be at least 16 characters (use a random one)")
        for right in token.rights:
            _one_of(f"{key}.rights", right, RIGHTS)
        if not token.rights:
            raise ConfigError(f"{key}.rights", f"must name one or more of {', '.join(RIGHTS)}")
        if not token.streams:
            raise ConfigError(f"{key}.streams", 'must name streams, or "*" for all')
    if len(names) != len(set(names)):
        raise ConfigError("auth.tokens", "token names must be unique")
    if len({t.token for t in c.auth.tokens}) != len(c.auth.tokens):
        raise ConfigError("auth.tokens", "the same token appears twice")


def _validate_video(k: str, v: VideoConfig) -> None:
    """One camera's keys, named under `k` ("video." or "camera[1].")."""
    _one_of(f"{k}source", v.source, VIDEO_SOURCES)
    if v.source == "gstreamer" and not v.pipeline.strip():
        raise ConfigError(
            f"{k}pipeline",
            'is needed with source = "gstreamer": a GStreamer pipeline up to where H.264 comes'
            ' out, e.g. "videotestsrc is-live=true ! x264enc tune=zerolatency"',
        )
    if "appsink" in v.pipeline or v.pipeline.rstrip().endswith("!"):
        raise ConfigError(
            f"{k}pipeline", "ends where H.264 comes out: the daemon adds h264parse and appsink"
        )
    if v.device != "auto" and not v.device.startswith("/dev/"):
        if not (v.source == "picamera2" and v.device.isdigit()):
            raise ConfigError(
                f"{k}device",
                f'must be "auto", a /dev path, or with source = "picamera2" the camera\'s number '
                f"(0, 1); got {v.device!r}",
            )
    _one_of(f"{k}pixel_format", v.pixel_format, PIXEL_FORMATS)
    _one_of(f"{k}encoder", v.encoder, VIDEO_ENCODERS)
    if not v.m2m_device.startswith("/dev/"):
        raise ConfigError(f"{k}m2m_device", f"must be a /dev path; got {v.m2m_device!r}")
    _in_range(f"{k}width", v.width, 16, 4096)
    _in_range(f"{k}height", v.height, 16, 4096)
    for key, value in ((f"{k}width", v.width), (f"{k}height", v.height)):
        if value % 2:
            raise ConfigError(key, f"must be even (4:2:0 chroma); got {value}")
    _in_range(f"{k}fps", v.fps, 1, 120)
    _in_range(f"{k}bitrate", v.bitrate, 50_000, 50_000_000)
    _in_range(f"{k}gop", v.gop, 1, 100_000)
    _one_of(f"{k}profile", v.profile, H264_PROFILES)
    _one_of(f"{k}preset", v.preset, X264_PRESETS)
