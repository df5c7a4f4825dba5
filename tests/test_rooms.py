"""Opening and closing rooms: single-flight, grace period, content kept across unloads."""

from __future__ import annotations

import asyncio
from typing import Any

from pycrdt import Doc, Text

from collab.connection import Connection
from collab.rooms import RoomManager
from collab.store import MemoryStore
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory
from tests.fakes import MemoryChannel
from tests.helpers import eventually, text_of


class SlowStore(MemoryStore):
    """A memory store whose loads wait for a gate and are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.gate = asyncio.Event()

    async def load(self, name: str) -> bytes | None:
        self.loads += 1
        await self.gate.wait()
        return await super().load(name)


async def test_two_openers_of_a_new_document_share_one_load() -> None:
    store = SlowStore()
    manager = RoomManager(store, unload_grace=0)
    first = asyncio.create_task(manager.acquire("new"))
    second = asyncio.create_task(manager.acquire("new"))
    await asyncio.sleep(0)
    store.gate.set()
    a, b = await asyncio.gather(first, second)
    assert a is b
    assert store.loads == 1
    await manager.close()


async def test_an_opener_giving_up_does_not_cancel_the_load_for_others() -> None:
    store = SlowStore()
    manager = RoomManager(store, unload_grace=0)
    impatient = asyncio.create_task(manager.acquire("doc"))
    patient = asyncio.create_task(manager.acquire("doc"))
    await asyncio.sleep(0)
    impatient.cancel()
    store.gate.set()
    room = await patient
    assert manager.rooms["doc"] is room
    await manager.close()


async def test_room_unloads_after_grace_and_reloads_with_same_content() -> None:
    store = MemoryStore()
    manager = RoomManager(store, unload_grace=0.05)
    room = await manager.acquire("doc")
    conn = Connection(MemoryChannel(), doc="doc", peer="test")
    room.join(conn)
    source: Doc[Any] = Doc()
    source.get("text", type=Text).insert(0, "persisted")
    room.apply_update(source.get_update(), conn)
    room.leave(conn)
    await eventually(lambda: "doc" not in manager.rooms)
    again = await manager.acquire("doc")
    assert again is not room
    assert str(again.doc.get("text", type=Text)) == "persisted"
    await manager.close()


async def test_joining_during_grace_keeps_the_room() -> None:
    manager = RoomManager(MemoryStore(), unload_grace=0.05)
    room = await manager.acquire("doc")
    first = Connection(MemoryChannel(), doc="doc", peer="a")
    room.join(first)
    room.leave(first)
    again = await manager.acquire("doc")
    again.join(Connection(MemoryChannel(), doc="doc", peer="b"))
    await asyncio.sleep(0.1)  # past the grace period: time is the input here
    assert manager.rooms["doc"] is room is again
    await manager.close()


async def test_simultaneous_first_clients_are_both_served(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    a, b = await asyncio.gather(make_client("fresh"), make_client("fresh"))
    a.doc.get("text", type=Text).insert(0, "x")
    await b.wait_for(lambda: text_of(b) == "x", timeout=2)
