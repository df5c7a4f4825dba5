"""The WebSocket route: check, upgrade, join the room, pump frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from .auth import AuthError, authorize, json_error
from .closecodes import CloseCode
from .config import Settings
from .connection import Connection, RateLimits, SendLimits
from .keys import MANAGER, METRICS, RATE_LIMITS, SEND_LIMITS, SETTINGS
from .metrics import Metrics
from .protocol import ProtocolError
from .room import Room
from .rooms import RoomManager
from .store import CorruptDocument, StoreError

log = logging.getLogger("collab.ws")

#: Frames handled from one socket before the handler lets other tasks run.
YIELD_EVERY = 64

#: What receive() returns once the socket is closing or closed.
_CLOSED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})

#: Goodbyes that are nobody's fault: no warning for these (an open socket is
#: closed with 4401 only when its token expires).
_ORDINARY_CLOSES = frozenset(
    {CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.UNAUTHORIZED, 1005, 1006, None}
)


class WebSocketChannel:
    """Adapts aiohttp's ``WebSocketResponse`` to the ``Channel`` protocol."""

    __slots__ = ("_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        self._ws = ws
        self._transport = transport

    async def send(self, frame: bytes) -> None:
        await self._ws.send_bytes(frame)

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


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """Check, upgrade, serve, log one close line.

    One coroutine from upgrade to close, reading with ``receive()``: each
    idle connection holds its suspended frames, so there are as few as can be.
    """
    settings = request.app[SETTINGS]
    manager = request.app[MANAGER]
    metrics = request.app[METRICS]
    name = document_name(request)
    peer = peer_of(request)
    # Everything that can refuse a stranger happens before the upgrade, so
    # no socket or room is ever created for one (the Origin and Host checks
    # ran already, in guard.py's middleware).
    try:
        grant = authorize(request, settings.auth_secret, name, write=False)
    except AuthError as exc:
        metrics.refused(exc.metric)
        log.warning(
            "refused doc=%r peer=%s status=%d reason=%s",
            name,
            peer,
            exc.status,
            exc.reason,
            extra={"doc": name, "peer": peer, "code": exc.status, "reason": exc.reason},
        )
        raise exc.http() from None

    # No per-socket heartbeat timer: the room manager pings silent
    # connections on one timer for the whole server, so pongs come to us.
    ws = web.WebSocketResponse(
        max_msg_size=settings.max_message_size,
        autoping=False,
        compress=settings.ws_compression,
    )
    await ws.prepare(request)
    conn = Connection(
        WebSocketChannel(ws, request.transport),
        doc=name,
        peer=peer,
        limits=request.app[SEND_LIMITS],
        rate=request.app[RATE_LIMITS],
        traffic=metrics.traffic,
        can_write=grant.can_write,
    )
    # The server-wide tick closes the socket with 4401 once the token expires.
    conn.expires = grant.expires
    manager.connection_count += 1
    room: Room | None = None
    try:
        room = await _enter(conn, manager, settings, metrics)
        if room is not None:
            handled = 0
            while not conn.closed:
                msg = await ws.receive()
                handled += 1
                if handled % YIELD_EVERY == 0:
                    # Frames already buffered never suspend receive(): without
                    # this, a burst runs to its end before other sockets are
                    # read and before the room's per-turn flush sends anything.
                    await asyncio.sleep(0)
                if msg.type is WSMsgType.BINARY:
                    if not conn.received(len(msg.data)):
                        metrics.refused("rate_limited")
                        conn.close(CloseCode.RATE_LIMITED, "sending too fast")
                        break
                    try:
                        room.handle(conn, msg.data)
                    except ProtocolError as exc:
                        metrics.refused(exc.code.name.lower())
                        conn.close(exc.code, exc.reason)
                        break
                elif msg.type is WSMsgType.PING:
                    conn.alive()
                    await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    conn.alive()
                elif msg.type is WSMsgType.TEXT:
                    metrics.refused("text_frame")
                    conn.close(
                        CloseCode.UNSUPPORTED_DATA, "text frames are not part of the Yjs protocol"
                    )
                    break
                elif msg.type is WSMsgType.ERROR:
                    # aiohttp has already closed the socket (1009 for an oversized frame).
                    error = ws.exception()
                    code = getattr(error, "code", None) or ws.close_code or CloseCode.PROTOCOL_ERROR
                    conn.close(code, str(error), abnormal=True)
                    break
                elif msg.type in _CLOSED:
                    break
    finally:
        if room is not None:
            room.leave(conn)
        conn.mark_closed(ws.close_code)
        with contextlib.suppress(Exception):
            await conn.wait_closed()
        manager.connection_count -= 1
        metrics.closed(conn.close_code)
        # One line per connection closed; a warning when the client was at fault.
        level = logging.INFO if conn.close_code in _ORDINARY_CLOSES else logging.WARNING
        log.log(
            level,
            "close doc=%r peer=%s conn=%d code=%s reason=%s",
            name,
            peer,
            conn.id,
            conn.close_code,
            conn.close_reason or "-",
            extra={
                "doc": name,
                "peer": peer,
                "conn": conn.id,
                "code": conn.close_code,
                "reason": conn.close_reason or None,
                "event": "close",
            },
        )
    return ws


async def _enter(
    conn: Connection, manager: RoomManager, settings: Settings, metrics: Metrics
) -> Room | None:
    """Open the connection's room and join it; None (and a close) when it cannot."""
    name = conn.doc
    if manager.connection_count > settings.max_connections:
        metrics.refused("server_full")
        conn.close(
            CloseCode.TRY_AGAIN_LATER, f"server is at {settings.max_connections} connections"
        )
        return None
    try:
        room = await manager.acquire(name)
    except CorruptDocument as exc:
        log.error("cannot open document %r for %s: %s", name, conn.peer, exc)
        conn.close(CloseCode.INTERNAL_ERROR, "document is corrupt")
        return None
    except StoreError as exc:  # the database is down: worth a retry
        log.error("cannot open document %r for %s: %s", name, conn.peer, exc)
        conn.close(CloseCode.TRY_AGAIN_LATER, "store unavailable")
        return None
    except Exception:
        log.exception("cannot open document %r for %s", name, conn.peer)
        conn.close(CloseCode.INTERNAL_ERROR, "document could not be loaded")
        return None
    if len(room.connections) >= settings.max_connections_per_doc:
        metrics.refused("document_full")
        conn.close(
            CloseCode.TRY_AGAIN_LATER,
            f"document is at {settings.max_connections_per_doc} connections",
        )
        manager.release_if_idle(room)
        return None
    room.join(conn)
    log.info(
        "open doc=%r peer=%s conn=%d mode=%s",
        name,
        conn.peer,
        conn.id,
        "write" if conn.can_write else "read",
        extra={"doc": name, "peer": conn.peer, "conn": conn.id, "event": "open"},
    )
    return room
