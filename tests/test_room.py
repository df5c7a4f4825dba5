"""A room with in-memory connections: who gets what, and presence bookkeeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pycrdt import Awareness, Doc, Text

from collab import protocol
from collab.closecodes import CloseCode
from collab.connection import Connection
from collab.origins import LOCAL
from collab.protocol import ProtocolError
from collab.room import Room
from collab.store import MemoryStore
from tests.fakes import MemoryChannel
from tests.helpers import eventually


def edit(text: str, client: Doc[Any] | None = None) -> bytes:
    doc = client or Doc()
    before = doc.get_state()
    t = doc.get("text", type=Text)
    t.insert(len(t), text)
    return doc.get_update(before)


def text_of(updates: list[bytes]) -> str:
    doc: Doc[Any] = Doc()
    for u in updates:
        doc.apply_update(u)
    return str(doc.get("text", type=Text))


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    r = Room("doc", store=MemoryStore())
    yield r
    await r.close()


def join(room: Room, *, can_write: bool = True) -> tuple[Connection, MemoryChannel]:
    channel = MemoryChannel()
    conn = Connection(channel, doc=room.name, peer="test", can_write=can_write)
    room.join(conn)
    return conn, channel


async def settle() -> None:
    """Let call_soon flushes and writer tasks run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_update_goes_to_others_but_not_back_to_sender(room: Room) -> None:
    a, ca = join(room)
    b, cb = join(room)
    room.handle(a, protocol.sync_update(edit("hi")))
    await settle()
    assert text_of(cb.updates()) == "hi"
    assert ca.updates() == []


async def test_updates_of_one_turn_are_merged_into_one_frame(room: Room) -> None:
    a, _ = join(room)
    _, cb = join(room)
    writer: Doc[Any] = Doc()
    for word in ("one ", "two ", "three"):
        room.handle(a, protocol.sync_update(edit(word, writer)))
    await settle()
    updates = [m for m in cb.messages() if isinstance(m, protocol.SyncUpdate)]
    assert len(updates) == 1
    assert text_of(cb.updates()) == "one two three"


async def test_two_senders_in_one_turn_each_get_only_the_others_change(room: Room) -> None:
    a, ca = join(room)
    b, cb = join(room)
    _, cc = join(room)
    room.handle(a, protocol.sync_update(edit("A")))
    room.handle(b, protocol.sync_update(edit("B")))
    await settle()
    assert text_of(ca.updates()) == "B"
    assert text_of(cb.updates()) == "A"
    assert sorted(text_of(cc.updates())) == ["A", "B"]


async def test_server_opens_with_its_step1_and_answers_step1_with_the_diff(room: Room) -> None:
    writer: Doc[Any] = Doc()
    room.apply_update(edit("hello ", writer), LOCAL)
    client: Doc[Any] = Doc()
    client.apply_update(room.doc.get_update())  # the client already has "hello "
    room.apply_update(edit("world", writer), LOCAL)
    conn, channel = join(room)
    room.handle(conn, protocol.sync_step1(client.get_state()))
    await settle()
    first, reply = channel.messages()[:2]
    assert first == protocol.SyncStep1(room.doc.get_state())
    assert isinstance(reply, protocol.SyncStep2)
    assert len(reply.update) < len(room.doc.get_update())
    client.apply_update(reply.update)
    assert str(client.get("text", type=Text)) == "hello world"


async def test_refused_update_leaves_document_unchanged(room: Room) -> None:
    room.apply_update(edit("keep"), LOCAL)
    before = room.doc.get_update()
    conn, _ = join(room)
    with pytest.raises(ProtocolError) as info:
        room.handle(conn, protocol.sync_update(b"\x01\x02\x03garbage"))
    assert info.value.code == CloseCode.INVALID_DATA
    assert room.doc.get_update() == before


async def test_read_only_connection_is_told_and_changes_nothing(room: Room) -> None:
    conn, channel = join(room, can_write=False)
    room.handle(conn, protocol.sync_update(edit("nope")))
    await settle()
    assert str(room.doc.get("text", type=Text)) == ""
    assert protocol.PermissionDenied("read-only connection") in channel.messages()


def presence(state: dict[str, object] | None, aw: Awareness) -> bytes:
    aw.set_local_state(state)
    return protocol.awareness(aw.encode_awareness_update([aw.client_id]))


async def test_presence_is_relayed_and_removed_when_its_connection_leaves(room: Room) -> None:
    a, _ = join(room)
    _, cb = join(room)
    aw = Awareness(Doc())
    room.handle(a, presence({"name": "ada"}, aw))
    await settle()
    assert room.awareness.state(aw.client_id) == {"name": "ada"}
    seen = Awareness(Doc())
    for m in cb.messages():
        if isinstance(m, protocol.AwarenessUpdate):
            seen.apply_awareness_update(m.payload, "test")
    assert seen.states[aw.client_id] == {"name": "ada"}
    room.leave(a)
    await settle()
    assert aw.client_id not in room.awareness.states
    for m in cb.messages():
        if isinstance(m, protocol.AwarenessUpdate):
            seen.apply_awareness_update(m.payload, "test")
    assert aw.client_id not in seen.states


async def test_late_joiner_gets_current_presence(room: Room) -> None:
    a, _ = join(room)
    aw = Awareness(Doc())
    room.handle(a, presence({"name": "ada"}, aw))
    _, cb = join(room)
    await settle()
    payloads = [m.payload for m in cb.messages() if isinstance(m, protocol.AwarenessUpdate)]
    assert any(e.client_id == aw.client_id for p in payloads for e in protocol.decode_awareness(p))


async def test_a_reconnected_client_takes_its_presence_back_once_the_old_socket_left(
    room: Room,
) -> None:
    aw = Awareness(Doc())
    old, _ = join(room)
    room.handle(old, presence({"name": "ada"}, aw))
    new, _ = join(room)  # the same client reconnected before the old socket died
    room.handle(new, presence({"name": "ada", "cursor": 3}, aw))
    # While the old socket is open the id is its own: nobody may take it over.
    assert room.awareness.state(aw.client_id) == {"name": "ada"}
    room.leave(old)
    assert aw.client_id not in room.awareness.states
    room.handle(new, presence({"name": "ada", "cursor": 4}, aw))  # its next renewal
    assert room.awareness.state(aw.client_id) == {"name": "ada", "cursor": 4}
    room.leave(new)
    assert aw.client_id not in room.awareness.states


async def test_query_awareness_is_answered_with_all_states(room: Room) -> None:
    a, _ = join(room)
    aw = Awareness(Doc())
    room.handle(a, presence({"name": "ada"}, aw))
    b, cb = join(room)
    await settle()
    cb.frames.clear()
    room.handle(b, protocol.query_awareness())
    await eventually(lambda: bool(cb.frames))
    (reply,) = cb.messages()
    assert isinstance(reply, protocol.AwarenessUpdate)
    assert [e.client_id for e in protocol.decode_awareness(reply.payload)] == [aw.client_id]


async def test_changes_are_stored_once_per_turn_and_loads_are_not_stored_again() -> None:
    store = MemoryStore()
    room = Room("doc", store=store)
    room.load(edit("loaded"))
    assert await store.info("doc") is None
    conn, _ = join(room)
    writer: Doc[Any] = Doc()
    room.handle(conn, protocol.sync_update(edit("a", writer)))
    room.handle(conn, protocol.sync_update(edit("b", writer)))
    await settle()
    info = await store.info("doc")
    assert info is not None and info.updates == 1
    await room.close()
