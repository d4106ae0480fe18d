"""The errors the daemon raises on purpose, and nothing else.

ApplianceError
├── ConfigError          a config key has a value we refuse (names the key)
├── DeviceError          a capture or encoder device is missing or failed
└── RequestError         a client asked for something we cannot do (mapped to HTTP in whep.py)
    ├── BadOffer             the SDP offer cannot be parsed or answered        -> 400
    ├── NoCommonCodec        the offer has no codec we can send                -> 406
    ├── UnsupportedMedia     wrong Content-Type                                -> 415
    ├── Forbidden            a feature this device has turned off              -> 403
    ├── SessionNotFound      no such stream, or no such WHEP/WHIP session      -> 404
    ├── Conflict             the stream has a publisher already (WHIP)         -> 409
    ├── PreconditionFailed   If-Match does not match the session's ETag        -> 412
    ├── Unprocessable        a PATCH we understand but do not support          -> 422
    ├── SourceNotReady       the stream has produced no keyframe yet           -> 503
    ├── Overloaded           the viewer limit is reached                       -> 503
    └── TooManyRequests      one client opens sessions too fast                -> 429
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error raised on purpose by appliance."""


class ConfigError(ApplianceError):
    """A configuration value is refused. The message names the key and what it accepts."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config: {key}: {message}")
        self.key = key


class DeviceError(ApplianceError):
    """A device (camera, encoder, microphone) is missing or failed."""


class RequestError(ApplianceError):
    """A client request that cannot be served. `status` is the HTTP status it maps to."""

    status = 400
    retry_after: int | None = None


class BadRequest(RequestError):
    status = 400


class BadOffer(BadRequest):
    """An SDP offer or trickle fragment that cannot be answered."""


class UriTooLong(RequestError):
    status = 414


class NoCommonCodec(RequestError):
    status = 406


class UnsupportedMedia(RequestError):
    status = 415


class Forbidden(RequestError):
    status = 403


class SessionNotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class PreconditionFailed(RequestError):
    status = 412


class Unprocessable(RequestError):
    status = 422


class SourceNotReady(RequestError):
    status = 503
    retry_after = 1


class Overloaded(RequestError):
    status = 503
    retry_after = 5


class TooManyRequests(RequestError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def printable(text: str, limit: int = 200) -> str:
    """Text from a request as a log line may carry it: control characters (a `%0a` in a path would
    forge a line), quotes and non-ASCII escaped, and at most `limit` characters."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in escaped)
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."
