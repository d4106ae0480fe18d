"""First-boot configuration from the boot partition: `appliance firstboot /boot/firmware/appliance.toml`.

Edge module, run as root by `appliance-firstboot.service` before the network and the daemon start.
The file is written on any laptop before the first boot (the boot partition is FAT):

    [system]
    hostname = "frontdoor"          # the device then answers as frontdoor.local
    [wifi]
    ssid = "home"
    password = "secret"             # removed from the card once applied
    country = "GB"
    [ssh]
    user = "admin"                  # created if missing; sudo without a password, reads the journal
    authorized_keys = ["ssh-ed25519 AAAA... me@laptop"]
    [video]                         # any section of /etc/appliance/appliance.toml
    width = 1920
    [stream]
    name = "door"

Several cameras are `[[camera]]` tables (each with a `name`), which then replace the installed
config's `[video]`; a `[video]` on the card replaces installed `[[camera]]` tables.

Raspberry Pi Imager's own settings (its `firstrun.sh` on bookworm, cloud-init files on trixie) are
applied by Raspberry Pi OS itself and need nothing from us; this file covers what Imager does not.
Secrets go to `/etc/appliance/credentials/` (root only; systemd hands them to the daemon): `[auth]`
tokens, and `[webrtc] ice_servers` when an entry holds a TURN `secret` or `credential`.
Everything is validated before anything is written: a bad file changes nothing and says why. Once
applied, the file is renamed `appliance.toml.applied`, with the Wi-Fi password and the other
secrets removed, so it runs once; a new `appliance.toml` on the card is applied at the next boot.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from appliance import config
from appliance.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

logger = logging.getLogger(__name__)

SYSTEM_SECTIONS = ("system", "wifi", "ssh")
CONFIG_TABLES = (*config.SECTIONS, "camera")  # the daemon's sections, and its [[camera]] tables
HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class FirstBootError(ValueError):
    """The first-boot file cannot be applied; nothing was changed."""


def apply(path: Path, root: Path = Path("/"), config_path: Path | None = None) -> list[str]:
    """Apply the file; returns what was done, one line each. `root` is for tests (a scratch tree):
    commands that change the running system (hostname, useradd) only run when it is "/"."""
    try:
        with path.open("rb") as f:
            wanted = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FirstBootError(f"{path}: {e}") from None
    except UnicodeDecodeError as e:
        raise FirstBootError(f"{path}: not UTF-8 text (byte {e.start})") from None
    target = config_path or root / "etc/appliance/appliance.toml"
    plan = _validate(wanted, target)
    done: list[str] = []
    system = wanted.get("system", {})
    if "hostname" in system:
        done.append(_hostname(system["hostname"], root))
    if "wifi" in wanted:
        done.append(_wifi(wanted["wifi"], root))
    if "ssh" in wanted:
        done.append(_ssh(wanted["ssh"], root))
    secrets = plan.pop("auth", None)
    turn = _turn_secrets(plan)
    if plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_merged_toml(target, plan))
        done.append(f"{target}: set {', '.join(sorted(_keys(plan)))}")
    # Secrets go where only root reads them; systemd's LoadCredential= hands them to the daemon.
    if secrets is not None:
        creds = _credentials(target, "auth", {"auth": secrets})
        done.append(f"{creds}: {len(secrets.get('tokens', []))} token(s)")
    if turn is not None:
        creds = _credentials(target, "webrtc", {"webrtc": {"ice_servers": turn}})
        done.append(f"{creds}: {len(turn)} ICE server(s) with credentials")
    _retire(path, wanted)
    return done


def _turn_secrets(plan: dict[str, Any]) -> list[Any] | None:
    """Take `webrtc.ice_servers` out of the plan when an entry holds a TURN secret or
    credential: that belongs in the credentials directory, not the world-readable config."""
    webrtc = plan.get("webrtc")
    servers = webrtc.get("ice_servers") if isinstance(webrtc, dict) else None
    if not isinstance(servers, list) or not any(
        isinstance(s, dict) and (s.get("secret") or s.get("credential")) for s in servers
    ):
        return None
    assert isinstance(webrtc, dict)
    del webrtc["ice_servers"]
    if not webrtc:
        del plan["webrtc"]
    return servers


def _credentials(target: Path, name: str, tree: dict[str, Any]) -> Path:
    creds = target.parent / f"credentials/{name}.toml"
    creds.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_merged_toml(creds, tree))
    return creds


def _validate(wanted: dict[str, Any], target: Path) -> dict[str, Any]:
    unknown = [k for k in wanted if k not in SYSTEM_SECTIONS and k not in CONFIG_TABLES]
    if unknown:
        known = ", ".join((*SYSTEM_SECTIONS, *CONFIG_TABLES))
        raise FirstBootError(f"unknown section(s) {', '.join(unknown)}; known: {known}")
    hostname = wanted.get("system", {}).get("hostname")
    if hostname is not None and not (isinstance(hostname, str) and HOSTNAME.match(hostname)):
        raise FirstBootError(f"system.hostname: letters, digits and '-' (1-63); got {hostname!r}")
    wifi = wanted.get("wifi")
    if wifi is not None:
        if not isinstance(wifi.get("ssid"), str) or not wifi["ssid"]:
            raise FirstBootError("wifi.ssid: a network name is needed")
        password = wifi.get("password", "")
        if password and not 8 <= len(password) <= 63:
            raise FirstBootError("wifi.password: WPA2 takes 8 to 63 characters")
        if not re.fullmatch(r"[A-Z]{2}", str(wifi.get("country", "GB"))):
            raise FirstBootError(
                f"wifi.country: two capital letters (GB, DE, US); got {wifi['country']!r}"
            )
    ssh = wanted.get("ssh")
    if ssh is not None:
        if not USER.match(str(ssh.get("user", "admin"))):
            raise FirstBootError(f"ssh.user: not a valid user name: {ssh.get('user')!r}")
        keys = ssh.get("authorized_keys", [])
        if not isinstance(keys, list) or not all(
            isinstance(k, str) and k.startswith(("ssh-", "ecdsa-", "sk-")) for k in keys
        ):
            raise FirstBootError("ssh.authorized_keys: a list of public keys (ssh-ed25519 AAAA...)")
    plan = {k: v for k, v in wanted.items() if k in CONFIG_TABLES}
    if plan:  # the merged config must load: a bad value is refused here, not at the daemon's start
        try:
            config.load(None, env={}, overrides=dict(_flatten(_merged_tree(target, plan))))
        except ConfigError as e:
            raise FirstBootError(str(e)) from None
    return plan


def _hostname(name: str, root: Path) -> str:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text(name + "\n")
    hosts = root / "etc/hosts"
    lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
    lines = [line for line in lines if not line.startswith("127.0.1.1")] + [f"127.0.1.1\t{name}"]
    hosts.write_text("\n".join(lines) + "\n")
    if root == Path("/"):
        subprocess.run(["hostname", name], check=False)
    return f"hostname: {name}"


def _wifi(wifi: dict[str, Any], root: Path) -> str:
    ssid, password = wifi["ssid"], wifi.get("password", "")
    country = wifi.get("country", "GB")
    if (root / "etc/NetworkManager").is_dir():  # Raspberry Pi OS bookworm
        path = root / "etc/NetworkManager/system-connections/appliance-wifi.nmconnection"
        security = f"\n[wifi-security]\nkey-mgmt=wpa-psk\npsk={password}\n" if password else ""
        text = (
            f"[connection]\nid=appliance-wifi\ntype=wifi\nautoconnect=true\n\n"
            f"[wifi]\nmode=infrastructure\nssid={ssid}\n{security}\n"
            f"[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n"
        )
    else:  # plain Debian: wpa_supplicant for wlan0 (wpa_supplicant@wlan0.service)
        path = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
        key = f'psk="{password}"' if password else "key_mgmt=NONE"
        text = (
            f"country={country}\nctrl_interface=/run/wpa_supplicant\n"
            f'network={{\n  ssid="{ssid}"\n  {key}\n}}\n'
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return f"wifi: {ssid} ({path})"


# The owner's groups: sudo, and the journal (`journalctl -u appliance` as the README says).
OWNER_GROUPS = "sudo,adm,systemd-journal"


def _ssh(ssh: dict[str, Any], root: Path) -> str:
    """The owner's account: their keys, the journal, and sudo without a password. Logins are by
    key only (sshd refuses passwords), so the key is the credential: a sudo password would be a
    second secret, written in plain text on the card's FAT partition to reach the device at all."""
    user = ssh.get("user", "admin")
    home = root / "home" / user
    if root == Path("/"):
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(
                ["useradd", "-m", "-s", "/bin/bash", "-G", OWNER_GROUPS, user], check=True
            )
        else:
            subprocess.run(["usermod", "-a", "-G", OWNER_GROUPS, user], check=True)
    sudoers = root / "etc/sudoers.d" / f"90-appliance-{user}"
    sudoers.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(sudoers, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
    with os.fdopen(fd, "w") as f:
        f.write(
            f"# The owner named in the first-boot file ([ssh]); logins are by key only.\n"
            f"{user} ALL=(ALL) NOPASSWD:ALL\n"
        )
    keys = home / ".ssh/authorized_keys"
    keys.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys.write_text("".join(k.strip() + "\n" for k in ssh.get("authorized_keys", [])))
    keys.chmod(0o600)
    if root == Path("/"):
        subprocess.run(["chown", "-R", f"{user}:{user}", str(home / ".ssh")], check=False)
    return f"ssh: {len(ssh.get('authorized_keys', []))} key(s) for {user}"


def _retire(path: Path, wanted: dict[str, Any]) -> None:
    """Rename the file so that it is not applied again; drop the Wi-Fi password from it."""
    text = path.read_text()
    if wanted.get("wifi", {}).get("password"):
        text = re.sub(r"(?m)^(\s*password\s*=\s*).*$", r'\1"" # removed once applied', text)
    if wanted.get("auth", {}).get("tokens"):
        text = re.sub(r"(?m)^(\s*token\s*=\s*).*$", r'\1"" # removed once applied', text)
    # TURN secrets and credentials, in ice_servers' inline tables or tables of their own.
    text = re.sub(r'\b(secret|credential)(\s*=\s*)"(?:[^"\\\n]|\\.)*"', r'\1\2""', text)
    applied = path.with_name(path.name + ".applied")
    applied.write_text(text)
    path.unlink()


def _merged_tree(target: Path, plan: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    if target.exists():
        with target.open("rb") as f:
            tree = tomllib.load(f)
    # [[camera]] tables and [video] describe the cameras two ways: the card's way replaces the
    # installed one
    if "camera" in plan:
        tree.pop("video", None)
    if "video" in plan:
        tree.pop("camera", None)
    for section, values in plan.items():
        if isinstance(values, dict):
            tree.setdefault(section, {}).update(values)
        else:
            tree[section] = values
    return tree


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _keys(plan: dict[str, Any]) -> list[str]:
    return [key for key, _ in _flatten(plan)]


def _merged_toml(target: Path, plan: dict[str, Any]) -> str:
    """The config file with the plan merged in (comments of the original are not kept)."""
    tree = _merged_tree(target, plan)
    lines = ["# Written by appliance firstboot from the boot partition; edit freely."]
    top = {k: v for k, v in tree.items() if not isinstance(v, dict)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for section, values in tree.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise FirstBootError(f"cannot write {value!r} to TOML")
