"""The HTTP application over one given camera stream, for tests that drive it without a daemon."""

from __future__ import annotations

from aiohttp import web

from appliance import config
from appliance.audiosource import AudioSlot
from appliance.egress import EgressSet
from appliance.http import Status, make_app
from appliance.sessions import SessionRegistry
from appliance.source import SourceSlot
from appliance.stream import Stream
from appliance.streams import Streams


def app_for(
    cfg: config.Config, stream: Stream, viewers: SessionRegistry | None = None
) -> web.Application:
    streams = Streams(Stream, cfg.whip.max_streams)
    streams.add_camera(stream)
    return make_app(
        Status(
            cfg,
            streams,
            viewers if viewers is not None else SessionRegistry(),
            SessionRegistry(),
            SourceSlot(),
            AudioSlot(),
            EgressSet(cfg, streams),
        )
    )
