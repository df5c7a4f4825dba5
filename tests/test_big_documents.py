"""Big documents in a room (issue #16): merged ingest, the initial sync in pieces, keepalives.

In-memory connections (``tests.fakes.MemoryChannel``); the same over real
sockets, slow links and the stock JavaScript client is in
``tests/test_big_documents_net.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from collab import protocol
from collab import room as room_module
from collab.closecodes import CloseCode
from collab.connection import KEEPALIVE, Connection
from collab.keys import MANAGER
from collab.origins import LOCAL
from collab.protocol import ProtocolError
from collab.room import SPLIT_ASIDE_BYTES, Room, RoomLimits
from collab.rooms import RoomManager
from collab.store import MemoryStore
from tests.conftest import ServerFactory
from tests.fakes import MemoryChannel
from tests.helpers import eventually

LIMIT = 64 * 1024


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def room(store: MemoryStore) -> AsyncIterator[Room]:
    r = Room("doc", store=store, limits=RoomLimits(sync_chunk_bytes=LIMIT))
    yield r
    await r.close()


def join(room: Room, *, can_write: bool = True) -> tuple[Connection, MemoryChannel]:
    channel = MemoryChannel()
    conn = Connection(channel, doc=room.name, peer="test", can_write=can_write)
    room.join(conn)
    return conn, channel


def big_text(size: int, client_id: int = 7) -> Doc[Any]:
    doc: Doc[Any] = Doc(client_id=client_id)
    text = doc.get("text", type=Text)
    line = "0123456789abcdefghij ünïcödé 👋\n"
    while len(text) < size:
        text += line * 500
    return doc


def text(doc: Doc[Any]) -> str:
    return str(doc.get("text", type=Text))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- ingest -------------------------------------------------------------------------------


async def test_updates_of_one_turn_are_applied_as_one_transaction(room: Room) -> None:
    writer, _ = join(room)
    reader, reader_channel = join(room)
    await settle()
    client: Doc[Any] = Doc()
    typed = client.get("text", type=Text)
    frames = []
    for ch in "hello world":
        before = client.get_state()
        typed += ch
        frames.append(protocol.sync_update(client.get_update(before)))
    transactions: list[bytes] = []
    room.doc.observe(lambda event: transactions.append(event.update))
    for frame in frames:
        room.receive(writer, frame)
    assert transactions == []  # nothing applied before the turn ends
    await settle()
    assert len(transactions) == 1
    assert str(room.doc.get("text", type=Text)) == "hello world"
    updates = reader_channel.updates()
    check: Doc[Any] = Doc()
    for update in updates:
        check.apply_update(update)
    assert text(check) == "hello world"


async def test_merged_updates_pass_on_each_insert_whole(room: Room) -> None:
    """An insert into text typed earlier in the same turn splits that text in
    the document; what others get keeps both as they were typed."""
    writer, _ = join(room)
    reader, reader_channel = join(room)
    await settle()
    client: Doc[Any] = Doc()
    typed = client.get("text", type=Text)
    before = client.get_state()
    typed += "{first}"
    room.receive(writer, protocol.sync_update(client.get_update(before)))
    before = client.get_state()
    typed.insert(3, "{second}")
    room.receive(writer, protocol.sync_update(client.get_update(before)))
    await settle()
    (update,) = reader_channel.updates()
    assert b"{first}" in update and b"{second}" in update
    check: Doc[Any] = Doc()
    check.apply_update(update)
    assert text(check) == str(typed) == text(room.doc)


async def test_merged_updates_are_stored_under_their_sender(room: Room, store: MemoryStore) -> None:
    a, _ = join(room)
    b, _ = join(room)
    for conn, word in ((a, "alpha "), (b, "beta "), (a, "gamma ")):
        client: Doc[Any] = Doc()
        client.get("text", type=Text).insert(0, word)
        room.receive(conn, protocol.sync_update(client.get_update()))
    await settle()
    room.flush()
    assert sorted(text(room.doc).split()) == ["alpha", "beta", "gamma"]
    stored = await store.load("doc")
    assert stored is not None
    check: Doc[Any] = Doc()
    check.apply_update(stored)
    assert sorted(text(check).split()) == ["alpha", "beta", "gamma"]


async def test_a_read_only_connection_is_answered_at_once_and_nothing_is_applied(
    room: Room,
) -> None:
    conn, channel = join(room, can_write=False)
    client: Doc[Any] = Doc()
    client.get("text", type=Text).insert(0, "nope")
    room.receive(conn, protocol.sync_update(client.get_update()))
    assert any(isinstance(m, protocol.PermissionDenied) for m in channel.messages())
    await settle()
    assert text(room.doc) == ""


async def test_a_bad_update_in_a_turn_closes_its_sender_only(room: Room) -> None:
    bad, bad_channel = join(room)
    good, _ = join(room)
    client: Doc[Any] = Doc()
    client.get("text", type=Text).insert(0, "fine")
    room.receive(good, protocol.sync_update(client.get_update()))
    room.receive(bad, protocol.sync_update(b"\x01\x02\x03garbage"))
    room.receive(bad, protocol.sync_update(b"\x05\x05"))
    await settle()
    assert bad.close_code == CloseCode.INVALID_DATA
    assert good.close_code is None
    assert text(room.doc) == "fine"


async def test_what_a_connection_sent_before_it_left_is_applied(room: Room) -> None:
    conn, _ = join(room)
    client: Doc[Any] = Doc()
    client.get("text", type=Text).insert(0, "last words")
    room.receive(conn, protocol.sync_update(client.get_update()))
    room.leave(conn)
    assert text(room.doc) == "last words"


async def test_a_size_limit_refuses_the_turn_with_4413() -> None:
    room = Room("doc", max_doc_size=1000)
    conn, _ = join(room)
    client: Doc[Any] = Doc()
    typed = client.get("text", type=Text)
    for _ in range(5):
        before = client.get_state()
        typed += "x" * 300
        room.receive(conn, protocol.sync_update(client.get_update(before)))
    await settle()
    assert conn.close_code == CloseCode.DOCUMENT_TOO_LARGE
    assert text(room.doc) == ""
    await room.close()


async def test_updates_submitted_in_one_turn_are_applied_as_one_transaction(room: Room) -> None:
    client: Doc[Any] = Doc()
    typed = client.get("text", type=Text)
    updates = []
    for word in ("one ", "two ", "three "):
        before = client.get_state()
        typed += word
        updates.append(client.get_update(before))
    transactions: list[bytes] = []
    room.doc.observe(lambda event: transactions.append(event.update))
    await asyncio.gather(*(room.submit(u, LOCAL) for u in updates))
    assert len(transactions) == 1
    assert text(room.doc) == "one two three "


async def test_a_refused_submission_fails_alone(room: Room) -> None:
    client: Doc[Any] = Doc()
    client.get("text", type=Text).insert(0, "kept")
    good = room.submit(client.get_update(), LOCAL)
    bad = room.submit(b"\x01\x02\x03garbage", LOCAL)
    await good
    with pytest.raises(ProtocolError):
        await bad
    assert text(room.doc) == "kept"


async def test_concurrent_posts_of_appends_all_arrive(make_server: ServerFactory) -> None:
    server = await make_server()
    client: Doc[Any] = Doc()
    typed = client.get("text", type=Text)
    bodies = []
    for i in range(30):
        before = client.get_state()
        typed += f"line {i}\n"
        bodies.append(client.get_update(before))
    url = f"{server.http_url}/api/docs/posted/update"
    async with aiohttp.ClientSession() as http:

        async def post(body: bytes) -> int:
            async with http.post(url, data=body) as resp:
                return resp.status

        statuses = await asyncio.gather(*(post(b) for b in [*bodies, b"\x05garbage"]))
    assert statuses == [200] * 30 + [400]
    room = server.app[MANAGER].rooms.get("posted")
    doc: Doc[Any] = Doc()
    if room is not None:
        doc.apply_update(room.doc.get_update())
    else:
        stored = await server.app[MANAGER].store.load("posted")
        assert stored is not None
        doc.apply_update(stored)
    assert text(doc) == str(typed)


# -- the initial sync in pieces -----------------------------------------------------------


def rebuilt(frames: list[bytes]) -> tuple[Doc[Any], list[protocol.Message]]:
    messages = [protocol.decode(f) for f in frames]
    doc: Doc[Any] = Doc()
    for m in messages:
        if isinstance(m, (protocol.SyncStep2, protocol.SyncUpdate)):
            doc.apply_update(m.update)
    return doc, messages


async def test_a_big_answer_comes_in_pieces_ending_with_step2(room: Room) -> None:
    source = big_text(600 * 1024)
    room.apply_update(source.get_update(), LOCAL)
    room.flush()  # its broadcast goes to no one
    conn, channel = join(room)
    room.handle(conn, protocol.sync_step1(b"\x00"))
    await eventually(lambda: not conn.sending)
    doc, messages = rebuilt(channel.frames)
    sync = [m for m in messages if isinstance(m, (protocol.SyncStep2, protocol.SyncUpdate))]
    assert len(sync) >= 600 * 1024 // LIMIT
    assert all(isinstance(m, protocol.SyncUpdate) for m in sync[:-1])
    assert isinstance(sync[-1], protocol.SyncStep2)
    assert max(len(f) for f in channel.frames) <= LIMIT + 16
    assert text(doc) == text(source)


async def test_live_updates_and_presence_go_out_between_the_pieces(room: Room) -> None:
    source = big_text(600 * 1024)
    room.apply_update(source.get_update(), LOCAL)
    room.flush()  # its broadcast goes to no one
    joiner, channel = join(room)
    other, _ = join(room)
    await eventually(lambda: len(channel.frames) == 1)  # our sync step 1
    channel.block()  # a slow link: the first piece is in flight
    room.handle(joiner, protocol.sync_step1(b"\x00"))
    await settle()
    # While the joiner downloads, someone types.
    client: Doc[Any] = Doc()
    client.get("text", type=Text).insert(0, "live ")
    room.handle(other, protocol.sync_update(client.get_update()))
    room.flush()
    channel.unblock()
    await eventually(lambda: not joiner.sending)
    doc, messages = rebuilt(channel.frames)
    live = [
        i
        for i, m in enumerate(messages)
        if isinstance(m, protocol.SyncUpdate) and b"live" in m.update
    ]
    pieces = [i for i, m in enumerate(messages) if isinstance(m, protocol.SyncUpdate)]
    assert live and len([i for i in pieces if i > live[0]]) >= 3  # not held back to the end
    assert text(doc) == text(room.doc) and "live " in text(doc)


async def test_the_pieces_of_an_empty_state_vector_are_cached_per_version(room: Room) -> None:
    source = big_text(300 * 1024)
    room.apply_update(source.get_update(), LOCAL)
    room.flush()  # its broadcast goes to no one
    first = room._step2_for(b"\x00")
    assert room._step2_for(b"\x00") is first
    room.apply_update(protocol.EMPTY_UPDATE, LOCAL)  # no change: same version
    assert room._step2_for(b"\x00") is first
    client: Doc[Any] = Doc()
    client.get("text", type=Text).insert(0, "x")
    room.apply_update(client.get_update(), LOCAL)
    assert room._step2_for(b"\x00") is not first


async def test_a_huge_answer_is_split_aside_once_for_a_storm_of_joiners(room: Room) -> None:
    source = big_text(SPLIT_ASIDE_BYTES + 256 * 1024)
    room.apply_update(source.get_update(), LOCAL)
    room.flush()  # its broadcast goes to no one
    joiners = [join(room) for _ in range(5)]
    for conn, _ in joiners:
        room.handle(conn, protocol.sync_step1(b"\x00"))
    answer = room._full_step2
    assert isinstance(answer, asyncio.Future)  # split in a thread, shared
    for conn, channel in joiners:
        await eventually(lambda conn=conn: not conn.sending, timeout=30)  # type: ignore[misc]
        assert text(rebuilt(channel.frames)[0]) == text(source)
    assert isinstance(room._full_step2, list)


async def test_a_split_that_fails_is_not_cached(
    room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = big_text(SPLIT_ASIDE_BYTES + 256 * 1024)
    room.apply_update(source.get_update(), LOCAL)
    room.flush()
    real = room_module._pieces_as_frames
    calls = []

    def failing_once(name: str, update: bytes, limit: int) -> Sequence[bytes]:
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("out of memory, say")
        return real(name, update, limit)

    monkeypatch.setattr(room_module, "_pieces_as_frames", failing_once)
    first, _ = join(room)
    room.handle(first, protocol.sync_step1(b"\x00"))
    assert await first.wait_closed() == CloseCode.GOING_AWAY
    assert room._full_step2 is None
    second, channel = join(room)
    room.handle(second, protocol.sync_step1(b"\x00"))
    await eventually(lambda: not second.sending and len(channel.frames) > 3, timeout=30)
    assert text(rebuilt(channel.frames)[0]) == text(source)


async def test_a_reconnect_after_half_the_pieces_asks_for_the_rest_only(room: Room) -> None:
    source = big_text(1024 * 1024)
    update = source.get_update()
    room.apply_update(update, LOCAL)
    room.flush()
    conn, channel = join(room)
    room.handle(conn, protocol.sync_step1(b"\x00"))
    await eventually(lambda: not conn.sending)
    frames = [f for f in channel.frames if protocol.decode(f).__class__ is protocol.SyncUpdate]
    half: Doc[Any] = Doc()
    for frame in frames[: len(frames) // 2]:
        message = protocol.decode(frame)
        assert isinstance(message, protocol.SyncUpdate)
        half.apply_update(message.update)
    again, again_channel = join(room)
    room.handle(again, protocol.sync_step1(half.get_state()))
    await eventually(lambda: not again.sending)
    sent = sum(
        len(m.update)
        for m in again_channel.messages()
        if isinstance(m, (protocol.SyncStep2, protocol.SyncUpdate))
    )
    assert sent <= 0.55 * len(update)
    for m in again_channel.messages():
        if isinstance(m, (protocol.SyncStep2, protocol.SyncUpdate)):
            half.apply_update(m.update)
    assert text(half) == text(source)


async def test_chunking_off_sends_one_step2(store: MemoryStore) -> None:
    room = Room("doc", store=store, limits=RoomLimits(sync_chunk_bytes=0))
    room.apply_update(big_text(300 * 1024).get_update(), LOCAL)
    room.flush()
    conn, channel = join(room)
    room.handle(conn, protocol.sync_step1(b"\x00"))
    await eventually(lambda: not conn.sending)
    sync = [m for m in channel.messages() if isinstance(m, protocol.SyncStep2)]
    assert len(sync) == 1 and len(sync[0].update) > 300 * 1024
    await room.close()


# -- keepalive ----------------------------------------------------------------------------


async def test_an_idle_connection_gets_the_no_op_awareness_frame() -> None:
    channel = MemoryChannel()
    conn = Connection(channel, doc="doc", peer="test", keepalive=10.0)
    now = asyncio.get_running_loop().time()
    conn.keep_alive(now + 5)
    assert channel.frames == []
    conn.keep_alive(now + 11)
    await settle()
    assert channel.frames == [KEEPALIVE]
    message = protocol.decode(KEEPALIVE)
    assert isinstance(message, protocol.AwarenessUpdate) and message.entries == ()
    sent_at = asyncio.get_running_loop().time()
    conn.keep_alive(sent_at + 5)  # it counts as sent: not again before 10 s
    await settle()
    assert channel.frames == [KEEPALIVE]
    conn.keep_alive(sent_at + 10.5)
    await settle()
    assert channel.frames == [KEEPALIVE, KEEPALIVE]
    assert conn.keepalives == 2


async def test_the_tick_sends_keepalives_with_the_heartbeat_off() -> None:
    manager = RoomManager(MemoryStore(), heartbeat=None)
    room = await manager.acquire("doc")
    conn, channel = join(room)
    await settle()
    sent = len(channel.frames)
    loop = asyncio.get_running_loop()
    conn._sent_at = loop.time() - 11  # as if it had been silent for 11 s
    manager.tick()
    await settle()
    assert channel.frames[sent:] == [KEEPALIVE]
    room.leave(conn)
    await manager.close()
