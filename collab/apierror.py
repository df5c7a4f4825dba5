"""Every error of the HTTP API as JSON: ``{"error": "<stable_code>", "message": "..."}``.

Handlers raise ``ApiError``; ``json_errors`` turns it, and every other
failure of an API route (aiohttp's own 413, a plain-text ``HTTPException``,
an unexpected exception), into that JSON shape, and ``no_route`` answers
paths under ``/api/`` that match no route (404, 405), so a
client can branch on ``error`` without parsing prose.  The codes are listed
in docs/http-api.md; they are part of the API and do not change.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("collab.http")

#: The code of a plain-text error, by HTTP status.
_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}

#: Headers of an error response worth keeping when it is rewritten as JSON.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


class ApiError(Exception):
    """An API refusal: HTTP ``status``, stable ``code`` and a sentence for people."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 ``invalid_json``."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def json_errors(handler: Handler) -> Handler:
    """``handler`` answering every failure with a JSON error (an API route's last wrapper)."""

    @functools.wraps(handler)
    async def api_route(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise  # a redirect, or a JSON error already (auth, guard)
            return _as_json(request, exc)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(
                500, "internal_error", "the server failed to answer this request; it was logged"
            )

    return api_route


async def no_route(request: web.Request) -> web.StreamResponse:
    """The API's answer where no route matches: JSON 405 (with Allow) or 404 ``no_route``."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    allowed.discard("*")
    if allowed:
        listed = ", ".join(sorted(allowed))
        return error_response(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path!r} (allowed: {listed})",
            {"Allow": listed},
        )
    return error_response(404, "no_route", f"there is no API route {request.path!r}")


def _as_json(request: web.Request, exc: web.HTTPException) -> web.Response:
    code = _STATUS_CODES.get(exc.status, f"http_{exc.status}")
    message = exc.text or exc.reason
    if message == f"{exc.status}: {exc.reason}":  # aiohttp's placeholder text
        message = exc.reason
    headers = {h: exc.headers[h] for h in _KEPT_HEADERS if h in exc.headers}
    return error_response(exc.status, code, message, headers)
