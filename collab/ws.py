"""The WebSocket transport: authenticate, upgrade, and adapt the socket to a ``Channel``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from aiohttp import WSMessage, WSMsgType, web

from .auth import AuthError, authenticate, json_error, request_of
from .channel import Kind, Received
from .closecodes import CloseCode
from .config import Settings
from .connection import Connection, RateLimits, SendLimits
from .keys import HOOKS, LOOP_CONTEXT, METRICS, RATE_LIMITS, SEND_LIMITS, SETTINGS
from .loop import run

log = logging.getLogger("collab.ws")

_ALIVE = Received(Kind.ALIVE)


class WebSocketChannel:
    """Adapts aiohttp's ``WebSocketResponse`` to the ``Channel`` protocol."""

    __slots__ = ("_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        self._ws = ws
        self._transport = transport

    async def send(self, frame: bytes) -> None:
        await self._ws.send_bytes(frame)

    def receive(self) -> Awaitable[WSMessage]:
        return self._ws.receive()

    def classify(self, raw: WSMessage) -> Received:
        kind = raw.type
        if kind is WSMsgType.BINARY:
            return Received(Kind.BINARY, raw.data)
        if kind is WSMsgType.PING:
            return Received(Kind.PING, raw.data)
        if kind is WSMsgType.PONG:
            return _ALIVE
        if kind is WSMsgType.TEXT:
            return Received(Kind.TEXT)
        ws = self._ws
        if kind is WSMsgType.ERROR:
            error = ws.exception()
            code = getattr(error, "code", None) or ws.close_code or CloseCode.PROTOCOL_ERROR
            return Received(Kind.ERROR, code=code, reason=str(error))
        return Received(Kind.CLOSED, code=ws.close_code)

    async def pong(self, data: bytes) -> None:
        await self._ws.pong(data)

    async def ping(self) -> None:
        await self._ws.ping()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def close(self, code: int, reason: str) -> None:
        # drain=False: a stalled reader must not hold up its own closing.
        async with asyncio.timeout(5):
            await self._ws.close(code=code, message=reason.encode()[:120], drain=False)


def document_name(request: web.Request) -> str:
    """The URL-decoded document name, or an HTTP 400 before any upgrade."""
    name = request.match_info["doc"]
    limit = request.app[SETTINGS].max_name_length
    if not 1 <= len(name) <= limit:
        request.app[METRICS].refused("bad_name")
        raise json_error(
            web.HTTPBadRequest, "invalid_name", f"document name must be 1 to {limit} characters"
        )
    if "\x00" in name:  # PostgreSQL cannot store it; every other character is fine
        request.app[METRICS].refused("bad_name")
        raise json_error(
            web.HTTPBadRequest, "invalid_name", "document name must not contain NUL (%00)"
        )
    return name


def peer_of(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(request.remote or "?")


def connection_limits(settings: Settings) -> tuple[SendLimits, RateLimits]:
    """The per-connection limits the settings name (built once, by the app)."""
    send = SendLimits(
        queue_limit=settings.queue_limit,
        max_queue_bytes=settings.max_queue_bytes,
        stall_timeout=settings.stall_timeout,
    )
    rate = RateLimits(
        messages=settings.rate_messages,
        bytes=settings.rate_bytes,
        max_message_size=settings.max_message_size,
    )
    return send, rate


class _WebSocket(web.WebSocketResponse):
    """aiohttp's socket, whose own close for an oversized message says why.

    aiohttp closes a socket that sends a message above ``max_msg_size`` with
    1009 and no reason; a stock client (or a person reading its console) then
    learns nothing (issue #16).
    """

    async def close(
        self, *, code: int = CloseCode.NORMAL, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == CloseCode.MESSAGE_TOO_BIG and not message:
            message = b"message above the server's --max-message-size"
        return await super().close(code=code, message=message, drain=drain)


def _bytes_are_signs_of_life(request: web.Request, conn: Connection) -> None:
    """Count every read from the socket as a sign of life, not only whole messages.

    A client uploading a big message over a slow link sends for longer than
    the heartbeat, and its pong waits behind that message in the TCP stream:
    without this it was dropped as unresponsive mid-upload (issue #16).
    aiohttp calls this hook on every read for its own heartbeat, which collab
    leaves off; where a later aiohttp lacks it, only whole messages count.
    """
    protocol = request.protocol
    if getattr(protocol, "_data_received_cb", False) is None:
        protocol._data_received_cb = conn.alive


def websocket_route(request: web.Request) -> Awaitable[web.StreamResponse]:
    """GET /ws/{doc}: authenticate, upgrade, then run the connection loop over the socket.

    Not a coroutine: the loop's own coroutine is the request's awaitable, so an
    idle WebSocket keeps no frame of this module (S5).
    """
    return run(WebSocketOpening(request), request.app[LOOP_CONTEXT], "websocket")


class WebSocketOpening:
    """Everything that can refuse a stranger happens before the upgrade, so no
    socket or room is ever created for one (the Origin and Host checks ran
    already, in guard.py)."""

    __slots__ = ("_response", "request")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self._response: web.WebSocketResponse | None = None

    @property
    def response(self) -> web.WebSocketResponse:
        assert self._response is not None, "open() answers or raises"
        return self._response

    async def open(self) -> tuple[Connection, WebSocketChannel] | None:
        request = self.request
        app = request.app
        metrics = app[METRICS]
        name = document_name(request)
        peer = peer_of(request)
        try:
            principal = await authenticate(
                app[HOOKS], request_of(request, name, write=False, transport="websocket")
            )
        except AuthError as exc:
            exc.report(log, metrics, name, peer)
            if exc.close_code is None:
                raise exc.http() from None
            # The application asked for a close code the browser can see.
            self._response = refused = web.WebSocketResponse()
            await refused.prepare(request)
            await refused.close(code=exc.close_code, message=exc.reason.encode()[:120])
            return None

        settings = app[SETTINGS]
        # No per-socket heartbeat timer: the room manager pings silent
        # connections on one timer for the whole server, so pongs come to us.
        self._response = ws = _WebSocket(
            max_msg_size=settings.max_message_size,
            autoping=False,
            compress=settings.ws_compression,
        )
        await ws.prepare(request)
        channel = WebSocketChannel(ws, request.transport)
        conn = Connection(
            channel,
            doc=name,
            peer=peer,
            limits=app[SEND_LIMITS],
            rate=app[RATE_LIMITS],
            traffic=metrics.traffic,
            can_write=principal.can_write,
            principal=principal,
        )
        # The server-wide tick closes the socket with 4401 once the token expires.
        conn.expires = principal.expires_at
        _bytes_are_signs_of_life(request, conn)
        return conn, channel
