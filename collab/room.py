"""One open document: its pycrdt ``Doc``, its awareness and its connections.

Everything here runs on the event loop and nothing here awaits: a frame is
handled to completion (decode, apply, queue the broadcast) before the next
one, so the room needs no locks.  Sockets and SQL live elsewhere.

Broadcasts are coalesced: the updates applied during one event-loop turn
are merged and sent by one ``call_soon`` callback, encoded once for all
receivers (plus once per sender, which must not get its own change back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeAlias

from pycrdt import Awareness, Doc, TransactionEvent, merge_updates

from . import protocol
from .closecodes import CloseCode
from .connection import Connection
from .metrics import Metrics
from .origins import PEER, STORE, LocalOrigin, PeerOrigin, StoreOrigin
from .protocol import ProtocolError
from .pubsub import AWARENESS, STATE_VECTOR, UPDATE, Broker, Message
from .store import Store

log = logging.getLogger("collab.room")

Origin: TypeAlias = Connection | StoreOrigin | LocalOrigin | PeerOrigin

#: Flush a turn's updates early once they hold this many (bounds merge cost).
FLUSH_MAX_UPDATES = 64
#: ... or this many bytes.
FLUSH_MAX_BYTES = 1024 * 1024

#: Awareness client ids one connection can own (a y-websocket client has one);
#: ids beyond it still apply, and time out instead of leaving with the socket.
MAX_OWNED_CLIENTS = 16

#: An empty state vector: the client has nothing yet.
_EMPTY_STATE_VECTOR = b"\x00"


class Room:
    """Owns the ``Doc``, its ``Awareness``, its connections and, per connection,
    the awareness client ids that connection introduced (removed when it leaves,
    so presence never keeps ghosts)."""

    def __init__(
        self,
        name: str,
        *,
        store: Store | None = None,
        on_empty: Callable[[Room], None] | None = None,
        awareness_timeout: float = 30.0,
        max_doc_size: int | None = None,
        metrics: Metrics | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.name = name
        self.doc: Doc[Any] = Doc()
        self.awareness = Awareness(self.doc, outdated_timeout=int(awareness_timeout * 1000))
        self._awareness_timeout_ms = awareness_timeout * 1000
        # The server is not a participant: it has no presence of its own.
        self.awareness.set_local_state(None)
        #: Each connection with the awareness client ids it introduced (a list:
        #: almost always zero or one, and an empty list is a quarter of an empty set).
        self.connections: dict[Connection, list[int]] = {}
        self._awareness_owner: dict[int, Connection] = {}
        self._store = store
        self._broker = broker
        self._on_empty = on_empty
        self._max_doc_size = max_doc_size
        self._metrics = metrics
        #: An upper bound of the encoded document size (sum of what was applied).
        self._size_bound = 0
        self._loop = asyncio.get_running_loop()
        self._origin: Origin = STORE
        self._pending: list[tuple[bytes, Origin]] = []
        self._pending_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._full_step2: bytes | None = None
        self._doc_sub = self.doc.observe(self._on_change)
        self._awareness_sub = self.awareness.observe(self._on_awareness_change)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} connections={len(self.connections)}>"

    # -- lifecycle ------------------------------------------------------------

    def load(self, update: bytes | None) -> None:
        """Apply the stored state; it is neither broadcast nor stored again."""
        if update:
            self.apply_update(update, STORE)

    async def close(self, *, flush: bool = True) -> None:
        """Stop background work; ``flush=False`` drops unsent changes (deletion)."""
        if flush:
            self._flush()
        else:
            self._pending.clear()
        self.doc.unobserve(self._doc_sub)
        self.awareness.unobserve(self._awareness_sub)

    def join(self, conn: Connection) -> None:
        """Add a connection and open the sync handshake from the server's side."""
        self.connections[conn] = []
        # Our step 1 makes the client send what we lack (its offline edits).
        conn.send(protocol.sync_step1(self.doc.get_state()))
        if self.awareness.states:
            payload = self.awareness.encode_awareness_update(list(self.awareness.states))
            conn.send_awareness(protocol.awareness(payload), payload)

    def leave(self, conn: Connection) -> None:
        """Remove a connection and the presence it introduced."""
        ids = self.connections.pop(conn, None)
        if ids is None:
            return
        owned = [i for i in ids if self._awareness_owner.get(i) is conn]
        for client_id in owned:
            del self._awareness_owner[client_id]
        gone = [i for i in owned if i in self.awareness.states]
        if gone:
            self.awareness.remove_awareness_states(gone, conn)
            payload = self.awareness.encode_awareness_update(gone)
            self._broadcast_awareness(protocol.awareness(payload), payload, exclude=None)
            if self._broker is not None:
                self._broker.publish(self.name, AWARENESS, payload)
        if not self.connections and self._on_empty is not None:
            self._on_empty(self)

    # -- incoming -------------------------------------------------------------

    def handle(self, conn: Connection, frame: bytes) -> None:
        """Act on one frame from ``conn``; raise ``ProtocolError`` to drop it."""
        message = protocol.decode(frame)
        if isinstance(message, protocol.SyncStep1):
            conn.send(self._step2_for(message.state_vector))
        elif isinstance(message, (protocol.SyncStep2, protocol.SyncUpdate)):
            if not conn.can_write:
                conn.send(protocol.permission_denied("read-only connection"))
            elif message.update != protocol.EMPTY_UPDATE:
                self.apply_update(message.update, conn)
        elif isinstance(message, protocol.AwarenessUpdate):
            self._apply_awareness(conn, frame, message)
        elif isinstance(message, protocol.QueryAwareness):
            payload = self.awareness.encode_awareness_update(list(self.awareness.states))
            conn.send_awareness(protocol.awareness(payload), payload)
        # A PermissionDenied from a client means nothing to the server.

    def apply_update(self, update: bytes, origin: Origin) -> None:
        """Apply an update once; the observer queues its broadcast and storage."""
        if self._max_doc_size is not None and not isinstance(origin, (StoreOrigin, PeerOrigin)):
            self._check_size(len(update))
        self._origin = origin
        started = time.perf_counter()
        try:
            self.doc.apply_update(update)
        except Exception as exc:
            raise ProtocolError(CloseCode.INVALID_DATA, f"update refused: {exc}") from None
        except BaseException as exc:
            # yrs may panic on a crafted update; pyo3 raises that as a
            # BaseException.  It is refused before integration, so the
            # document is unchanged and only the sender is dropped.
            if not type(exc).__name__ == "PanicException":
                raise
            raise ProtocolError(CloseCode.INVALID_DATA, "update refused: decoder panic") from None
        finally:
            self._origin = STORE
        self._size_bound += len(update)
        if self._metrics is not None:
            self._metrics.apply_seconds.observe(time.perf_counter() - started)

    def _check_size(self, incoming: int) -> None:
        assert self._max_doc_size is not None
        if self._size_bound + incoming <= self._max_doc_size:
            return
        # Near the limit the cheap bound is not enough: measure exactly.
        self._size_bound = len(self.doc.get_update())
        if self._size_bound + incoming > self._max_doc_size:
            raise ProtocolError(
                CloseCode.DOCUMENT_TOO_LARGE,
                f"document would exceed {self._max_doc_size} bytes",
            )

    def _step2_for(self, state_vector: bytes) -> bytes:
        if state_vector == _EMPTY_STATE_VECTOR:
            # Many joiners at once share one encoding of the whole document.
            if self._full_step2 is None:
                self._full_step2 = protocol.sync_step2(self.doc.get_update())
            return self._full_step2
        try:
            return protocol.sync_step2(self.doc.get_update(state_vector))
        except Exception as exc:
            raise ProtocolError(CloseCode.INVALID_DATA, f"bad state vector: {exc}") from None

    def _apply_awareness(
        self, conn: Connection, frame: bytes, message: protocol.AwarenessUpdate
    ) -> None:
        payload = message.payload
        ids = self.connections.get(conn)
        if ids is None:
            return
        meta = self.awareness.meta
        news = False
        for entry in message.entries:
            known = meta.get(entry.client_id)
            # Only news makes a connection the owner of a client id.  The stock
            # y-websocket client re-sends every awareness state it receives;
            # such echoes carry a clock we already have and must not steal
            # ownership, or a closed tab would linger as a ghost.  A client
            # reconnecting on a new socket does send a newer clock, and takes over.
            if known is not None and entry.clock <= known["clock"]:
                continue
            news = True
            owner = self._awareness_owner.get(entry.client_id)
            if owner is not None and owner is not conn and owner in self.connections:
                _discard(self.connections[owner], entry.client_id)
            if entry.removed:
                _discard(ids, entry.client_id)
                self._awareness_owner.pop(entry.client_id, None)
            else:
                if entry.client_id not in ids:
                    if len(ids) >= MAX_OWNED_CLIENTS:
                        continue  # not owned: it times out instead of leaving with conn
                    ids.append(entry.client_id)
                self._awareness_owner[entry.client_id] = conn
        if not news:
            return  # an echo: everyone has it already, relaying would only amplify it
        self.awareness.apply_awareness_update(payload, conn)
        # Relay the client's own frame: it is already a complete message.
        self._broadcast_awareness(frame, payload, exclude=conn)
        if self._broker is not None:
            self._broker.publish(self.name, AWARENESS, payload)

    # -- other processes ------------------------------------------------------

    def announce(self) -> None:
        """Ask the other processes for what we lack (after loading, or a gap)."""
        if self._broker is not None:
            self._broker.publish(self.name, STATE_VECTOR, self.doc.get_state())

    def resync(self) -> None:
        """After a broker outage: offer everything we have, ask for everything we lack."""
        if self._broker is not None:
            self._broker.publish(self.name, UPDATE, self.doc.get_update())
            self.announce()

    def apply_peer(self, message: Message) -> None:
        """A message from another process; bad ones are logged, never fatal."""
        try:
            if message.kind == UPDATE:
                self.apply_update(message.data, PEER)
            elif message.kind == AWARENESS:
                self._apply_peer_awareness(message.data)
            elif message.kind == STATE_VECTOR and self._broker is not None:
                # Answer with what the asker lacks (deletions included).
                self._broker.publish(self.name, UPDATE, self.doc.get_update(message.data))
        except (ProtocolError, ValueError) as exc:
            log.warning(
                "ignored %s from peer %s for %r: %s", message.kind, message.node, self.name, exc
            )

    def _apply_peer_awareness(self, payload: bytes) -> None:
        meta = self.awareness.meta
        news = any(
            meta.get(e.client_id) is None or e.clock > meta[e.client_id]["clock"]
            for e in protocol.decode_awareness(payload)
        )
        if news:
            self.awareness.apply_awareness_update(payload, PEER)
            self._broadcast_awareness(protocol.awareness(payload), payload, exclude=None)

    # -- outgoing -------------------------------------------------------------

    def _on_change(self, event: TransactionEvent) -> None:
        update: bytes = event.update
        if update == protocol.EMPTY_UPDATE:
            return
        self._full_step2 = None
        origin = self._origin
        if isinstance(origin, StoreOrigin):
            return
        self._pending.append((update, origin))
        self._pending_bytes += len(update)
        if len(self._pending) >= FLUSH_MAX_UPDATES or self._pending_bytes >= FLUSH_MAX_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send (and store) this turn's updates: one encode per distinct audience."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        merged = _merge([u for u, _ in pending])
        local = [u for u, o in pending if not isinstance(o, PeerOrigin)]
        if local:
            # Changes that came from a peer process were stored and published there.
            own = merged if len(local) == len(pending) else _merge(local)
            if self._store is not None:
                self._store.append(self.name, own)
            if self._broker is not None:
                self._broker.publish(self.name, UPDATE, own)
        frame = protocol.sync_update(merged)
        senders = {o for _, o in pending if isinstance(o, Connection)}
        for conn in self.connections:
            if conn not in senders:
                conn.send_update(frame, merged)
        for sender in senders:
            if sender not in self.connections:
                continue
            others = [u for u, o in pending if o is not sender]
            if others:
                theirs = _merge(others)
                sender.send_update(protocol.sync_update(theirs), theirs)

    def _broadcast_awareness(
        self, frame: bytes, payload: bytes, *, exclude: Connection | None
    ) -> None:
        for conn in self.connections:
            if conn is not exclude:
                conn.send_awareness(frame, payload)

    def expire_awareness(self, now_ms: float) -> None:
        """Drop presence its client stopped renewing (y-protocols renews every 15 s).

        The room manager calls this for every room on one timer, instead of
        each room running pycrdt's ``Awareness.start()`` task group.
        """
        states = self.awareness.states
        stale = [
            client_id
            for client_id, meta in self.awareness.meta.items()
            if client_id in states and now_ms - meta["lastUpdated"] >= self._awareness_timeout_ms
        ]
        if stale:
            self.awareness.remove_awareness_states(stale, "timeout")

    def _on_awareness_change(self, topic: str, change: tuple[dict[str, Any], Any]) -> None:
        changes, origin = change
        if topic != "update" or origin != "timeout":
            return
        # Clients that stopped renewing their state (every 15 s in y-protocols).
        removed: list[int] = changes["removed"]
        for client_id in removed:
            owner = self._awareness_owner.pop(client_id, None)
            if owner is not None and owner in self.connections:
                _discard(self.connections[owner], client_id)
        payload = self.awareness.encode_awareness_update(removed)
        self._broadcast_awareness(protocol.awareness(payload), payload, exclude=None)


def _discard(ids: list[int], client_id: int) -> None:
    if client_id in ids:
        ids.remove(client_id)


def _merge(updates: list[bytes]) -> bytes:
    return updates[0] if len(updates) == 1 else merge_updates(*updates)
