"""The connection loop: one client on one document, from admission to its close line.

Every transport runs the same loop over its ``Channel``: admission (server
and document limits, loading the room), then receive, rate limit, decode,
the gating hooks, dispatch to the room, and the mapping of every failure
to a close code; finally leaving the room, the hooks' ``on_disconnect`` and
one log line.  A transport only authenticates and adapts its I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from . import protocol
from .channel import Channel, Kind
from .closecodes import CloseCode
from .config import Settings
from .connection import Connection
from .hooks import (
    ConnectionEvent,
    HookFailed,
    HookRunner,
    IncomingAwareness,
    IncomingUpdate,
    Reject,
    Transport,
)
from .metrics import Metrics
from .protocol import ProtocolError
from .room import Room
from .rooms import RoomManager
from .store import CorruptDocument, StoreError

log = logging.getLogger("collab.loop")

R_co = TypeVar("R_co", covariant=True)

#: Frames handled from one connection before the loop lets other tasks run.
YIELD_EVERY = 64

#: Goodbyes that are nobody's fault: no warning for these (an open socket is
#: closed with 4401 only when its token expires).
_ORDINARY_CLOSES = frozenset(
    {CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.UNAUTHORIZED, 1005, 1006, None}
)


@dataclass(frozen=True, slots=True)
class Context:
    """What the loop needs of the server, shared by all its connections."""

    manager: RoomManager
    settings: Settings
    metrics: Metrics
    hooks: HookRunner


class Opening(Protocol[R_co]):
    """A transport's side of opening a connection: authenticate and open its channel."""

    async def open(self) -> tuple[Connection, Channel] | None:
        """The connection and its channel, or None when refused (and answered)."""

    @property
    def response(self) -> R_co:
        """What the transport's request handler returns, once ``open`` ran."""


class _Opened:
    """An ``Opening`` whose connection is already open."""

    __slots__ = ("_opened",)

    def __init__(self, conn: Connection, channel: Channel) -> None:
        self._opened = (conn, channel)

    async def open(self) -> tuple[Connection, Channel]:
        return self._opened

    @property
    def response(self) -> None:
        return None


def serve(
    conn: Connection,
    channel: Channel,
    ctx: Context,
    transport: Transport,
    *,
    label: str | None = None,
) -> Coroutine[Any, Any, None]:
    """Serve ``conn`` (already open on ``channel``) until it closes; see ``run``."""
    return run(_Opened(conn, channel), ctx, transport, label=label)


async def run(
    opening: Opening[R_co],
    ctx: Context,
    transport: Transport,
    *,
    label: str | None = None,
) -> R_co:
    """Open a connection and serve it until it closes; never raises for anything the
    client did.  Returns the opening's response.

    ``label`` is the ``transport`` label of the connection metrics (the
    HTTP fallback's "sse" and "poll" are both the hooks' "http").

    One coroutine from authentication to the close line (``open`` returns
    before the loop starts, and there is no helper coroutine for the receive
    loop): an idle connection is suspended here and in the transport's
    receive, nowhere else (S5: bytes per idle connection).
    """
    opened = await opening.open()
    if opened is None:
        return opening.response
    conn, channel = opened
    del opened  # the frame lives as long as the connection: keep no more than it needs
    manager, metrics, hooks = ctx.manager, ctx.metrics, ctx.hooks
    manager.connection_count += 1
    label = label or transport
    metrics.opened(label)
    room: Room | None = None
    try:
        room = await _admit(conn, ctx)
        if room is None:
            return opening.response
        if hooks.wants("on_connect"):
            hooks.emit("on_connect", _event(conn, transport))
        gate_updates = hooks.wants("before_update")
        gate_awareness = hooks.wants("before_awareness")
        handled = 0
        while not conn.closed:
            received = channel.classify(await channel.receive())
            handled += 1
            if handled % YIELD_EVERY == 0:
                # Frames already buffered never suspend receive(): without this,
                # a burst runs to its end before other connections are read and
                # before the room's per-turn flush sends anything.
                await asyncio.sleep(0)
            kind = received.kind
            if kind is Kind.BINARY:
                frame = received.data
                if not conn.received(len(frame)):
                    metrics.refused("rate_limited")
                    conn.close(CloseCode.RATE_LIMITED, "sending too fast")
                    break
                try:
                    message = room.decode(frame)
                    if gate_updates or gate_awareness:
                        if not await _gate(conn, room, message, ctx, gate_updates, gate_awareness):
                            continue
                        if conn.closed or conn not in room.connections:
                            break
                    room.receive(conn, frame, message)
                except ProtocolError as exc:
                    metrics.refused(exc.code.name.lower())
                    conn.close(exc.code, exc.reason)
                    break
            elif kind is Kind.PING:
                conn.alive()
                await channel.pong(received.data)
            elif kind is Kind.ALIVE:
                conn.alive()
            elif kind is Kind.TEXT:
                metrics.refused("text_frame")
                conn.close(
                    CloseCode.UNSUPPORTED_DATA, "text frames are not part of the Yjs protocol"
                )
                break
            elif kind is Kind.ERROR:
                # The transport has already closed (1009 for an oversized frame).
                conn.close(
                    received.code or CloseCode.PROTOCOL_ERROR, received.reason, abnormal=True
                )
                break
            else:
                conn.mark_closed(received.code)
                break
    finally:
        if room is not None:
            room.leave(conn)
        if not conn.closed:  # cancelled (shutdown) or the transport gave up
            conn.mark_closed(None)
        with contextlib.suppress(Exception):
            await conn.wait_closed()
        manager.connection_count -= 1
        metrics.closed(conn.close_code, label)
        if room is not None and hooks.wants("on_disconnect"):
            hooks.emit("on_disconnect", _event(conn, transport))
        _log_close(conn)
    return opening.response


async def _gate(
    conn: Connection,
    room: Room,
    message: protocol.Message,
    ctx: Context,
    gate_updates: bool,
    gate_awareness: bool,
) -> bool:
    """Run ``before_update`` / ``before_awareness``; False when the message is refused."""
    try:
        if (
            gate_updates
            and conn.can_write
            and isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate)
            and message.update != protocol.EMPTY_UPDATE
        ):
            await ctx.hooks.before_update(
                IncomingUpdate(conn.doc, message.update, conn.principal, conn.id)
            )
        elif gate_awareness and isinstance(message, protocol.AwarenessUpdate):
            await ctx.hooks.before_awareness(
                IncomingAwareness(conn.doc, message.payload, conn.principal, conn.id)
            )
        return True
    except (Reject, HookFailed) as exc:
        reason = exc.reason if isinstance(exc, Reject) else "the update could not be checked"
        ctx.metrics.refused("hook_refused")
        if isinstance(message, protocol.AwarenessUpdate):
            log.info("presence of conn=%d on %r refused: %s", conn.id, room.name, reason)
        else:
            # The y-protocols answer the stock client understands; the socket stays.
            conn.send(protocol.permission_denied(reason))
        return False


async def _admit(conn: Connection, ctx: Context) -> Room | None:
    """Open the connection's room and join it; None (and a close) when it cannot."""
    name, manager, settings, metrics = conn.doc, ctx.manager, ctx.settings, ctx.metrics
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
    except (StoreError, HookFailed) as exc:  # the database (or the app's loader) is down
        log.error("cannot open document %r for %s: %s", name, conn.peer, exc)
        conn.close(CloseCode.TRY_AGAIN_LATER, "document could not be loaded, try again")
        return None
    except Reject as exc:
        log.info("opening document %r refused for %s: %s", name, conn.peer, exc.reason)
        conn.close(exc.code, exc.reason)
        return None
    except Exception:
        log.exception("cannot open document %r for %s", name, conn.peer)
        conn.close(CloseCode.INTERNAL_ERROR, "document could not be loaded")
        return None
    if conn.closed:  # closed while the room loaded (shutdown, or the client left)
        manager.release_if_idle(room)
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
        "open doc=%r peer=%s conn=%d user=%s mode=%s",
        name,
        conn.peer,
        conn.id,
        conn.principal.id,
        "write" if conn.can_write else "read",
        extra={
            "doc": name,
            "peer": conn.peer,
            "conn": conn.id,
            "user": conn.principal.id,
            "event": "open",
        },
    )
    return room


def _event(conn: Connection, transport: Transport) -> ConnectionEvent:
    return ConnectionEvent(
        doc=conn.doc,
        principal=conn.principal,
        connection_id=conn.id,
        peer=conn.peer,
        transport=transport,
        can_write=conn.can_write,
        close_code=conn.close_code,
    )


def _log_close(conn: Connection) -> None:
    # One line per connection closed; a warning when the client was at fault.
    level = logging.INFO if conn.close_code in _ORDINARY_CLOSES else logging.WARNING
    log.log(
        level,
        "close doc=%r peer=%s conn=%d user=%s code=%s reason=%s",
        conn.doc,
        conn.peer,
        conn.id,
        conn.principal.id,
        conn.close_code,
        conn.close_reason or "-",
        extra={
            "doc": conn.doc,
            "peer": conn.peer,
            "conn": conn.id,
            "user": conn.principal.id,
            "code": conn.close_code,
            "reason": conn.close_reason or None,
            "event": "close",
        },
    )
