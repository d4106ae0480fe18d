"""Viewer sessions: one per WHEP resource, each with a single exit path that logs why it closed.

A session ends on DELETE, when its peer connection fails or closes (a viewer that vanished without
DELETE is found by ICE consent checks), when it has not connected within the connect timeout, or
when the daemon stops. Whatever the cause, `close()` runs once and the others keep watching.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any, Protocol

from appliance.errors import SessionNotFound
from appliance.metrics import Histogram

# What the registry sums over sessions for /metrics (keys of a session's describe()).
COUNTED = ("frames", "bytes", "packets", "retransmits", "nacks", "plis", "firs", "dropped")
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
    """One viewer: its peer connection and its media path."""

    def __init__(
        self, session_id: str, pc: Any, media: ViewerMedia, remote_ufrag: str | None, peer: str
    ) -> None:
        self.id = session_id
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
                logger.info("viewer %s: connected (%s)", self.id[:8], self.peer)
            elif state in ("failed", "closed"):
                registry.close_soon(self, f"connection {state}")

        self.pc.on("connectionstatechange", on_state)

        async def deadline() -> None:
            await asyncio.sleep(connect_timeout)
            if self.connected_at is None:
                await registry.close(self, f"did not connect within {connect_timeout:g} s")

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
            await self.pc.close()
        finally:
            self._closed.set()
            seconds = time.monotonic() - self.created
            m = self.media.describe()
            logger.info(
                "viewer %s: closed: %s (after %.1f s, %d frames, %d bytes)",
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
            "state": self.state,
            "peer": self.peer,
            "age_s": round(now - self.created, 3),
            "connected_s": round(now - self.connected_at, 3) if self.connected_at else None,
            # From the WHEP POST to the first access unit sent to this viewer (a keyframe).
            "first_frame_s": round(first - self.created, 3) if first is not None else None,
            **media,
        }


class SessionRegistry:
    """All live sessions, by id. The only place sessions are added or removed."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.created_total = 0
        self.retired: dict[str, float] = dict.fromkeys(COUNTED, 0)  # closed sessions' totals
        self.first_frame = Histogram(FIRST_FRAME_BUCKETS)
        self._observed: set[str] = set()

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session
        self.created_total += 1

    def observe_first_frames(self) -> None:
        """Put each session's time to first frame in the histogram, once it is known."""
        for session in self._sessions.values():
            self._observe(session, session.describe())

    def _observe(self, session: Session, described: dict[str, Any]) -> None:
        first = described.get("first_frame_s")
        if first is not None and session.id not in self._observed:
            self._observed.add(session.id)
            self.first_frame.observe(first)

    def totals(self) -> dict[str, float]:
        """Counters over every session, live and closed."""
        out = dict(self.retired)
        for session in self._sessions.values():
            d = session.describe()
            for key in COUNTED:
                out[key] += d.get(key) or 0
        return out

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id!r}") from None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    async def close(self, session: Session, reason: str) -> None:
        if self._sessions.pop(session.id, None) is None:
            await session._close(reason)
            return
        await session._close(reason)
        d = session.describe()
        self._observe(session, d)
        self._observed.discard(session.id)
        for key in COUNTED:
            self.retired[key] += d.get(key) or 0

    def close_soon(self, session: Session, reason: str) -> None:
        """Close from a synchronous callback (a connection state change)."""
        if session.closed_reason is not None:
            return
        task = asyncio.get_running_loop().create_task(
            self.close(session, reason), name=f"session-close[{session.id[:8]}]"
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(self.close(s, reason) for s in self))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
