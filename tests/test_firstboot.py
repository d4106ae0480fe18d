"""The first-boot file, applied to a scratch root (the VM test applies it to a real one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from appliance import config
from appliance.firstboot import FirstBootError, apply

GOOD = """
[system]
hostname = "frontdoor"

[wifi]
ssid = "home"
password = "correct horse"
country = "DE"

[ssh]
user = "admin"
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB me@laptop"]

[video]
width = 1920
height = 1080

[stream]
name = "door"
"""


def scratch(tmp_path: Path, text: str) -> tuple[Path, Path]:
    root = tmp_path / "root"
    (root / "etc/appliance").mkdir(parents=True)
    (root / "etc/appliance/appliance.toml").write_text("[http]\nport = 80\n[video]\nfps = 25\n")
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "appliance.toml").write_text(text)
    return root, boot / "appliance.toml"


def test_applies_everything_once_and_drops_the_wifi_password(tmp_path: Path) -> None:
    root, file = scratch(tmp_path, GOOD)
    done = apply(file, root)
    assert done[0] == "hostname: frontdoor"
    assert (root / "etc/hostname").read_text() == "frontdoor\n"
    assert "127.0.1.1\tfrontdoor" in (root / "etc/hosts").read_text()
    wpa = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    assert 'ssid="home"' in wpa.read_text() and "country=DE" in wpa.read_text()
    assert wpa.stat().st_mode & 0o777 == 0o600
    keys = root / "home/admin/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB me@laptop\n"
    # The owner administers the device: sudo without a password (checked by sudo itself in
    # tests/vm/test_image.py), in a drop-in only root reads.
    sudoers = root / "etc/sudoers.d/90-appliance-admin"
    assert "admin ALL=(ALL) NOPASSWD:ALL" in sudoers.read_text().splitlines()
    assert sudoers.stat().st_mode & 0o777 == 0o440
    # The daemon's config: the file's sections merged over what was there, and it loads.
    c = config.load(root / "etc/appliance/appliance.toml", env={})
    assert (c.http.port, c.video.width, c.video.height, c.video.fps) == (80, 1920, 1080, 25)
    assert c.stream.name == "door"
    # Applied once: renamed, with the Wi-Fi password gone from the card.
    assert not file.exists()
    applied = file.with_name("appliance.toml.applied").read_text()
    assert "correct horse" not in applied
    assert tomllib.loads(applied)["wifi"]["password"] == ""


def test_network_manager_gets_a_keyfile(tmp_path: Path) -> None:
    root, file = scratch(tmp_path, '[wifi]\nssid = "home"\npassword = "correct horse"\n')
    (root / "etc/NetworkManager/system-connections").mkdir(parents=True)
    apply(file, root)
    keyfile = root / "etc/NetworkManager/system-connections/appliance-wifi.nmconnection"
    assert "ssid=home" in keyfile.read_text() and "psk=correct horse" in keyfile.read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[system]\nhostname = "Front Door"\n', "system.hostname: letters, digits and '-'"),
        ('[wifi]\nssid = "home"\npassword = "short"\n', "wifi.password: WPA2 takes 8 to 63"),
        ('[ssh]\nauthorized_keys = ["hunter2"]\n', "ssh.authorized_keys: a list of public keys"),
        ("[video]\nfps = 500\n", "config: video.fps: must be between 1 and 120; got 500"),
        ("[cameras]\nx = 1\n", "unknown section(s) cameras; known: system, wifi, ssh, http"),
        ("[camera]\nx = 1\n", "config: camera: must be a list"),
        ("[[camera]]\nwidth = 640\n", "config: camera[0].name: a camera needs a name"),
        ("[video\n", "appliance.toml: "),
    ],
)
def test_a_bad_file_changes_nothing_and_says_why(tmp_path: Path, text: str, message: str) -> None:
    root, file = scratch(tmp_path, text)
    before = (root / "etc/appliance/appliance.toml").read_text()
    with pytest.raises(FirstBootError) as e:
        apply(file, root)
    assert message in str(e.value)
    assert file.exists()  # left for the user to fix
    assert not (root / "etc/hostname").exists()
    assert (root / "etc/appliance/appliance.toml").read_text() == before


def test_a_turn_secret_goes_to_the_credentials_not_the_config(tmp_path: Path) -> None:
    root, file = scratch(
        tmp_path,
        '[webrtc]\nconnect_timeout = 20\nice_servers = [{ urls = ["turn:turn.example.net:3478"], '
        'secret = "s3cret-of-coturn", lifetime = 3600 }]\n',
    )
    done = apply(file, root)
    etc = root / "etc/appliance"
    assert done[-1] == f"{etc}/credentials/webrtc.toml: 1 ICE server(s) with credentials"
    creds = etc / "credentials/webrtc.toml"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert "s3cret-of-coturn" not in (etc / "appliance.toml").read_text()
    # The daemon reads both, as systemd hands it the credentials directory.
    c = config.load(etc / "appliance.toml", env={"CREDENTIALS_DIRECTORY": str(creds.parent)})
    (server,) = c.webrtc.ice_servers
    assert (server.secret, server.lifetime, c.webrtc.connect_timeout) == (
        "s3cret-of-coturn",
        3600,
        20,
    )
    applied = file.with_name("appliance.toml.applied").read_text()
    assert "s3cret-of-coturn" not in applied
    assert tomllib.loads(applied)["webrtc"]["ice_servers"][0]["secret"] == ""


def test_the_card_can_describe_several_cameras(tmp_path: Path) -> None:
    root, file = scratch(
        tmp_path,
        '[[camera]]\nname = "front"\nsource = "picamera2"\ndevice = "0"\n'
        '[[camera]]\nname = "desk"\ndevice = "/dev/video0"\nwidth = 640\nheight = 360\n'
        "controls = {brightness = 140}\n",
    )
    apply(file, root)
    # the installed [video] (fps = 25) gave way to the cameras; the rest of the file stands
    c = config.load(root / "etc/appliance/appliance.toml", env={})
    assert [(cam.name, cam.source, cam.device) for cam in c.cameras] == [
        ("front", "picamera2", "0"),
        ("desk", "auto", "/dev/video0"),
    ]
    assert c.cameras[1].controls == {"brightness": 140} and c.http.port == 80
    assert c.video == config.VideoConfig()
