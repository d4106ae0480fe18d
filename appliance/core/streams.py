"""Every stream the daemon serves, by name: the cameras', and those WHIP publishers feed.

Core module: standard library only. WHEP viewers, snapshots, the status API and the metrics find a
stream here; WHIP ingest creates one on a publisher's first POST (within `whip.max_streams`) and
drops it when its publisher has been gone for a while (see whip.py). Stream names are what a URL
path segment can carry without escaping, and never one the HTTP API uses itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from appliance.core.errors import Overloaded, RequestError, SessionNotFound
from appliance.core.stream import Stream

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
RESERVED = frozenset({"api", "web", "whep", "whip", "healthz", "metrics", "openapi.yaml"})


class BadStreamName(RequestError):
    status = 400


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a stream, or None."""
    if not NAME.fullmatch(name):
        return f"a stream name is 1 to 64 letters, digits, '-' or '_'; got {name[:80]!r}"
    if name in RESERVED:
        return f"{name!r} is reserved for the HTTP API"
    return None


class Streams:
    """The registry. The cameras' streams are added at start and never removed; the first is
    `camera`, the stream that `/whep` without a name plays."""

    def __init__(self, make: Callable[[str], Stream], max_streams: int) -> None:
        self._make = make
        self._max = max_streams
        self._streams: dict[str, Stream] = {}
        self.camera: Stream | None = None
        self.cameras: dict[str, Stream] = {}

    def add_camera(self, stream: Stream) -> None:
        if stream.name in self._streams:
            raise ValueError(f"stream {stream.name!r} exists")
        if self.camera is None:
            self.camera = stream
        self.cameras[stream.name] = stream
        self._streams[stream.name] = stream

    def is_camera(self, stream: Stream) -> bool:
        return self.cameras.get(stream.name) is stream

    def get(self, name: str) -> Stream:
        """The stream called `name`; SessionNotFound (404) if there is none."""
        stream = self._streams.get(name)
        if stream is None:
            raise SessionNotFound(f"no stream named {name[:80]!r}")
        return stream

    def find(self, name: str) -> Stream | None:
        return self._streams.get(name)

    def create(self, name: str) -> Stream:
        """A new published stream; BadStreamName (400) or Overloaded (503) when it cannot be."""
        problem = name_problem(name)
        if problem is not None:
            raise BadStreamName(problem)
        if name in self._streams:
            raise ValueError(f"stream {name!r} exists")  # callers look first: a bug if reached
        published = len(self._streams) - len(self.cameras)
        if published >= self._max:
            raise Overloaded(f"published stream limit reached ({self._max})")
        stream = self._make(name)
        self._streams[name] = stream
        return stream

    def remove(self, stream: Stream) -> None:
        if self.is_camera(stream):
            raise ValueError("a camera's stream is never removed")
        if self._streams.get(stream.name) is stream:
            del self._streams[stream.name]
            stream.close()

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)

    def close(self) -> None:
        for stream in self:
            stream.close()
