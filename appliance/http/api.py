"""A camera's controls over HTTP: `GET /api/controls?camera=<name>` lists them, `PATCH` sets
some, all or none, after checking the whole request (JSON no deeper than 32 levels, no NaN or
Infinity). Without `camera`, the first camera's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from appliance.core.controls import ControlError
from appliance.core.errors import BadRequest, RequestError, SessionNotFound, printable
from appliance.http.resource import body_text
from appliance.http.status import STATUS_KEY

logger = logging.getLogger(__name__)


async def controls_handler(request: web.Request) -> web.Response:
    """GET: the camera's controls. PATCH: set some ({"name": value, ...}), all or none."""
    try:
        camera = request.app[STATUS_KEY].camera(request.query.get("camera"))
    except SessionNotFound as e:
        return _json_error(404, str(e))
    slot = camera.slot
    try:
        if request.method == "PATCH":
            try:
                values = parse_json(await body_text(request, "application/json"))
            except RequestError as e:
                return _json_error(e.status, str(e))
            if not isinstance(values, dict) or not values:
                return _json_error(400, 'send an object of control values: {"brightness": 128}')
            controls = slot.set_controls(values)
            logger.info("camera %s: controls set: %s", camera.name, printable(json.dumps(values)))
        else:
            controls = slot.controls()
    except ControlError as e:
        if slot.current is None:
            return _json_error(503, str(e), retry_after=2)
        return _json_error(400, str(e))
    return web.json_response({"controls": [c.as_json() for c in controls]})


MAX_JSON_DEPTH = 32


def parse_json(text: str) -> Any:
    """A JSON document (RFC 8259) as the API takes it: nested at most MAX_JSON_DEPTH deep, and no
    NaN or Infinity (not JSON, though Python's parser takes them); BadRequest says why not."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:  # the nesting, counted before the parser recurses into it
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif char in "]}":
            depth -= 1

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=constant)
    except ValueError as e:
        raise BadRequest(f"not JSON: {e}") from None


def _json_error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response
