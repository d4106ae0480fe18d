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
        return {
            "id": self.id,
            "state": self.state,
            "peer": self.peer,
            "age_s": round(now - self.created, 3),
            "connected_s": round(now - self.connected_at, 3) if self.connected_at else None,
            **self.media.describe(),
        }


class SessionRegistry:
    """All live sessions, by id. The only place sessions are added or removed."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session

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
        self._sessions.pop(session.id, None)
        await session._close(reason)

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
