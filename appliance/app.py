"""The composition root: builds source → encoder → streams → HTTP → egress, and owns start-up and
shut-down.

Start-up order is streams, HTTP, then the camera and egress: the daemon serves (and tells systemd it
is ready) before the camera is open, so that the page is there while the camera starts, and a
camera that cannot start never holds the HTTP server back. Shut-down is the reverse: stop
publishing out, stop accepting, close every viewer and publisher, stop the source. The source runs
under a supervisor (`capture/sources.py`) that restarts it with backoff, so a failing camera never
takes the stream, the HTTP server or the viewers down with it.

`Startup` times the daemon's own part of a boot (Python, imports, HTTP, the camera's first frame):
logged once, and in /api/status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from appliance import rtc
from appliance.capture.sources import (
    AudioSlot,
    Camera,
    Claims,
    SourceSlot,
    supervise,
    supervise_audio,
)
from appliance.config import Config, state_dir
from appliance.core.stream import Stream
from appliance.core.streams import Streams
from appliance.devices import network
from appliance.devices.clock import ClockWatch
from appliance.devices.headroom import HeadroomWatch
from appliance.devices.health import RecentWarnings
from appliance.devices.memory import HeapTrimmer
from appliance.http.connections import ConnectionLimit, QuietAcceptErrors, raise_open_files_limit
from appliance.http.egress import EgressSet
from appliance.http.server import WHIP_KEY, make_app
from appliance.http.sessions import SessionRegistry
from appliance.http.status import Status
from appliance.http.tls import context as tls_context
from appliance.rtsp.server import RtspServer
from appliance.sdnotify import Notifier
from appliance.send import native

CLOCK_CHECK_S = 60.0  # how often the clock's synchronisation is asked after start

logger = logging.getLogger(__name__)


def process_started() -> float | None:
    """When this process was created, on the monotonic clock; None where /proc cannot say."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, since boot
        now, since_boot = time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError):
        return None
    return now - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))


@dataclass
class Startup:
    """When each phase of the daemon's start ended, on the monotonic clock."""

    process: float  # the process was created
    main: float  # Python had started and read the command line
    imported: float  # the daemon's modules were imported
    serving: float | None = None  # HTTP listening: READY
    first_frame: float | None = None  # the camera's first keyframe reached the stream

    @classmethod
    def begun(cls, main: float) -> Startup:
        """For a daemon whose `cli.main` began at `main` and has just imported this module."""
        process = process_started()
        return cls(main if process is None else min(process, main), main, time.monotonic())

    def phases(self) -> dict[str, float]:
        """Seconds per phase, those done so far."""
        out = {"python_s": self.main - self.process, "imports_s": self.imported - self.main}
        if self.serving is not None:
            out["http_s"] = self.serving - self.imported
            out["ready_s"] = self.serving - self.process
            if self.first_frame is not None:
                out["camera_s"] = self.first_frame - self.serving
                out["first_frame_s"] = self.first_frame - self.process
        return {k: round(v, 3) for k, v in out.items()}


@dataclass
class Running:
    """A started daemon: what tests and the CLI need to reach."""

    config: Config
    stream: Stream  # the first camera's
    streams: Streams
    sessions: SessionRegistry  # viewers
    publishers: SessionRegistry
    source: SourceSlot  # the first camera's
    audio: AudioSlot
    egress: EgressSet
    url: str
    port: int
    rtsp: RtspServer | None = None
    cameras: list[Camera] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running(config: Config, startup: Startup | None = None) -> AsyncIterator[Running]:
    """Start the daemon; on exit, stop it in reverse order."""
    if startup is None:  # started by a test or an embedding program: timed from here
        now = time.monotonic()
        startup = Startup(now, now, now)
    rtc.install(config.webrtc.interfaces)
    warnings = RecentWarnings()  # the daemon's last warnings, for the health page
    logging.getLogger("appliance").addHandler(warnings)

    def make_stream(name: str) -> Stream:
        return Stream(
            name,
            keyframe_interval_min=config.stream.keyframe_interval_min,
            mtu=config.stream.mtu,
            ring_packets=config.stream.ring_packets,
        )

    streams = Streams(make_stream, config.whip.max_streams)
    cameras = []
    for i, camera_config in enumerate(config.cameras):
        # the first camera's settings where a one-camera daemon always kept them
        saved = "controls.json" if i == 0 else f"controls-{camera_config.name}.json"
        slot = SourceSlot(state_dir(config.http) / saved, camera_config.controls)
        cameras.append(Camera(camera_config, make_stream(camera_config.name), slot))
        streams.add_camera(cameras[-1].stream)
    stream, slot = cameras[0].stream, cameras[0].slot  # audio goes with the first camera
    heap = HeapTrimmer()
    sessions = SessionRegistry(heap)
    publishers = SessionRegistry(heap)
    egress = EgressSet(config, streams)
    if not config.auth.tokens:
        logger.warning(
            "no auth tokens configured: anyone who reaches this device can watch it and change "
            "its settings (see [auth] in the config)"
        )
    audio_slot = AudioSlot()
    stream.ensure_audio(config.audio.channels)
    clock = ClockWatch()
    clock.check()
    tasks = [asyncio.create_task(_watch_clock(clock), name="clock")]
    status = Status(
        config, streams, sessions, publishers, cameras, audio_slot, egress, clock, startup.phases
    )  # fmt: skip
    headroom = status.headroom = HeadroomWatch(
        config.stream.max_load,
        lambda: sessions.count() + (status.rtsp.count() if status.rtsp is not None else 0),
    )
    tasks.append(asyncio.create_task(headroom.run(), name="headroom"))
    status.warnings = warnings
    native.available()  # says in the log which packet loop serves
    app = make_app(status)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=config.http.idle_timeout)
    rtsp_server: RtspServer | None = None
    try:
        await runner.setup()
        assert runner.server is not None
        ConnectionLimit(runner.server, config.http.max_connections_per_client)
        tls = tls_context(config.http)
        site = web.TCPSite(runner, config.http.host, config.http.port, ssl_context=tls)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else config.http.port
        scheme = "https" if tls else "http"
        # What this process (and the tests) use; the log names what other machines can open.
        host = "127.0.0.1" if config.http.host in ("0.0.0.0", "::", "") else config.http.host
        url = network.url(scheme, host, port)
        urls = network.reachable_urls(scheme, config.http.host, port)
        logger.info(
            "serving stream%s %s at %s (WHEP: %s)",
            "s" if len(cameras) > 1 else "",
            ", ".join(repr(c.name) for c in cameras),
            ", ".join(f"{u}/" for u in urls),
            ", ".join(f"{urls[0]}/{c.name}/whep" for c in cameras),
        )  # fmt: skip
        startup.serving = time.monotonic()
        took = startup.phases()
        logger.info(
            "ready %.1f s after the process started: Python %.1f s, imports %.1f s, HTTP %.1f s",
            took["ready_s"], took["python_s"], took["imports_s"], took["http_s"],
        )  # fmt: skip
        rtsp_server = status.rtsp = await _start_rtsp(
            config, streams, sessions, [c.name for c in cameras], headroom
        )
        # The cameras after the HTTP server: opening them (probing, the encoder) runs meanwhile.
        # Each has its own supervisor: one that fails never holds the others back.
        claims = Claims([c.config for c in cameras])
        for camera in cameras:
            tasks.append(
                asyncio.create_task(supervise(camera, claims), name=f"camera {camera.name}")
            )
        tasks.append(asyncio.create_task(_first_frame(stream, startup), name="first frame"))
        tasks.append(
            asyncio.create_task(
                supervise_audio(config, stream.ensure_audio(), audio_slot, slot, stream.drop_audio),
                name="audio",
            )
        )
        egress.start()
        yield Running(
            config, stream, streams, sessions, publishers, slot, audio_slot, egress, url, port,
            rtsp_server, cameras,
        )  # fmt: skip
    finally:
        logger.info("stopping")
        if rtsp_server is not None:
            await rtsp_server.close()
        await egress.close()
        await app[WHIP_KEY].close()
        await publishers.close_all("daemon stopping")
        await sessions.close_all("daemon stopping")
        await runner.cleanup()
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        streams.close()
        logging.getLogger("appliance").removeHandler(warnings)


async def _start_rtsp(
    config: Config,
    streams: Streams,
    viewers: SessionRegistry,
    names: list[str],
    headroom: HeadroomWatch,
) -> RtspServer | None:
    """The RTSP server (rtsp.enabled), or None. A port that cannot be had turns RTSP off with one
    log line: the camera's WebRTC viewers do not depend on it."""
    if not config.rtsp.enabled:
        return None
    server = RtspServer(config, streams, viewers.count)
    server.headroom = headroom
    try:
        await server.start(config.http.host, config.rtsp.port)
    except OSError as e:
        logger.error("RTSP is off: cannot listen on port %d: %s", config.rtsp.port, e.strerror)
        return None
    urls = network.reachable_urls("rtsp", config.http.host, server.port)
    logger.info("RTSP: %s", ", ".join(f"{u}/{name}" for name in names for u in urls))
    return server


async def _first_frame(stream: Stream, startup: Startup) -> None:
    await stream.keyframed.wait()
    startup.first_frame = stream.first_keyframe_at
    took = startup.phases()
    logger.info(
        "first frame %.1f s after the process started (the camera's %.1f s after HTTP)",
        took["first_frame_s"], took["camera_s"],
    )  # fmt: skip


async def _watch_clock(clock: ClockWatch) -> None:
    while True:
        await asyncio.sleep(CLOCK_CHECK_S)
        clock.check()


async def serve(config: Config, startup: Startup | None = None) -> None:
    """Run until SIGINT or SIGTERM, telling systemd (when it runs us) how it goes."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietAcceptErrors())
    files = raise_open_files_limit()
    logger.debug("open files limit: %d", files)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    try:
        async with running(config, startup) as daemon:
            names = ", ".join(repr(c.name) for c in daemon.cameras)
            plural = "s" if len(daemon.cameras) > 1 else ""
            notifier.ready(f"serving stream{plural} {names} on port {daemon.port}")
            await stop.wait()
            notifier.stopping()
    finally:
        await notifier.close()
