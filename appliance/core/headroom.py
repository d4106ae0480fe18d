"""What the daemon can still take on: admission of new viewers by the event loop's headroom.

Every viewer's packets leave from the one event-loop thread (send/sender.py), and that thread also
reads every socket: a WHIP publisher's media, RTCP, STUN, HTTP. Past the CPU that thread can get,
everything degrades at once: sends come late, sockets overflow in the kernel, the published stream
itself loses frames. So a new viewer is admitted only while the daemon has room for it:

- **busy**: the share of one core the loop thread used (its own CPU time, `time.thread_time()`,
  over wall time; waiting for a core does not count, so a busy neighbour process does not make
  the daemon refuse), smoothed over about two seconds. A new viewer is refused when the busy share
  plus what one more viewer costs (learned: busy above the no-viewer baseline, per viewer) would
  pass `stream.max_load`, counting also the viewers admitted in the last `SETTLE_S` seconds (and
  still there), whose cost the busy share does not show yet (a burst of offers is not all let in
  at once; a burst of viewers that come and go at once is). `max_load = 1` turns this check off.
- **lag**: how late the loop's own tick woke up. A loop held up `LAG_LIMIT_S` or more, twice
  within the last `RECENT_S` seconds, while busy with its own work (at least half of
  `max_load`: a late wake-up while the loop was idle is another process's doing), is already
  late for the viewers it has. One stall (opening a camera, a collection) is not overload.
- **drops**: datagrams the kernel dropped on the daemon's own UDP sockets (the `drops` column of
  /proc/net/udp and udp6, for the sockets of this process), at least `DROPS_MIN` within the
  last `RECENT_S` seconds: the loop did not read them in time.

The first viewer is always let in: with nobody watching there is nobody to protect, and a device
busy with its own stream (a slow board encoding in software, an emulated one) must still show it
to one viewer rather than to none.

A refusal is a 503 with Retry-After (core.errors.Overloaded), counted per reason for /metrics, and
logged once when refusing starts and once when it ends, not per request.

Core module: the decision, from samples. devices/headroom.py takes the samples on the daemon's
event loop: one tick every `TICK_S` (a clock read and a few multiplications), and the socket scan
every `DROPS_EVERY` ticks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TICK_S = 0.5
DROPS_EVERY = 4  # ticks: the socket scan every 2 s
SMOOTHING = 0.3  # weight of the newest tick in the busy share (about 2 s of memory)
LAG_LIMIT_S = 0.25
LATE_TICKS = 2  # within RECENT_S
DROPS_MIN = 50  # within RECENT_S
RECENT_S = 5.0
SETTLE_S = 3.0  # from a viewer's admission to its cost showing in the smoothed busy share
FIRST_VIEWER_COST = 0.01  # busy share one viewer is assumed to add before any was measured
REASONS = ("load", "lag", "drops")


@dataclass
class Headroom:
    """The decision, from samples (`tick`); no clock or /proc of its own, so tests drive it."""

    max_load: float
    busy: float = 0.0  # smoothed share of one core the loop thread used
    idle_busy: float | None = None  # the same with no viewers: the stream's own work
    per_viewer: float = FIRST_VIEWER_COST
    last_lag: float = 0.0
    late: list[float] = field(default_factory=list)  # when busy ticks woke LAG_LIMIT_S late
    drops: list[tuple[float, int]] = field(default_factory=list)  # (when, datagrams) recently
    drops_total: int = 0
    admitted: list[float] = field(default_factory=list)  # when viewers were admitted recently
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))

    def tick(self, now: float, busy: float, lag: float, viewers: int) -> None:
        """One sample: `busy` over the last tick, how late it woke (`lag`), viewers then."""
        self.busy = busy if self.busy == 0.0 else self.busy + SMOOTHING * (busy - self.busy)
        self.last_lag = lag
        if lag >= LAG_LIMIT_S and busy >= self.max_load / 2:
            self.late = [*self._recent(self.late, now), now]
        if viewers == 0:
            self.idle_busy = self.busy
        elif self.idle_busy is not None and viewers >= 2:
            # learned once a few viewers share the loop; one viewer's cost is too noisy to trust
            self.per_viewer = max(FIRST_VIEWER_COST / 10, (self.busy - self.idle_busy) / viewers)

    def dropped(self, now: float, count: int) -> None:
        if count > 0:
            self.drops_total += count
            self.drops = [d for d in self.drops if now - d[0] < RECENT_S] + [(now, count)]

    @staticmethod
    def _recent(times: list[float], now: float) -> list[float]:
        return [t for t in times if now - t < RECENT_S]

    def refusal(self, now: float, viewers: int | None = None) -> tuple[str, str] | None:
        """(reason, why) a new viewer must be refused now, or None: it may come in. `viewers`:
        how many there are now (those admitted lately who already left are not joining)."""
        if viewers == 0 and not self._recent_admissions(now):
            return None  # the first viewer: nobody to protect yet
        dropped = sum(count for at, count in self.drops if now - at < RECENT_S)
        if dropped >= DROPS_MIN:
            return "drops", (
                f"the kernel dropped {dropped} datagrams on the daemon's sockets in the last "
                f"{RECENT_S:.0f} s"
            )
        if len(self._recent(self.late, now)) >= LATE_TICKS:
            return "lag", (
                f"the event loop ran {LAG_LIMIT_S * 1000:.0f} ms or more late "
                f"{LATE_TICKS} times in the last {RECENT_S:.0f} s"
            )
        if self.max_load >= 1.0:  # the load check is off (a whole core: no room to keep)
            return None
        self.admitted = self._recent_admissions(now)
        coming = len(self.admitted) if viewers is None else min(len(self.admitted), viewers)
        if self.busy + self.per_viewer * (1 + coming) > self.max_load:
            joining = f" and {coming} joining" if coming else ""
            return "load", (
                f"the event loop is {self.busy * 100:.0f} % busy{joining}, and one more viewer "
                f"(about {self.per_viewer * 100:.1f} %) would pass stream.max_load "
                f"({self.max_load * 100:.0f} %)"
            )
        return None

    def _recent_admissions(self, now: float) -> list[float]:
        return [t for t in self.admitted if now - t < SETTLE_S]

    def admit(self, now: float) -> None:
        """A viewer came in: it counts as joining for `SETTLE_S`."""
        self.admitted = [*self._recent_admissions(now), now]
