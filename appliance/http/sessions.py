"""Viewer sessions: one per WHEP resource, each with a single exit path that logs why it closed.

Viewers (WHEP) and publishers (WHIP) are sessions alike, each kept in a registry of its role.
A session ends on DELETE, when its peer connection fails or closes (a viewer that vanished without
DELETE is found by ICE consent checks), when it has not connected within the connect timeout, or
when the daemon stops. Whatever the cause, `close()` runs once and the others keep watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from typing import Any, Protocol

from appliance.core.errors import SessionNotFound
from appliance.devices.memory import HeapTrimmer
from appliance.http.prometheus import Histogram
from appliance.rtc import close_quietly
from appliance.rtc.diagnose import Failure, why_failed

# What the registry sums over sessions for /metrics (keys of a session's describe()).
COUNTED = (
    "frames", "bytes", "packets", "retransmits", "retransmits_refused", "nacks", "plis", "firs",
    "dropped",
)  # fmt: skip
ENDED_KEPT = 1024  # sessions their peers ended, remembered so that their late DELETE is no error
RECENT_FAILURES = 16  # failed connections kept for /api/status, per role
FIRST_FRAME_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)

logger = logging.getLogger(__name__)


class ViewerMedia(Protocol):
    """What a session holds of its viewer's media path (rtc.FastVideo or rtc.AiortcVideo)."""

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def new_session_id() -> str:
    """An unguessable session id: the WHEP resource URL is the only credential for DELETE/PATCH."""
    return secrets.token_urlsafe(16)


class Session:
    """One viewer (WHEP) or publisher (WHIP) of a stream: its peer connection and media path."""

    def __init__(
        self,
        session_id: str,
        pc: Any,
        media: ViewerMedia,
        remote_ufrag: str | None,
        peer: str,
        stream: str,
        role: str = "viewer",
    ) -> None:
        self.id = session_id
        self.stream = stream
        self.role = role
        self.pc = pc
        self.media = media
        self.remote_ufrag = remote_ufrag
        self.peer = peer
        self.etag = f'"{secrets.token_hex(8)}"'
        self.created = time.monotonic()
        self.connected_at: float | None = None
        self.closed_reason: str | None = None
        self._closed = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        return "closed" if self.closed_reason else str(self.pc.connectionState)

    def watch(self, registry: SessionRegistry, connect_timeout: float) -> None:
        """Close the session when its connection fails, or if it does not connect in time."""

        def on_state() -> None:
            state = self.pc.connectionState
            if state == "connected" and self.connected_at is None:
                self.connected_at = time.monotonic()
                logger.info("%s %s: connected (%s)", self.role, self.id[:8], self.peer)
                registry.heap.soon()  # what its set-up freed goes back to the system
            elif state == "failed":
                # Asked now: closing the connection resets what ICE and DTLS got to.
                failure = why_failed(self.pc, connected=self.connected_at is not None)
                registry.close_soon(self, f"connection failed: {failure}", failure)
            elif state == "closed":  # the peer ended DTLS (close_notify): its DELETE may follow
                registry.close_soon(self, "connection closed by the peer", by_peer=True)

        self.pc.on("connectionstatechange", on_state)

        async def deadline() -> None:
            await asyncio.sleep(connect_timeout)
            if self.connected_at is None:
                failure = why_failed(self.pc, connected=False)
                reason = f"did not connect within {connect_timeout:g} s: {failure}"
                await registry.close(self, reason, failure)

        self._watchdog = asyncio.get_running_loop().create_task(
            deadline(), name=f"session-deadline[{self.id[:8]}]"
        )

    async def _close(self, reason: str) -> None:
        if self.closed_reason is not None:
            await self._closed.wait()
            return
        self.closed_reason = reason
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        try:
            self.media.close()
            await close_quietly(self.pc)
        finally:
            self._closed.set()
            seconds = time.monotonic() - self.created
            m = self.media.describe()
            logger.info(
                "%s %s: closed: %s (after %.1f s, %d frames, %d bytes)",
                self.role,
                self.id[:8],
                reason,
                seconds,
                m["frames"],
                m["bytes"],
            )

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        media = self.media.describe()
        first = media.pop("first_frame_at", None)
        return {
            "id": self.id,
            "stream": self.stream,
            "state": self.state,
            "peer": self.peer,
            "age_s": round(now - self.created, 3),
            "connected_s": round(now - self.connected_at, 3) if self.connected_at else None,
            # From the WHEP POST to the first access unit sent to this viewer (a keyframe).
            "first_frame_s": round(first - self.created, 3) if first is not None else None,
            **media,
        }


class SessionRegistry:
    """All live sessions of one role, by id. The only place sessions are added or removed."""

    def __init__(self, heap: HeapTrimmer | None = None) -> None:
        self._sessions: dict[str, Session] = {}
        # Trims the heap after sessions connect or close; the daemon's registries share one.
        self.heap = heap if heap is not None else HeapTrimmer()
        self._closing: set[asyncio.Task[None]] = set()
        self.created: dict[str, int] = {}  # by stream
        self.retired: dict[str, dict[str, float]] = {}  # closed sessions' totals, by stream
        self.first_frame: dict[str, Histogram] = {}  # by stream
        self._observed: set[str] = set()
        self._reserved: Counter[str] = Counter()  # by stream: POSTs being answered
        self._reserved_by_peer: Counter[str] = Counter()
        # Connections that failed or never connected, by Failure.code, and the last few of them.
        self.failures: Counter[str] = Counter()
        self.recent_failures: deque[dict[str, Any]] = deque(maxlen=RECENT_FAILURES)
        # Sessions their peers ended lately, id -> stream: a DELETE after that is answered 200.
        self._ended: OrderedDict[str, str] = OrderedDict()

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session
        self.created[session.stream] = self.created.get(session.stream, 0) + 1

    def count(self, stream: str | None = None) -> int:
        """Sessions of one stream or of all: live ones, and those being set up (`reserve`)."""
        if stream is None:
            return len(self._sessions) + self._reserved.total()
        live = sum(1 for s in self._sessions.values() if s.stream == stream)
        return live + self._reserved[stream]

    def half_open(self, peer: str) -> int:
        """Sessions of one client address that have not connected yet, set-ups included."""
        waiting = sum(1 for s in self._sessions.values() if s.peer == peer and not s.connected_at)
        return waiting + self._reserved_by_peer[peer]

    @contextlib.contextmanager
    def reserve(self, stream: str, peer: str) -> Iterator[None]:
        """Hold a place for a session while its offer is answered, so that limits checked before
        the first await cannot be overrun by concurrent requests. `add` the session inside."""
        self._reserved[stream] += 1
        self._reserved_by_peer[peer] += 1
        try:
            yield
        finally:
            self._reserved[stream] -= 1
            self._reserved_by_peer[peer] -= 1
            self._reserved += Counter()  # drop the zeros: the table stays as small as the load
            self._reserved_by_peer += Counter()

    def of_stream(self, stream: str) -> list[Session]:
        return [s for s in self._sessions.values() if s.stream == stream]

    def histogram(self, stream: str) -> Histogram:
        """Time to first frame of the stream's sessions."""
        if stream not in self.first_frame:
            self.first_frame[stream] = Histogram(FIRST_FRAME_BUCKETS)
        return self.first_frame[stream]

    def observe_first_frames(self) -> None:
        """Put each session's time to first frame in its histogram, once it is known."""
        for session in self._sessions.values():
            self._observe(session, session.describe())

    def _observe(self, session: Session, described: dict[str, Any]) -> None:
        first = described.get("first_frame_s")
        if first is not None and session.id not in self._observed:
            self._observed.add(session.id)
            self.histogram(session.stream).observe(first)

    def streams(self) -> set[str]:
        """Every stream that has had a session."""
        return set(self.created) | {s.stream for s in self._sessions.values()}

    def totals(self, stream: str) -> dict[str, float]:
        """Counters over every session of a stream, live and closed."""
        out = dict(self.retired.get(stream) or dict.fromkeys(COUNTED, 0))
        for session in self.of_stream(stream):
            d = session.describe()
            for key in COUNTED:
                out[key] += d.get(key) or 0
        return out

    def ended_recently(self, session_id: str, stream: str) -> bool:
        """Whether `session_id` was a session of `stream` that its peer ended lately (one of the
        last ENDED_KEPT): a DELETE for it has nothing left to do. Sessions ended otherwise (a
        DELETE, a replacing publisher, a failure) answer a later DELETE 404, which says so."""
        return self._ended.get(session_id) == stream

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id!r}") from None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    async def close(
        self,
        session: Session,
        reason: str,
        failure: Failure | None = None,
        by_peer: bool = False,
    ) -> None:
        """Close `session` once; `failure` says why its connection failed, when it did, and
        `by_peer` that the peer itself ended it (its DELETE is then answered 200)."""
        if self._sessions.pop(session.id, None) is None:
            await session._close(reason)
            return
        if by_peer:
            self._ended[session.id] = session.stream  # before any await: its DELETE may be near
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
        if failure is not None:
            self.failures[failure.code] += 1
            self.recent_failures.append(
                {
                    "id": session.id[:8],
                    "stream": session.stream,
                    "peer": session.peer,
                    "code": failure.code,
                    "reason": failure.text,
                    "age_s": round(time.monotonic() - session.created, 3),
                    "at": round(time.time(), 3),
                }
            )
        await session._close(reason)
        self.heap.soon()
        d = session.describe()
        self._observe(session, d)
        self._observed.discard(session.id)
        retired = self.retired.setdefault(session.stream, dict.fromkeys(COUNTED, 0))
        for key in COUNTED:
            retired[key] += d.get(key) or 0

    def close_soon(
        self,
        session: Session,
        reason: str,
        failure: Failure | None = None,
        by_peer: bool = False,
    ) -> None:
        """Close from a synchronous callback (a connection state change)."""
        if session.closed_reason is not None:
            return
        task = asyncio.get_running_loop().create_task(
            self.close(session, reason, failure, by_peer), name=f"session-close[{session.id[:8]}]"
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_many(self, sessions: list[Session], reason: str) -> None:
        await asyncio.gather(*(self.close(s, reason) for s in sessions))

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(self.close(s, reason) for s in self))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self.heap.close()
