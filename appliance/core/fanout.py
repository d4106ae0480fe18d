"""The fan-out: one track's packets, from its ring, to every fast-path sender, without waiting.

Core module: standard library only. Video (stream.py) and audio (audio.py) tracks each hold one
`FanOut`: after a track has packetized one access unit (or Opus packet) into its ring, `send()`
hands the packets' ring indices to every sink at once (`PacketSink.send_range`, which writes the
viewer's header, protects and sends without awaiting). A sink that raises is a bug in one viewer's
path: it is removed and logged, and the others carry on.

Sinks alike may be sent for together: a sink whose `batch_type` is not None joins the one batch of
that type (send/native.py's NativeBatch: every viewer on the C packet loop, one C call per access
unit) instead of being called itself. A batch reports the sinks that failed; they leave as above.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class PacketSink(Protocol):
    """A fast-path viewer's sender: takes the ring indices of each access unit's packets."""

    def send_range(self, indices: range) -> None: ...


class Batch(Protocol):
    """Sinks sent for in one call per access unit."""

    def add(self, sink: Any) -> None: ...

    def remove(self, sink: Any) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...

    def send_range(self, indices: range) -> list[tuple[Any, Exception]]:
        """Send to every sink; the sinks that failed, and why."""
        ...


class FanOut:
    """The sinks of one track (`what`: "video" or "audio", for the log)."""

    def __init__(self, name: str, what: str) -> None:
        self._name = name
        self._what = what
        self._sinks: list[PacketSink] = []
        self._batches: dict[Callable[[], Batch], Batch] = {}

    def add(self, sink: PacketSink) -> None:
        batch_type = getattr(sink, "batch_type", None)
        if batch_type is None:
            self._sinks.append(sink)
            return
        batch = self._batches.get(batch_type)
        if batch is None:
            batch = self._batches[batch_type] = batch_type()
        batch.add(sink)

    def remove(self, sink: PacketSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
            return
        for batch in self._batches.values():
            if sink in batch:
                batch.remove(sink)

    def __len__(self) -> int:
        return len(self._sinks) + sum(len(batch) for batch in self._batches.values())

    def __contains__(self, sink: object) -> bool:
        return sink in self._sinks or any(sink in batch for batch in self._batches.values())

    def send(self, indices: range) -> None:
        """The packets at `indices` to every sink."""
        for batch in self._batches.values():
            for sink, error in batch.send_range(indices):
                self._failed(sink, error)
        for sink in list(self._sinks):
            try:
                sink.send_range(indices)
            except Exception as e:  # one viewer's bug must not cost the others their media
                self._failed(sink, e)

    def _failed(self, sink: PacketSink, error: Exception) -> None:
        logger.error(
            "stream %s: a viewer's sender failed; it gets no more %s",
            self._name,
            self._what,
            exc_info=error,
        )
        self.remove(sink)
