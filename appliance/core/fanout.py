"""The fan-out: one track's packets, from its ring, to every fast-path sender, without waiting.

Core module: standard library only. Video (stream.py) and audio (audio.py) tracks each hold one
`FanOut`: after a track has packetized one access unit (or Opus packet) into its ring, `send()`
hands the packets' ring indices to every sink at once (`PacketSink.send_range`, which writes the
viewer's header, protects and sends without awaiting). A sink that raises is a bug in one viewer's
path: it is removed and logged, and the others carry on.
"""

from __future__ import annotations

import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class PacketSink(Protocol):
    """A fast-path viewer's sender: takes the ring indices of each access unit's packets."""

    def send_range(self, indices: range) -> None: ...


class FanOut:
    """The sinks of one track (`what`: "video" or "audio", for the log)."""

    def __init__(self, name: str, what: str) -> None:
        self._name = name
        self._what = what
        self._sinks: list[PacketSink] = []

    def add(self, sink: PacketSink) -> None:
        self._sinks.append(sink)

    def remove(self, sink: PacketSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def __len__(self) -> int:
        return len(self._sinks)

    def send(self, indices: range) -> None:
        """The packets at `indices` to every sink."""
        for sink in list(self._sinks):
            try:
                sink.send_range(indices)
            except Exception:  # one viewer's bug must not cost the others their media
                logger.exception(
                    "stream %s: a viewer's sender failed; it gets no more %s",
                    self._name,
                    self._what,
                )
                self.remove(sink)
