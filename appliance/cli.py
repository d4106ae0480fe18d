"""Command line: `appliance serve` runs the daemon; `appliance probe` tells what this machine has."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from appliance import __version__, config
from appliance.core.errors import ConfigError


def setup_logging(level: str) -> None:
    # Under systemd, journald stamps every line itself.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.WARNING)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appliance", description="Camera streaming appliance (WHEP).")
    p.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML config file (default: {config.DEFAULT_PATH} when it exists)",
    )
    serve.add_argument("--host", help="listen address (http.host)")
    serve.add_argument("--port", type=int, help="listen port (http.port)")
    serve.add_argument("--log-level", choices=config.LOG_LEVELS, help="log_level")
    serve.add_argument("--source", choices=config.VIDEO_SOURCES, help="video.source")
    serve.add_argument("--device", help="video.device: a V4L2 camera, e.g. /dev/video0")
    probe = sub.add_parser(
        "probe", help="list cameras, encoders and sound cards, and what serve would pick"
    )
    probe.add_argument("--config", type=Path, default=None, help="TOML config file")
    probe.add_argument("--json", action="store_true", help="machine-readable output")
    first = sub.add_parser(
        "firstboot",
        help="apply a first-boot file from the boot partition (run by systemd, as root)",
    )
    first.add_argument("file", type=Path, help="e.g. /boot/firmware/appliance.toml")
    return p


def firstboot(path: Path) -> int:
    from appliance.firstboot import FirstBootError, apply

    try:
        for line in apply(path):
            print(f"firstboot: {line}")  # noqa: T201
    except FirstBootError as e:
        print(f"firstboot: {path} not applied: {e}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    entered = time.monotonic()
    args = parser().parse_args(argv)
    if args.command == "firstboot":
        return firstboot(args.file)
    overrides: dict[str, Any] = {}
    if getattr(args, "host", None) is not None:
        overrides["http.host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["http.port"] = args.port
    if getattr(args, "log_level", None) is not None:
        overrides["log_level"] = args.log_level
    if getattr(args, "source", None) is not None:
        overrides["video.source"] = args.source
    if getattr(args, "device", None) is not None:
        overrides["video.device"] = args.device
    path = args.config
    if path is None and config.DEFAULT_PATH.exists():
        path = config.DEFAULT_PATH
    try:
        cfg = config.load(path, overrides=overrides)
    except ConfigError as e:
        print(f"appliance: {e}", file=sys.stderr)  # noqa: T201
        return 2
    if args.command == "probe":
        from appliance.capture.probe import probe, render

        report = probe(cfg)
        print(json.dumps(report, indent=2) if args.json else render(report))  # noqa: T201
        return 0
    setup_logging(cfg.log_level)
    from appliance.app import Startup, serve  # the daemon's heavy imports only when serving

    try:
        asyncio.run(serve(cfg, Startup.begun(entered)))
    except ConfigError as e:  # found only when starting (an unreadable TLS certificate)
        print(f"appliance: {e}", file=sys.stderr)  # noqa: T201
        return 2
    except OSError as e:
        logging.getLogger("appliance").error("cannot serve: %s", e)
        return 1
    return 0
