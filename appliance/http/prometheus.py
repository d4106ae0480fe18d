"""Prometheus text exposition (format 0.0.4), written by hand: a few families, no library.

Standard library only. `Exposition` collects families and renders them; `Histogram` keeps
cumulative buckets. What the daemon exposes is assembled in http/metrics.py from the stream, the source,
the sessions and the senders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

Labels = Mapping[str, str]


def _labels(labels: Labels | None) -> str:
    if not labels:
        return ""
    parts = []
    for key, value in labels.items():
        escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{key}="{escaped}"')
    return "{" + ",".join(parts) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Histogram:
    """Cumulative buckets (upper bounds in seconds), sum and count."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class Exposition:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Labels | None, float]],
    ) -> None:
        """One counter or gauge family. Counter names end in `_total`, as the format wants."""
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self, name: str, help_text: str, h: Histogram, labels: Labels | None = None
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} histogram")
        base = dict(labels or {})
        for bound, count in zip(h.bounds, h.counts, strict=True):
            self._lines.append(f"{name}_bucket{_labels({**base, 'le': _number(bound)})} {count}")
        self._lines.append(f"{name}_bucket{_labels({**base, 'le': '+Inf'})} {h.count}")
        self._lines.append(f"{name}_sum{_labels(base)} {_number(h.total)}")
        self._lines.append(f"{name}_count{_labels(base)} {h.count}")

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"
