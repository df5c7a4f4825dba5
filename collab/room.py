"""One open document: its pycrdt ``Doc``, its awareness and its connections.

Everything here runs on the event loop and nothing here awaits: a frame is
handled to completion (decode, apply, queue the broadcast) before the next
one, so the room needs no locks.  Sockets and SQL live elsewhere.

Broadcasts are coalesced: the updates applied during one event-loop turn
are merged and sent by one ``call_soon`` callback, encoded once for all
receivers (plus once per sender, which must not get its own change back).

Ingest is coalesced too (issue #16): appending to a big document costs yrs
time proportional to the document per applied update, so the updates a
connection sends during one turn (``receive``) are merged and applied as
one, per sender (attribution, refusal and limits stay per connection).

A joiner whose answer is bigger than ``RoomLimits.sync_chunk_bytes`` gets it
in pieces (``collab/chunking.py``): sync updates, then a sync step 2 with
the last piece, so the stock client reports ``synced`` only at the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from pycrdt import ContentAttribute, Doc, IdMap, IdSet, TransactionEvent, get_update, merge_updates

from . import protocol
from .chunking import SplitError, split_update
from .closecodes import CloseCode
from .connection import Connection, Step2Answer, TokenBucket
from .metrics import Metrics
from .origins import LOCAL, STORE, LocalOrigin, PeerOrigin, ServerOrigin, StoreOrigin
from .presence import Owner, Presence
from .protocol import AwarenessBounds, ProtocolError
from .store import Store

log = logging.getLogger("collab.room")

Origin: TypeAlias = Connection | StoreOrigin | LocalOrigin | PeerOrigin | ServerOrigin
_ORIGIN_TYPES = (Connection, StoreOrigin, LocalOrigin, PeerOrigin, ServerOrigin)


def author_of(origin: Origin) -> str:
    """Who made a change, as hooks, webhooks and the store's log name it."""
    if isinstance(origin, Connection):
        return origin.principal.id
    if isinstance(origin, ServerOrigin):
        return origin.author
    if isinstance(origin, PeerOrigin):
        return "peer"
    return "server"


class RoomObserver(Protocol):
    """What others act on when a room changes: replication to other processes
    and the application's hooks see the same events."""

    def room_changed(self, room: Room, update: bytes, origins: Sequence[Origin]) -> None:
        """This process applied ``update`` (merged, one flush window) from ``origins``;
        changes relayed from other processes are not reported."""

    def room_presence(self, room: Room, payload: bytes) -> None:
        """A local client's presence changed (an awareness update payload)."""


#: Flush a turn's updates early once they hold this many (bounds merge cost).
FLUSH_MAX_UPDATES = 64
#: ... or this many bytes.
FLUSH_MAX_BYTES = 1024 * 1024

#: Awareness client ids one connection may claim (a y-websocket client has
#: one); updates for further ids are dropped.
MAX_OWNED_CLIENTS = 16

#: An empty state vector: the client has nothing yet.
_EMPTY_STATE_VECTOR = b"\x00"

#: Answers to distinct non-empty state vectors kept until the next change.
_STEP2_CACHE_SIZE = 8

#: Answers at least this big are split in a thread, not on the event loop
#: (the splitter reads every struct in Python: ~20 ms per MB of pastes).
SPLIT_ASIDE_BYTES = 2 * 1024 * 1024

#: Pieces are never smaller than this (a tiny --sync-chunk-bytes would make
#: one frame per few structs).
MIN_SYNC_CHUNK_BYTES = 4096

#: Updates one connection may have waiting to be applied in one turn.
INBOX_MAX_UPDATES = 256


@dataclass(frozen=True, slots=True)
class RoomLimits:
    """What one connection may make a room do (issue #18): every cost a
    sender controls has a bound here or in ``AwarenessBounds``."""

    awareness: AwarenessBounds = field(default_factory=AwarenessBounds)
    max_owned_clients: int = MAX_OWNED_CLIENTS
    #: Awareness entries a connection may send per second (echoes included:
    #: the stock client re-sends every change it receives), in bursts of
    #: two seconds or one full frame; beyond it the socket is closed with 4429.
    awareness_entries_per_second: float = 2_000.0
    #: Query-awareness messages answered per second (in bursts of two); more
    #: are ignored, as the reference y-websocket server ignores them all.
    queries_per_second: float = 0.5
    #: Sync step 1 messages per second (in bursts of eight): each may cost an
    #: encoding of the whole document; beyond it the socket is closed with 4429.
    step1_per_second: float = 1.0
    #: Bytes of updates that wait for missing dependencies (pending structs
    #: and deletes of content the document lacks), also counted in the size
    #: limit; beyond it the sender is closed with 4413.
    max_waiting_bytes: int = 256 * 1024
    #: Seconds such updates may wait before they are dropped.
    waiting_timeout: float = 30.0
    #: Memory a document may take, as estimated from the structs of its updates
    #: (``UpdateShape.memory``): nested maps cost ~50x their encoded size, so
    #: --max-doc-size alone let one document take gigabytes; beyond it 4413.
    max_doc_memory: int = 1024 * 1024 * 1024
    #: How deeply shared types and JSON values may nest (1007 beyond it).
    max_depth: int = protocol.MAX_DEPTH
    #: A joiner's answer bigger than this goes out in pieces of at most this
    #: size (one item bigger than that stays whole); 0 sends it in one frame.
    sync_chunk_bytes: int = 256 * 1024


class _Member(Owner):
    """A connection's record in its room: the presence it owns and its budgets."""

    __slots__ = ("entries", "queries", "steps")

    def __init__(self) -> None:
        super().__init__()
        self.entries: TokenBucket | None = None
        self.queries: TokenBucket | None = None
        self.steps: TokenBucket | None = None


class Room:
    """Owns the ``Doc``, its ``Awareness``, its connections and, per connection,
    the awareness client ids that connection introduced (removed when it leaves,
    so presence never keeps ghosts)."""

    # Slots: a thousand open documents, each without a 1.5 KB attribute dict.
    __slots__ = (
        "_after",
        "_awareness_timeout_ms",
        "_deleted",
        "_deletes_seen",
        "_doc_sub",
        "_flush_handle",
        "_full_step2",
        "_inbox",
        "_inbox_bytes",
        "_inbox_handle",
        "_known",
        "_levels",
        "_limits",
        "_loop",
        "_max_doc_size",
        "_metrics",
        "_observers",
        "_on_empty",
        "_origin",
        "_pending",
        "_pending_bytes",
        "_presence_frame",
        "_size_bound",
        "_step2s",
        "_store",
        "_submit_handle",
        "_submitted",
        "_version",
        "_waiting",
        "_waiting_since",
        "awareness",
        "connections",
        "doc",
        "holders",
        "memory",
        "name",
    )

    def __init__(
        self,
        name: str,
        *,
        store: Store | None = None,
        on_empty: Callable[[Room], None] | None = None,
        awareness_timeout: float = 30.0,
        max_doc_size: int | None = None,
        metrics: Metrics | None = None,
        observers: Sequence[RoomObserver] = (),
        limits: RoomLimits | None = None,
    ) -> None:
        self.name = name
        self.doc: Doc[Any] = Doc()
        self._limits = limits or _DEFAULT_LIMITS
        #: Presence; the server is not a participant and has none of its own.
        self.awareness = Presence(max_owned=self._limits.max_owned_clients)
        self._awareness_timeout_ms = awareness_timeout * 1000
        #: Each connection with the presence it owns and its budgets.
        self.connections: dict[Connection, _Member] = {}
        #: The frame holding every presence state, while it is current.
        self._presence_frame: tuple[bytes, bytes] | None = None
        self._store = store
        self._observers = tuple(observers)
        self._on_empty = on_empty
        self._max_doc_size = max_doc_size
        self._metrics = metrics
        #: An upper bound of the encoded document size (sum of what was applied).
        self._size_bound = 0
        #: What yrs holds back for missing dependencies, as one update (see _track_waiting).
        self._waiting: bytes | None = None
        self._waiting_since = 0.0
        #: The delete set of the last transaction (to check deletes cheaply).
        self._deleted = b""
        #: The state vector as id ranges, for large delete sets (see _orphans).
        self._known: tuple[bytes, IdMap] | None = None
        #: Deleted ranges found to name existing content (see _orphans).
        self._deletes_seen = IdMap()
        #: The state vector after the last transaction.
        self._after: bytes | None = None
        #: Where the nested items are (to bound nesting across updates), and
        #: what the document costs in memory, both as read by scan_update.
        self._levels: protocol.Levels = {}
        self.memory = 0
        #: Server code keeping the room open (``Server.open_document``).
        self.holders = 0
        self._loop = asyncio.get_running_loop()
        #: Who is applying right now; None: an edit made directly on ``doc``
        #: (server code), attributed from its pycrdt transaction's origin.
        self._origin: Origin | None = None
        self._pending: list[tuple[bytes, Origin]] = []
        self._pending_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        #: Updates received this turn, by sender, applied merged (``receive``).
        self._inbox: dict[Connection, list[bytes]] = {}
        self._inbox_bytes = 0
        self._inbox_handle: asyncio.Handle | None = None
        #: Updates submitted this turn by server code (HTTP), applied merged.
        self._submitted: list[tuple[bytes, Origin, asyncio.Future[None]]] = []
        self._submit_handle: asyncio.Handle | None = None
        #: Bumped by every change: answers computed aside are cached only if
        #: the document did not change meanwhile.
        self._version = 0
        self._full_step2: Step2Answer | None = None
        #: Step 2 answers by state vector, shared by connections that send the same one.
        self._step2s: dict[bytes, Step2Answer] = {}
        self._doc_sub = self.doc.observe(self._on_change)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} connections={len(self.connections)}>"

    # -- lifecycle ------------------------------------------------------------

    def load(self, update: bytes | None, shape: protocol.UpdateShape | None = None) -> None:
        """Apply the stored state; it is neither broadcast nor stored again.

        ``shape`` is the stored state's ``scan_update`` (done aside by the
        room manager): it seeds the nesting levels and the memory estimate.
        """
        if update:
            self.apply_update(update, STORE)
        if shape is not None:
            protocol.add_levels(self._levels, shape.levels)
            self.memory += shape.memory()

    async def close(self, *, flush: bool = True) -> None:
        """Stop background work; ``flush=False`` drops unsent changes (deletion)."""
        if flush:
            self._integrate()
            self._apply_submitted()
            self._flush()
        else:
            self._drop_inbox()
            self._pending.clear()
            for _, _, future in self._submitted:
                if not future.done():
                    future.set_exception(ProtocolError(CloseCode.NOT_FOUND, "document deleted"))
            self._submitted.clear()
        self.doc.unobserve(self._doc_sub)

    def hold(self) -> None:
        """Keep the room loaded without a connection (server code has it open)."""
        self.holders += 1

    def release(self) -> None:
        self.holders -= 1

    @property
    def idle(self) -> bool:
        """No connection and no holder: the room may be unloaded."""
        return not self.connections and not self.holders

    def flush(self) -> None:
        """Send and store this turn's changes now instead of at the end of the turn."""
        self._integrate()
        self._flush()

    def join(self, conn: Connection) -> None:
        """Add a connection and open the sync handshake from the server's side."""
        self.connections[conn] = _Member()
        # Our step 1 makes the client send what we lack (its offline edits).
        conn.send(protocol.sync_step1(self.doc.get_state()))
        if self.awareness.states:
            conn.send_awareness(*self._all_presence())

    def leave(self, conn: Connection) -> None:
        """Remove a connection and the presence it introduced."""
        if conn in self._inbox:
            self._integrate()  # what it sent before it left counts
        member = self.connections.pop(conn, None)
        if member is None:
            return
        gone = self.awareness.remove_owned(member, time.time() * 1000)
        if gone:
            payload = protocol.encode_awareness_entries(gone)
            self._broadcast_awareness(protocol.awareness(payload), payload, exclude=None)
            for observer in self._observers:
                observer.room_presence(self, payload)
        if not self.connections and self._on_empty is not None:
            self._on_empty(self)

    # -- incoming -------------------------------------------------------------

    def decode(self, frame: bytes) -> protocol.Message:
        """Parse a client's frame within this room's bounds; ``ProtocolError`` if it is bad."""
        return protocol.decode(frame, awareness_bounds=self._limits.awareness)

    def receive(
        self, conn: Connection, frame: bytes, message: protocol.Message | None = None
    ) -> None:
        """Act on one frame from ``conn`` like ``handle``, but apply its updates at
        the end of the turn, merged with the others it sent in the same turn.

        A refusal found then (a bad update, a limit) closes ``conn`` with its
        code; its earlier turns stay applied, as they would one by one.
        """
        if message is None:
            message = self.decode(frame)
        if (
            not isinstance(message, (protocol.SyncStep2, protocol.SyncUpdate))
            or not conn.can_write
            or message.update == protocol.EMPTY_UPDATE
        ):
            self.handle(conn, frame, message)
            return
        queued = self._inbox.get(conn)
        if queued is None:
            queued = self._inbox[conn] = []
        queued.append(message.update)
        self._inbox_bytes += len(message.update)
        if len(queued) >= INBOX_MAX_UPDATES or self._inbox_bytes >= FLUSH_MAX_BYTES:
            self._integrate()  # bounds what waits, and the merge
        elif self._inbox_handle is None:
            self._inbox_handle = self._loop.call_soon(self._integrate)

    def _integrate(self) -> None:
        """Apply what each connection sent this turn, one merged update per sender."""
        if self._inbox_handle is not None:
            self._inbox_handle.cancel()
            self._inbox_handle = None
        if not self._inbox:
            return
        inbox, self._inbox, self._inbox_bytes = self._inbox, {}, 0
        for conn, updates in inbox.items():
            try:
                self._apply_merged(updates, conn)
            except ProtocolError as exc:
                if self._metrics is not None:
                    self._metrics.refused(exc.code.name.lower())
                conn.close(exc.code, exc.reason)

    def submit(self, update: bytes, origin: Origin) -> asyncio.Future[None]:
        """Apply ``update`` at the end of this turn, merged with the others submitted
        in it by the same origin (``POST .../update``); the future fails with the
        ``ProtocolError`` that refused this update, as ``apply_update`` would raise."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._submitted.append((update, origin, future))
        if self._submit_handle is None:
            self._submit_handle = self._loop.call_soon(self._apply_submitted)
        return future

    def _apply_submitted(self) -> None:
        if self._submit_handle is not None:
            self._submit_handle.cancel()
            self._submit_handle = None
        batch, self._submitted = self._submitted, []
        by_origin: dict[Origin, list[tuple[bytes, asyncio.Future[None]]]] = {}
        for update, origin, future in batch:
            by_origin.setdefault(origin, []).append((update, future))
        for origin, items in by_origin.items():
            live = [(u, f) for u, f in items if not f.done()]
            if len(live) > 1:
                try:
                    self._apply_merged([u for u, _ in live], origin)
                except ProtocolError:
                    pass  # one of them is refused: find which, one by one
                else:
                    for _, future in live:
                        future.set_result(None)
                    continue
            for update, future in live:
                try:
                    self.apply_update(update, origin)
                except ProtocolError as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(None)

    def _apply_merged(self, updates: list[bytes], origin: Origin) -> None:
        """Apply ``updates`` as one, and pass them on as they were sent.

        The transaction's own update is re-encoded from the document, where an
        insert into text typed earlier in the same batch has split that text
        into two items; what the sender sent, less what the document already
        had, keeps every item whole (as the updates applied one by one did).
        Only when all of it was integrated: what waits for dependencies is
        never passed on.
        """
        if len(updates) == 1:
            self.apply_update(updates[0], origin)
            return
        merged = _merge_received(updates)
        before = self.doc.get_state()
        queued = len(self._pending)
        self.apply_update(merged, origin)
        if self._waiting is None and len(self._pending) == queued + 1:
            update, by = self._pending[-1]
            if by is origin:
                sent = get_update(merged, before)
                self._pending[-1] = (sent, origin)
                self._pending_bytes += len(sent) - len(update)

    def _drop_inbox(self) -> None:
        if self._inbox_handle is not None:
            self._inbox_handle.cancel()
            self._inbox_handle = None
        self._inbox.clear()
        self._inbox_bytes = 0

    def handle(
        self, conn: Connection, frame: bytes, message: protocol.Message | None = None
    ) -> None:
        """Act on one frame from ``conn``; raise ``ProtocolError`` to drop it.

        ``message`` is the frame already decoded (by the connection loop).
        """
        if message is None:
            message = self.decode(frame)
        if isinstance(message, protocol.SyncStep1):
            self._answer_step1(conn, message.state_vector)
        elif isinstance(message, (protocol.SyncStep2, protocol.SyncUpdate)):
            if not conn.can_write:
                conn.send(protocol.permission_denied("read-only connection"))
            elif message.update != protocol.EMPTY_UPDATE:
                self.apply_update(message.update, conn)
        elif isinstance(message, protocol.AwarenessUpdate):
            self._apply_awareness(conn, frame, message)
        elif isinstance(message, protocol.QueryAwareness):
            member = self.connections.get(conn)
            if member is not None and self.awareness.states:
                if member.queries is None:
                    rate = self._limits.queries_per_second
                    member.queries = TokenBucket(rate, max(2, 2 * rate), self._loop.time())
                # Beyond the rate a query is ignored: the answer is a full copy
                # of everyone's presence, and a client that asks again gets
                # every change anyway.
                if member.queries.take(1, self._loop.time()):
                    conn.send_awareness(*self._all_presence())
        # A PermissionDenied from a client means nothing to the server.

    def apply_update(self, update: bytes, origin: Origin) -> None:
        """Apply an update once; the observer queues its broadcast and storage."""
        shape = None
        cost = 0
        if not isinstance(origin, StoreOrigin):
            shape = self._shape_of(update, origin)
            cost = 0 if shape is None else shape.memory()
        if self._max_doc_size is not None and not isinstance(origin, (StoreOrigin, PeerOrigin)):
            self._check_size(len(update))
        self._origin = origin
        self._after = None
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
            self._origin = None
        self._size_bound += len(update)
        if shape is not None:
            protocol.add_levels(self._levels, shape.levels)
            self.memory += cost
        if self._waiting is not None or not isinstance(origin, StoreOrigin):
            self._track_waiting(update, origin)
        if self._metrics is not None:
            self._metrics.apply_seconds.observe(time.perf_counter() - started)

    def _shape_of(self, update: bytes, origin: Origin) -> protocol.UpdateShape | None:
        """Read the update's structs; refuse it if it nests too deep or costs too much memory.

        The levels of the document's nested items make nesting checked across
        updates, not only within one.  Another process's updates are applied
        whatever they hold (it checked them): the processes must not diverge.
        """
        limits = self._limits
        try:
            shape = protocol.scan_update(update, self._levels, limits.max_depth)
        except ProtocolError as exc:
            if isinstance(origin, PeerOrigin):
                log.warning("applied an update of %r from a peer unchecked: %s", self.name, exc)
                return None
            raise
        if (
            not isinstance(origin, PeerOrigin)
            and self.memory + shape.memory() > limits.max_doc_memory
        ):
            raise ProtocolError(
                CloseCode.DOCUMENT_TOO_LARGE,
                f"document would take more than {limits.max_doc_memory} bytes of memory",
            )
        return shape

    def _check_size(self, incoming: int) -> None:
        assert self._max_doc_size is not None
        waiting = 0 if self._waiting is None else len(self._waiting)
        if self._size_bound + waiting + incoming <= self._max_doc_size:
            return
        # Near the limit the cheap bound is not enough: measure exactly (what
        # waits for dependencies is not in the encoding, so it is added).
        self._size_bound = len(self.doc.get_update())
        if self._size_bound + waiting + incoming > self._max_doc_size:
            raise ProtocolError(
                CloseCode.DOCUMENT_TOO_LARGE,
                f"document would exceed {self._max_doc_size} bytes",
            )

    def _track_waiting(self, update: bytes, origin: Origin) -> None:
        """Mirror what yrs keeps back for missing dependencies, and bound it.

        yrs holds structs whose dependencies are missing, and deletes of
        content it lacks, in a pending state that pycrdt does not expose:
        it is never encoded, stored or counted, and pending deletes are
        retried at every later update (issue #18: 767 MB accepted into a
        4 MB document; a 16 MB orphan delete set made every edit cost 40 ms).

        ``get_update(u, doc.get_state())`` is what of ``u`` the document does
        not hold after applying it.  Its first varuint counts the clients
        with structs: 0 means every struct was integrated, and the rest is
        the delete set, whose ranges beyond the document's state vector are
        the deletes that wait.  So after each update, the room keeps
        ``_waiting``: everything not yet integrated, re-checked (and released)
        as later updates fill the gaps.  Its size counts in the size limit,
        beyond ``max_waiting_bytes`` the sender is refused with 4413, and
        once it waited ``waiting_timeout`` the document is rebuilt from its
        own encoding, which holds no pending state (``expire``).
        """
        # The transaction's own state vector, when there was one (cheaper
        # than a read transaction); a fully pending update has none.
        state = self._after if self._after is not None else self.doc.get_state()
        if self._waiting is None:
            rest = get_update(update, state)
            if rest[0] == 0 and (
                rest[1:] in (b"\x00", self._deleted) or not self._orphans(rest, state)
            ):
                return  # the common case: everything was integrated
            self._waiting_since = self._loop.time()
        else:
            rest = get_update(merge_updates(self._waiting, update), state)
            if rest[0] == 0 and (rest[1:] == b"\x00" or not self._orphans(rest, state)):
                self._waiting = None  # the gaps were filled
                return
        self._waiting = rest
        limit = self._limits.max_waiting_bytes
        if len(rest) > limit and isinstance(origin, Connection):
            self._drop_waiting()
            raise ProtocolError(
                CloseCode.DOCUMENT_TOO_LARGE,
                f"{len(rest)} bytes would wait for missing dependencies (at most {limit})",
            )

    def _orphans(self, rest: bytes, state: bytes) -> bool:
        """Whether the delete set of ``rest`` (an update without structs) names
        content beyond the document's state vector: deletes yrs keeps pending.

        Ranges once found to name existing content are remembered (deleted
        content stays deleted), so a client that sends its whole delete set
        with every update (``doc.get_update(state)`` does) is checked for its
        new ranges only.  The rest costs what the sender sent, not what the
        document holds: a few ranges become one GC range per client, which yrs
        compares with the state vector; many are compared with the state
        vector as an IdMap, built once per state.
        """
        deletes = IdMap.from_set(IdSet.decode(rest[1:]), [])
        deletes -= self._deletes_seen
        if not deletes:
            return False
        if len(rest) <= _SMALL_DELETE_SET:
            ends: dict[int, int] = {}
            for client, span in deletes.entries():
                ends[client] = max(ends.get(client, 0), span.end)
            orphans = get_update(protocol.covering_update(ends), state)[0] != 0
        else:
            known = self._known
            if known is None or known[0] != state:
                ranges = IdMap()
                for client, clock in protocol.decode_state_vector(state).items():
                    ranges.insert(client, 0, clock, _MARK)
                known = self._known = (state, ranges)
            orphans = bool(deletes - known[1])
        if not orphans:
            self._deletes_seen |= deletes
        return orphans

    def _drop_waiting(self) -> None:
        """Forget what waits for dependencies: rebuild the document from its encoding."""
        if self._waiting is None:
            return
        log.warning(
            "dropped %d bytes of %r that waited for missing dependencies",
            len(self._waiting),
            self.name,
        )
        self._waiting = None
        encoded = self.doc.get_update()
        doc: Doc[Any] = Doc()
        doc.apply_update(encoded)
        self.doc.unobserve(self._doc_sub)
        self.doc = doc
        self._doc_sub = doc.observe(self._on_change)
        self._size_bound = len(encoded)

    def expire_waiting(self, now: float) -> None:
        """Drop updates that waited ``waiting_timeout`` for their dependencies."""
        if self._waiting is not None and now - self._waiting_since >= self._limits.waiting_timeout:
            self._drop_waiting()

    def _answer_step1(self, conn: Connection, state_vector: bytes) -> None:
        """Queue the answer to a sync step 1, encoded only when it can be sent.

        A connection has at most one answer outstanding (a later step 1
        replaces it), so a socket that never reads holds one copy of the
        document at most, and answers that were replaced are never encoded.
        """
        member = self.connections.get(conn)
        if member is None:
            return
        now = self._loop.time()
        if member.steps is None:
            rate = self._limits.step1_per_second
            member.steps = TokenBucket(rate, max(8, 2 * rate), now)
        if not member.steps.take(1, now):
            raise ProtocolError(CloseCode.RATE_LIMITED, "sync step 1 sent too often")
        if state_vector != _EMPTY_STATE_VECTOR:
            try:  # validate now (cheap: no document is encoded), answer later
                get_update(protocol.EMPTY_UPDATE, state_vector)
            except Exception as exc:
                raise ProtocolError(CloseCode.INVALID_DATA, f"bad state vector: {exc}") from None
        conn.send_step2(state_vector, self._step2_for)

    def _step2_for(self, state_vector: bytes) -> Step2Answer:
        self._integrate()  # what arrived this turn is part of the answer
        if state_vector == _EMPTY_STATE_VECTOR:
            # Many joiners at once share one encoding of the whole document.
            if self._full_step2 is None:
                self._full_step2 = self._answer(self.doc.get_update(), None)
            return self._full_step2
        answer = self._step2s.get(state_vector)
        if answer is None:
            answer = self._answer(self.doc.get_update(state_vector), state_vector)
            if len(self._step2s) >= _STEP2_CACHE_SIZE:
                del self._step2s[next(iter(self._step2s))]
            self._step2s[state_vector] = answer
        return answer

    def _answer(self, update: bytes, state_vector: bytes | None) -> Step2Answer:
        """``update`` as the frames answering a sync step 1: in pieces when it is big.

        A big update is split in a thread: the answer is then a future, cached
        like the frames it becomes (the joiners of a storm share one split),
        and replaced by them when it completes if the document did not change.
        """
        limit = self._limits.sync_chunk_bytes
        if not limit or len(update) <= limit:
            return protocol.sync_step2(update)
        limit = max(limit, MIN_SYNC_CHUNK_BYTES)
        if len(update) < SPLIT_ASIDE_BYTES:
            return _pieces_as_frames(self.name, update, limit)
        version = self._version
        future = self._loop.run_in_executor(None, _pieces_as_frames, self.name, update, limit)

        def done(future: asyncio.Future[Sequence[bytes]]) -> None:
            failed = future.cancelled() or future.exception() is not None
            if failed:
                log.error("splitting the answer for %r failed: %r", self.name, future)
            if self._version != version:
                return
            # A failed split is forgotten: the next joiner tries again.
            frames: Step2Answer | None = None if failed else future.result()
            if state_vector is None:
                if self._full_step2 is future:
                    self._full_step2 = frames
            elif self._step2s.get(state_vector) is future:
                if frames is None:
                    del self._step2s[state_vector]
                else:
                    self._step2s[state_vector] = frames

        future.add_done_callback(done)
        return future

    def _all_presence(self) -> tuple[bytes, bytes]:
        """(frame, payload) of every presence state, encoded once per change."""
        payload = self.awareness.encode_all()
        cached = self._presence_frame
        if cached is None or cached[1] is not payload:
            cached = self._presence_frame = (protocol.awareness(payload), payload)
        return cached

    def _apply_awareness(
        self, conn: Connection, frame: bytes, message: protocol.AwarenessUpdate
    ) -> None:
        member = self.connections.get(conn)
        if member is None:
            return
        now = self._loop.time()
        if member.entries is None:
            rate = self._limits.awareness_entries_per_second
            burst = max(2 * rate, self._limits.awareness.max_entries)
            member.entries = TokenBucket(rate, burst, now)
        if not member.entries.take(len(message.entries), now):
            raise ProtocolError(CloseCode.RATE_LIMITED, "awareness entries sent too fast")
        # Only news is applied: the stock y-websocket client re-sends every
        # state it receives, and relaying such echoes would only amplify them.
        # Only news from the owner, too: a client id belongs to the connection
        # that introduced it until that one leaves (no impersonation).
        applied = self.awareness.apply(message.entries, member, time.time() * 1000)
        if not applied:
            return
        if len(applied) == len(message.entries):
            # Relay the client's own frame: it is already a complete message.
            payload = message.payload
        else:
            payload = protocol.encode_awareness_entries(applied)
            frame = protocol.awareness(payload)
        self._broadcast_awareness(frame, payload, exclude=conn)
        for observer in self._observers:
            observer.room_presence(self, payload)

    # -- other processes ------------------------------------------------------

    def apply_remote_presence(self, payload: bytes) -> None:
        """Presence relayed from another process: shown to local clients, never owned."""
        entries = protocol.decode_awareness(payload, self._limits.awareness)
        applied = self.awareness.apply(entries, None, time.time() * 1000)
        if applied:
            if len(applied) != len(entries):
                payload = protocol.encode_awareness_entries(applied)
            self._broadcast_awareness(protocol.awareness(payload), payload, exclude=None)

    # -- outgoing -------------------------------------------------------------

    def _on_change(self, event: TransactionEvent) -> None:
        self._deleted = getattr(event, "delete_set", b"")  # not in pycrdt's stubs
        self._after = getattr(event, "after_state", None)
        update: bytes = event.update
        if update == protocol.EMPTY_UPDATE:
            return
        self._version += 1
        self._full_step2 = None
        if self._step2s:
            self._step2s.clear()
        origin = self._origin
        if origin is None:
            origin = self._transaction_origin()
        elif isinstance(origin, StoreOrigin):
            return
        self._pending.append((update, origin))
        self._pending_bytes += len(update)
        if len(self._pending) >= FLUSH_MAX_UPDATES or self._pending_bytes >= FLUSH_MAX_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _transaction_origin(self) -> Origin:
        """The origin of an edit made directly on ``doc``: its transaction's, or LOCAL.

        pycrdt cannot read a transaction's origin inside an observer (the
        transaction is borrowed), but keeps the origin object by hash.  An
        edit without a known origin is the server's own: broadcast and stored,
        never mistaken for a load (code review 1.4a).
        """
        txn = self.doc._txn
        key = getattr(txn, "_origin_hash", None)
        origin = self.doc._origins.get(key) if key is not None else None
        return origin if isinstance(origin, _ORIGIN_TYPES) else LOCAL

    def _flush(self) -> None:
        """Send (and store) this turn's updates: one encode per distinct audience."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        merged = _merge([u for u, _ in pending])
        local = [(u, o) for u, o in pending if not isinstance(o, PeerOrigin)]
        if local:
            # Changes that came from a peer process were stored and published there.
            own = merged if len(local) == len(pending) else _merge([u for u, _ in local])
            if self._store is not None:
                self._store_by_author(local, own)
            origins = [o for _, o in local]
            for observer in self._observers:
                observer.room_changed(self, own, origins)
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

    def _store_by_author(self, local: Sequence[tuple[bytes, Origin]], merged: bytes) -> None:
        """Append this turn's changes, one log entry per author (history keeps who)."""
        assert self._store is not None
        authors: dict[str, list[bytes]] = {}
        for update, origin in local:
            authors.setdefault(author_of(origin), []).append(update)
        if len(authors) == 1:
            (author,) = authors
            self._store.append(self.name, merged, author)
            return
        for author, updates in authors.items():
            self._store.append(self.name, _merge(updates), author)

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
        removed = self.awareness.expire(now_ms, self._awareness_timeout_ms)
        if removed:
            payload = protocol.encode_awareness_entries(removed)
            self._broadcast_awareness(protocol.awareness(payload), payload, exclude=None)


_DEFAULT_LIMITS = RoomLimits()

#: Any attribute: IdMap keeps ranges only when they carry one.
_MARK = [ContentAttribute("x", True)]


#: Delete sets up to this size are checked range by range (an edit has a
#: few); larger ones against the whole state vector, decoded once per state.
_SMALL_DELETE_SET = 16 * 1024


def _merge(updates: list[bytes]) -> bytes:
    return updates[0] if len(updates) == 1 else merge_updates(*updates)


def _merge_received(updates: list[bytes]) -> bytes:
    """A sender's updates of one turn as one; ``ProtocolError`` if one is not an update."""
    if len(updates) == 1:
        return updates[0]
    try:
        return merge_updates(*updates)
    except Exception as exc:
        raise ProtocolError(CloseCode.INVALID_DATA, f"update refused: {exc}") from None
    except BaseException as exc:
        # yrs may panic on crafted bytes; pyo3 raises that as a BaseException.
        if type(exc).__name__ != "PanicException":
            raise
        raise ProtocolError(CloseCode.INVALID_DATA, "update refused: decoder panic") from None


def _pieces_as_frames(name: str, update: bytes, limit: int) -> Sequence[bytes]:
    """The frames of a chunked answer: its size (``SyncProgress``), sync updates,
    then the last piece as sync step 2."""
    try:
        pieces = split_update(update, limit)
    except SplitError as exc:  # an encoding this module cannot read: send it whole
        log.warning("could not split the answer for %r (%s): sent whole", name, exc)
        return [protocol.sync_step2(update)]
    # Each piece gives way to its frame at once: a 20 MiB answer never holds
    # its pieces and their frames together (peak RSS of a join storm).
    frames: list[bytes] = pieces
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        frames[i] = protocol.sync_step2(piece) if i == last else protocol.sync_update(piece)
    if len(frames) > 1:
        # First, how much follows: clients that know it show progress.
        frames.insert(0, protocol.sync_progress(sum(len(f) for f in frames)))
    return frames
