"""The HTTP application over one given camera stream, for tests that drive it without a daemon."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance import config
from appliance.capture.sources import AudioSlot, Camera, SourceSlot
from appliance.core.stream import Stream
from appliance.core.streams import Streams
from appliance.http.egress import EgressSet
from appliance.http.server import make_app
from appliance.http.sessions import SessionRegistry
from appliance.http.status import Status


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
            [Camera(cfg.cameras[0], stream, SourceSlot())],
            AudioSlot(),
            EgressSet(cfg, streams),
        )
    )


def yuv420p(picture: Any) -> Any:
    """An av.VideoFrame of an I420 picture (the test pattern's `(h*3/2, w)` array)."""
    import av

    return av.VideoFrame.from_ndarray(picture, format="yuv420p")
