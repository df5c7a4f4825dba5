"""The WebSocket route: validate, upgrade, join the room, pump frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from .closecodes import CloseCode
from .connection import Connection, SendLimits
from .keys import MANAGER, SETTINGS
from .protocol import ProtocolError
from .store import StoreError

log = logging.getLogger("collab.ws")

MAX_NAME_LENGTH = 512


class WebSocketChannel:
    """Adapts aiohttp's ``WebSocketResponse`` to the ``Channel`` protocol."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def send(self, frame: bytes) -> None:
        await self._ws.send_bytes(frame)

    async def close(self, code: int, reason: str) -> None:
        # drain=False: a stalled reader must not hold up its own closing.
        async with asyncio.timeout(5):
            await self._ws.close(code=code, message=reason.encode()[:120], drain=False)


def document_name(request: web.Request) -> str:
    """The URL-decoded document name, or an HTTP 400 before any upgrade."""
    name = request.match_info["doc"]
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise web.HTTPBadRequest(text=f"document name must be 1 to {MAX_NAME_LENGTH} characters")
    return name


def peer_of(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(request.remote or "?")


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    manager = request.app[MANAGER]
    name = document_name(request)
    peer = peer_of(request)
    ws = web.WebSocketResponse(
        max_msg_size=settings.max_message_size,
        heartbeat=settings.heartbeat,
    )
    await ws.prepare(request)
    conn = Connection(
        WebSocketChannel(ws),
        doc=name,
        peer=peer,
        limits=SendLimits(
            queue_limit=settings.queue_limit,
            max_queue_bytes=settings.max_queue_bytes,
            stall_timeout=settings.stall_timeout,
        ),
    )
    try:
        room = await manager.acquire(name)
    except StoreError as exc:
        log.error("cannot open document %r for %s: %s", name, peer, exc)
        conn.close(CloseCode.INTERNAL_ERROR, "document could not be loaded")
        await conn.wait_closed()
        return ws
    except Exception:
        log.exception("cannot open document %r for %s", name, peer)
        conn.close(CloseCode.INTERNAL_ERROR, "document could not be loaded")
        await conn.wait_closed()
        return ws
    room.join(conn)
    log.info("open doc=%r peer=%s conn=%d", name, peer, conn.id)
    try:
        async for msg in ws:
            if conn.closed:
                break
            if msg.type is WSMsgType.BINARY:
                try:
                    room.handle(conn, msg.data)
                except ProtocolError as exc:
                    conn.close(exc.code, exc.reason)
                    break
            elif msg.type is WSMsgType.TEXT:
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
    finally:
        room.leave(conn)
        conn.mark_closed(ws.close_code)
        with contextlib.suppress(Exception):
            await conn.wait_closed()
        log.info("close doc=%r peer=%s conn=%d code=%s", name, peer, conn.id, conn.close_code)
    return ws
