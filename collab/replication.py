"""Keeping several server processes in step through a broker (Redis Streams).

Everything that crosses processes lives here, and nowhere else: the room
manager tells the ``Replicator`` when a room loads and unloads, rooms tell
it (through the same ``RoomObserver`` events the hooks use) what changed
locally, and the broker hands it what other processes published.

* Subscribe before loading, so nothing published between the store's read
  and the first stream read slips through; messages that arrive while the
  room loads are held and replayed.
* Local changes and presence are published; changes that came from a peer
  never are (they were published where they entered).
* After loading (or a broker outage) a room announces its state vector and
  peers answer with what it lacks; after an outage it also offers all it has.
* Before a room unloads, what this process holds but the store lacks is
  stored: a peer that died inside its commit window loses nothing.
* A deletion is announced: the other processes close their connections
  with 4404 and drop their copy without storing it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from pycrdt import Doc

from .origins import PEER
from .protocol import ProtocolError
from .pubsub import AWARENESS, DELETED, STATE_VECTOR, UPDATE, Broker, Message
from .store import Store

if TYPE_CHECKING:
    from .room import Origin, Room

log = logging.getLogger("collab.replication")


class Replicator:
    """Connects this process's rooms to the other processes through ``broker``."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        rooms: Callable[[str], Room | None],
        forget: Callable[[str], Coroutine[Any, Any, None]],
    ) -> None:
        self.broker = broker
        self._store = store
        self._room = rooms
        #: Drops a document another process deleted (the room manager's).
        self._forget = forget
        self._forgetting: set[asyncio.Task[None]] = set()
        #: Messages from peers that arrived while their document was loading.
        self._early: dict[str, list[Message]] = {}

    async def start(self) -> None:
        await self.broker.start(self.deliver, self.resync)

    async def close(self) -> None:
        await self.broker.close()

    # -- the room manager's lifecycle events -------------------------------------

    async def loading(self, name: str) -> None:
        """Before the store is read: follow the document's stream from now on."""
        self._early[name] = []
        await self.broker.subscribe(name)

    def loaded(self, room: Room) -> None:
        """The room exists: replay what came meanwhile, then ask peers for what we lack."""
        for message in self._early.pop(room.name, []):
            self._apply(room, message)
        self.announce(room)

    def load_failed(self, name: str) -> None:
        self._early.pop(name, None)
        self.broker.unsubscribe(name)

    def unloaded(self, name: str) -> None:
        self.broker.unsubscribe(name)

    def deleted(self, name: str) -> None:
        """This process deleted the document: the others must drop their copies, or
        their next unload would store them again under a deleted name."""
        self.broker.publish(name, DELETED, b"")

    async def reconcile(self, room: Room) -> None:
        """Store what this process holds but the store lacks (see the module docstring)."""
        state = room.doc.get_update()
        stored = await self._store.load(room.name)
        missing = await asyncio.to_thread(_missing_from, stored, state)
        if missing is not None:
            self._store.append(room.name, missing)
            log.info("stored %d bytes of %r that the store lacked", len(missing), room.name)

    async def flush(self) -> None:
        """Wait until what was published so far reached the broker."""
        await self.broker.flush()

    # -- RoomObserver: what rooms report ----------------------------------------------

    def room_changed(self, room: Room, update: bytes, origins: Sequence[Origin]) -> None:
        self.broker.publish(room.name, UPDATE, update)

    def room_presence(self, room: Room, payload: bytes) -> None:
        self.broker.publish(room.name, AWARENESS, payload)

    # -- what the broker delivers ------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """A peer's message: to its room, or held while the room loads."""
        room = self._room(message.doc)
        if room is not None:
            self._apply(room, message)
        elif message.doc in self._early:
            self._early[message.doc].append(message)

    def resync(self, name: str) -> None:
        """After a broker outage: offer everything we have, ask for everything we lack."""
        room = self._room(name)
        if room is not None:
            self.broker.publish(name, UPDATE, room.doc.get_update())
            self.announce(room)

    def announce(self, room: Room) -> None:
        """Ask the other processes for what we lack (after loading, or a gap)."""
        self.broker.publish(room.name, STATE_VECTOR, room.doc.get_state())

    def _apply(self, room: Room, message: Message) -> None:
        """Bad messages from peers are logged, never fatal."""
        try:
            if message.kind == UPDATE:
                room.apply_update(message.data, PEER)
            elif message.kind == AWARENESS:
                room.apply_remote_presence(message.data)
            elif message.kind == DELETED:
                task = asyncio.get_running_loop().create_task(self._forget(room.name))
                self._forgetting.add(task)
                task.add_done_callback(self._forgetting.discard)
            elif message.kind == STATE_VECTOR:
                # Answer with what the asker lacks (deletions included).
                self.broker.publish(room.name, UPDATE, room.doc.get_update(message.data))
        except (ProtocolError, ValueError) as exc:
            log.warning(
                "ignored %s from peer %s for %r: %s", message.kind, message.node, room.name, exc
            )


def _missing_from(stored: bytes | None, state: bytes) -> bytes | None:
    """``state`` if it holds anything (insert or delete) that ``stored`` lacks."""
    if stored is None:
        return state
    doc: Doc[Any] = Doc()
    doc.apply_update(stored)
    before = doc.get_update()
    doc.apply_update(state)
    return None if doc.get_update() == before else state
