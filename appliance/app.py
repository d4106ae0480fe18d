"""The composition root: builds source → encoder → streams → HTTP → egress, and owns start-up and
shut-down.

Start-up order is device, streams, HTTP, egress; shut-down is the reverse: stop publishing out,
stop accepting, close every viewer and publisher, stop the source. The source runs under a
supervisor (`capture/sources.py`) that restarts it with backoff, so a failing camera never takes the stream,
the HTTP server or the viewers down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from appliance import rtc
from appliance.capture.sources import AudioSlot, SourceSlot, supervise, supervise_audio
from appliance.config import Config, state_dir
from appliance.core.stream import Stream
from appliance.core.streams import Streams
from appliance.devices import network
from appliance.devices.clock import ClockWatch
from appliance.http.connections import ConnectionLimit, QuietAcceptErrors, raise_open_files_limit
from appliance.http.egress import EgressSet
from appliance.http.server import WHIP_KEY, make_app
from appliance.http.sessions import SessionRegistry
from appliance.http.status import Status
from appliance.http.tls import context as tls_context
from appliance.sdnotify import Notifier

CLOCK_CHECK_S = 60.0  # how often the clock's synchronisation is asked after start

logger = logging.getLogger(__name__)


@dataclass
class Running:
    """A started daemon: what tests and the CLI need to reach."""

    config: Config
    stream: Stream  # the camera's
    streams: Streams
    sessions: SessionRegistry  # viewers
    publishers: SessionRegistry
    source: SourceSlot
    audio: AudioSlot
    egress: EgressSet
    url: str
    port: int


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Running]:
    """Start the daemon; on exit, stop it in reverse order."""
    rtc.install(config.webrtc.interfaces)

    def make_stream(name: str) -> Stream:
        return Stream(
            name,
            keyframe_interval_min=config.stream.keyframe_interval_min,
            mtu=config.stream.mtu,
            ring_packets=config.stream.ring_packets,
        )

    streams = Streams(make_stream, config.whip.max_streams)
    stream = make_stream(config.stream.name)
    streams.add_camera(stream)
    sessions = SessionRegistry()
    publishers = SessionRegistry()
    egress = EgressSet(config, streams)
    slot = SourceSlot(state_dir(config.http) / "controls.json")
    if not config.auth.tokens:
        logger.warning(
            "no auth tokens configured: anyone who reaches this device can watch it and change "
            "its settings (see [auth] in the config)"
        )
    source_task = asyncio.create_task(supervise(config, stream, slot), name="source")
    audio_slot = AudioSlot()
    stream.ensure_audio(config.audio.channels)

    audio_task = asyncio.create_task(
        supervise_audio(config, stream.ensure_audio(), audio_slot, slot, stream.drop_audio),
        name="audio",
    )
    clock = ClockWatch()
    clock.check()
    clock_task = asyncio.create_task(_watch_clock(clock), name="clock")
    app = make_app(
        Status(config, streams, sessions, publishers, slot, audio_slot, egress, clock=clock)
    )
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=config.http.idle_timeout)
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
            "serving stream %r at %s (WHEP: %s/%s/whep)",
            stream.name, ", ".join(f"{u}/" for u in urls), urls[0], stream.name,
        )  # fmt: skip
        egress.start()
        yield Running(
            config, stream, streams, sessions, publishers, slot, audio_slot, egress, url, port
        )
    finally:
        logger.info("stopping")
        await egress.close()
        await app[WHIP_KEY].close()
        await publishers.close_all("daemon stopping")
        await sessions.close_all("daemon stopping")
        await runner.cleanup()
        for task in (audio_task, source_task, clock_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        streams.close()


async def _watch_clock(clock: ClockWatch) -> None:
    while True:
        await asyncio.sleep(CLOCK_CHECK_S)
        clock.check()


async def serve(config: Config) -> None:
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
        async with running(config) as daemon:
            notifier.ready(f"serving stream {daemon.stream.name!r} on port {daemon.port}")
            await stop.wait()
            notifier.stopping()
    finally:
        await notifier.close()
