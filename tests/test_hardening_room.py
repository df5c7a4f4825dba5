"""Issue #18: what one connection can make a room do is bounded.

Each test is the regression test of one finding (or of a sibling of it):
it fails on the code before the fix.  Sizes are small, but large enough to
show the effect; the costs themselves are measured by ``bench.attacks``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pycrdt import Array, Awareness, Doc, Encoder, Map, Text

from collab import protocol
from collab.closecodes import CloseCode
from collab.connection import Connection
from collab.keys import MANAGER, METRICS
from collab.origins import LOCAL
from collab.protocol import AwarenessEntry, ProtocolError
from collab.room import Room, RoomLimits
from collab.store import MemoryStore
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, ServerFactory
from tests.fakes import MemoryChannel
from tests.helpers import eventually, text_of


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes; return its close code."""
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code


def awareness_frame(entries: list[AwarenessEntry]) -> bytes:
    return protocol.awareness(protocol.encode_awareness_entries(entries))


def presence_frame(aw: Awareness, state: dict[str, object] | None) -> bytes:
    aw.set_local_state(state)
    return protocol.awareness(aw.encode_awareness_update([aw.client_id]))


# -- finding 1: awareness flood ------------------------------------------------------


async def test_awareness_frame_with_too_many_entries_is_closed_with_1008(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    honest = await make_client()
    app = server.app
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    # Fresh ids, clock 1, state null: the shape of the 1.5 M-entry flood.
    flood = [AwarenessEntry(10_000 + i, 1, "null") for i in range(5_000)]
    await ws.send_bytes(awareness_frame(flood))
    assert await closed_with(ws) == CloseCode.POLICY_VIOLATION
    room = app[MANAGER].rooms["doc"]
    assert set(room.awareness.meta) <= {honest.awareness.client_id}
    assert set(honest.awareness.states) == {honest.awareness.client_id}  # nothing relayed


async def test_oversized_awareness_state_is_closed_with_1009(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    big = '{"name":"' + "x" * 100_000 + '"}'
    await ws.send_bytes(awareness_frame([AwarenessEntry(7, 1, big)]))
    assert await closed_with(ws) == CloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize("depth", [40, 5_000])
async def test_deeply_nested_awareness_state_is_closed_with_1007(
    server: InProcessServer, http: aiohttp.ClientSession, depth: int
) -> None:
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    deep = "[" * depth + "]" * depth
    await ws.send_bytes(awareness_frame([AwarenessEntry(7, 1, deep)]))
    assert await closed_with(ws) == CloseCode.INVALID_DATA


async def test_removals_of_unknown_client_ids_are_not_recorded(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    await ws.send_bytes(
        awareness_frame([AwarenessEntry(50_000 + i, 1, "null") for i in range(500)])
    )
    await ws.send_bytes(protocol.sync_step1(b"\x00"))
    await ws.receive_bytes(timeout=5)  # our step 1
    await ws.receive_bytes(timeout=5)  # the answer to ours: the awareness frame was handled
    room = server.app[MANAGER].rooms["doc"]
    assert room.awareness.meta == {}
    await ws.close()


async def test_nobody_can_change_or_remove_the_presence_another_connection_owns(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server()
    owner = await make_client(url=server.ws_url)
    watcher = await make_client(url=server.ws_url)
    owner.set_presence({"user": "ada"})
    oid = owner.awareness.client_id
    await watcher.wait_for(lambda: watcher.awareness.states.get(oid) == {"user": "ada"})
    eve = await http.ws_connect(f"{server.ws_url}/doc")
    await eve.send_bytes(awareness_frame([AwarenessEntry(oid, 1_000, '{"user":"eve"}')]))
    await eve.send_bytes(awareness_frame([AwarenessEntry(oid, 2_000, "null")]))
    # A marker after the forgeries: once the watcher sees it, they were handled.
    marker = Awareness(Doc())
    await eve.send_bytes(presence_frame(marker, {"user": "marker"}))
    await watcher.wait_for(lambda: marker.client_id in watcher.awareness.states)
    assert watcher.awareness.states.get(oid) == {"user": "ada"}
    room = server.app[MANAGER].rooms["doc"]
    assert room.awareness.state(oid) == {"user": "ada"}
    await eve.close()


async def test_one_connection_claims_at_most_sixteen_client_ids() -> None:
    room = Room("doc", store=MemoryStore())
    conn = Connection(MemoryChannel(), doc="doc", peer="test")
    room.join(conn)
    room.handle(conn, awareness_frame([AwarenessEntry(i, 1, "{}") for i in range(1, 40)]))
    assert len(room.awareness.states) == 16
    await room.close()


async def test_awareness_entries_beyond_the_rate_are_closed_with_4429(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    honest = await make_client()
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    echo = awareness_frame([AwarenessEntry(honest.awareness.client_id, 0, "null")] * 2_000)
    for _ in range(10):  # 20,000 entries at once: ten times the rate
        if ws.closed:
            break
        await ws.send_bytes(echo)
    assert await closed_with(ws) == CloseCode.RATE_LIMITED


# -- finding 2: sync step 1 amplification ---------------------------------------------


async def test_a_socket_that_never_reads_has_at_most_one_step2_waiting(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server()
    manager = server.app[MANAGER]
    # Allow every step 1 through, to see what the queue does with them.
    manager.room_limits = RoomLimits(step1_per_second=1_000)
    writer = await make_client(url=server.ws_url)
    text = writer.doc.get("text", type=Text)
    for _ in range(8):
        text.insert(len(text), "y" * 100_000)
    room = manager.rooms["doc"]
    await eventually(lambda: len(room.doc.get_update()) > 790_000)
    size = len(room.doc.get_update())
    traffic = server.app[METRICS].traffic
    # A state vector that is not empty (it bypasses the shared full-state
    # answer) and lacks almost everything.
    vector = Encoder()
    clients = protocol.decode_state_vector(writer.doc.get_state())
    vector.write_var_uint(len(clients))
    for client in clients:
        vector.write_var_uint(client)
        vector.write_var_uint(1)
    not_empty = protocol.sync_step1(vector.to_bytes())
    sockets = [
        await http.ws_connect(f"{server.ws_url}/doc", autoclose=False, max_msg_size=0)
        for _ in range(4)
    ]
    before = traffic.messages_in
    for ws in sockets:
        for _ in range(63):
            await ws.send_bytes(not_empty)
    await eventually(lambda: traffic.messages_in >= before + 4 * 63)
    # The honest writer reads: all that is queued is the four sockets'.
    backlog = sum(c.backlog for c in room.connections)
    assert backlog < size, f"{backlog} bytes queued for 4 sockets on a {size}-byte document"
    # The honest writer is unaffected.
    reader = await make_client(url=server.ws_url)
    assert text_of(reader) == str(text)
    for ws in sockets:
        await ws.close()


async def test_step1_beyond_its_rate_is_closed_with_4429(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    for _ in range(20):
        if ws.closed:
            break
        await ws.send_bytes(protocol.sync_step1(b"\x00"))
    assert await closed_with(ws) == CloseCode.RATE_LIMITED


async def test_a_later_step1_replaces_the_waiting_answer_which_is_encoded_once() -> None:
    channel = MemoryChannel()
    conn = Connection(channel, doc="doc", peer="test")
    conn.send(b"\x00\x00\x01\x00")  # a frame in flight...
    channel.block()
    conn.send(b"\x00\x00\x01\x00")  # ...that blocks: what follows waits
    conn.send(b"\x00\x00\x01\x00")
    encoded: list[bytes] = []

    def answer(state_vector: bytes) -> bytes:
        encoded.append(state_vector)
        return protocol.sync_step2(protocol.EMPTY_UPDATE)

    for i in range(10):
        conn.send_step2(bytes([1, 5, i]), answer)
    channel.unblock()
    await eventually(lambda: bool(encoded) and not conn.sending)
    assert encoded == [bytes([1, 5, 9])]


async def test_connections_that_send_the_same_state_vector_share_one_answer() -> None:
    room = Room("doc", store=MemoryStore())
    writer: Doc[Any] = Doc()
    writer.get("text", type=Text).insert(0, "hello")
    room.apply_update(writer.get_update(), LOCAL)
    channels = []
    for _ in range(3):
        channel = MemoryChannel()
        conn = Connection(channel, doc="doc", peer="test")
        room.join(conn)
        room.handle(conn, protocol.sync_step1(b"\x01\x01\x01"))
        channels.append(channel)
    answers = [c.frames[-1] for c in channels]
    assert answers[0] is answers[1] is answers[2]
    await room.close()


# -- finding 3: query-awareness amplification -------------------------------------------


async def test_query_awareness_is_answered_at_most_at_its_rate_from_one_encoding() -> None:
    room = Room("doc", store=MemoryStore())
    owner = Connection(MemoryChannel(), doc="doc", peer="owner")
    room.join(owner)
    room.handle(owner, awareness_frame([AwarenessEntry(i, 1, '{"n":1}') for i in range(1, 17)]))
    channel = MemoryChannel()
    asker = Connection(channel, doc="doc", peer="asker")
    room.join(asker)
    channel.frames.clear()
    for _ in range(30):
        room.handle(asker, protocol.query_awareness())
    assert 1 <= len(channel.frames) <= 2
    assert all(f is channel.frames[0] for f in channel.frames)
    await room.close()


async def test_an_honest_client_syncs_while_another_floods_queries(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    owner = await make_client()
    owner.set_presence({"user": "ada"})
    room = server.app[MANAGER].rooms["doc"]
    await eventually(lambda: owner.awareness.client_id in room.awareness.states)
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    for _ in range(30):
        await ws.send_bytes(protocol.query_awareness())
    await ws.send_bytes(protocol.sync_step1(b"\x00"))  # a marker after the queries
    late = await make_client()
    assert late.synced.is_set()
    answers = 0
    while not isinstance(
        message := protocol.decode(await ws.receive_bytes(timeout=5)), protocol.SyncStep2
    ):
        answers += isinstance(message, protocol.AwarenessUpdate)
    assert answers <= 3  # the join's presence and at most two answers
    await ws.close()


# -- finding 5: updates with missing dependencies ------------------------------------------


def chained_edits(count: int, size: int) -> tuple[bytes, list[bytes]]:
    """A first edit, and ``count`` edits of ``size`` bytes that all depend on it."""
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    text.insert(0, "first")
    first = doc.get_update()
    later = []
    for _ in range(count):
        before = doc.get_state()
        text.insert(len(text), "w" * size)
        later.append(doc.get_update(before))
    return first, later


def orphan_deletes(ranges: int, client: int = 424_242) -> bytes:
    """An update deleting ``ranges`` separate characters nobody ever wrote."""
    encoder = Encoder()
    encoder.write_var_uint(0)  # no structs
    encoder.write_var_uint(1)  # a delete set for one client...
    encoder.write_var_uint(client)
    encoder.write_var_uint(ranges)  # ...of that many (clock, length) ranges
    for i in range(ranges):
        encoder.write_var_uint(2 * i)
        encoder.write_var_uint(1)
    return encoder.to_bytes()


async def test_updates_waiting_for_missing_dependencies_count_in_the_size_limit(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_doc_size=200_000)
    honest = await make_client(url=server.ws_url)
    _, later = chained_edits(8, 40_000)
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    for update in later:  # never the first edit: all of them wait
        if ws.closed:
            break
        await ws.send_bytes(protocol.sync_update(update))
    assert await closed_with(ws) == CloseCode.DOCUMENT_TOO_LARGE
    honest.doc.get("text", type=Text).insert(0, "still fine")
    reader = await make_client(url=server.ws_url)
    await reader.wait_for(lambda: text_of(reader) == "still fine")


async def test_waiting_structs_beyond_the_budget_are_refused_with_4413(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    _, later = chained_edits(2, 200_000)
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    for update in later:
        if ws.closed:
            break
        await ws.send_bytes(protocol.sync_update(update))
    assert await closed_with(ws) == CloseCode.DOCUMENT_TOO_LARGE
    assert server.app[MANAGER].rooms["doc"]._waiting is None  # dropped with the sender


async def test_a_delete_set_for_missing_content_beyond_the_budget_is_refused_with_4413(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server()
    server.app[MANAGER].room_limits = RoomLimits(max_waiting_bytes=32 * 1024)
    honest = await make_client(url=server.ws_url)
    deletes = await asyncio.to_thread(orphan_deletes, 12_000)  # ~40 KB of deletes
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    await ws.send_bytes(protocol.sync_update(deletes))
    assert await closed_with(ws) == CloseCode.DOCUMENT_TOO_LARGE
    honest.doc.get("text", type=Text).insert(0, "typing on")
    room = server.app[MANAGER].rooms["doc"]
    await eventually(lambda: str(room.doc.get("text", type=Text)) == "typing on")
    assert room._waiting is None


async def test_waiting_updates_are_released_when_the_gap_fills_and_dropped_when_it_does_not() -> (
    None
):
    room = Room("doc", store=MemoryStore(), limits=RoomLimits(waiting_timeout=5))
    conn = Connection(MemoryChannel(), doc="doc", peer="test")
    room.join(conn)
    first, later = chained_edits(2, 10)
    for update in later:
        room.handle(conn, protocol.sync_update(update))
    assert room._waiting is not None
    room.handle(conn, protocol.sync_update(first))
    assert room._waiting is None
    assert str(room.doc.get("text", type=Text)) == "first" + "w" * 20
    # Deletes of content nobody sent wait, then are dropped; the text stays.
    room.handle(conn, protocol.sync_update(orphan_deletes(10)))
    assert room._waiting is not None
    room.expire_waiting(room._waiting_since + 1)
    assert room._waiting is not None
    room.expire_waiting(room._waiting_since + 5)
    assert room._waiting is None
    assert str(room.doc.get("text", type=Text)) == "first" + "w" * 20
    await room.close()


# -- finding 6: memory per document, and nesting -------------------------------------------


def one_level_per_update(depth: int) -> list[bytes]:
    """Maps nested ``depth`` deep, one level per update (each names its parent)."""
    doc: Doc[Any] = Doc()
    level = doc.get("map", type=Map)
    updates = []
    for _ in range(depth):
        before = doc.get_state()
        inner: Map[Any] = Map()
        level["k"] = inner
        level = inner
        updates.append(doc.get_update(before))
    return updates


def arrays_beside(depth: int) -> list[bytes]:
    """Arrays nested ``depth`` deep, each inserted after an element of its parent:
    the update names only that element (its origin), not the parent."""
    doc: Doc[Any] = Doc()
    level = doc.get("array", type=Array)
    updates = []
    for _ in range(depth):
        before = doc.get_state()
        level.append(0)
        updates.append(doc.get_update(before))
        before = doc.get_state()
        inner: Array[Any] = Array()
        level.append(inner)
        level = inner
        updates.append(doc.get_update(before))
    return updates


async def test_nesting_one_level_per_update_is_refused_with_1007_at_the_bound(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    honest = await make_client()
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    for update in one_level_per_update(80):
        if ws.closed:
            break
        await ws.send_bytes(protocol.sync_update(update))
    assert await closed_with(ws) == CloseCode.INVALID_DATA
    room = server.app[MANAGER].rooms["doc"]
    depth, level = 0, room.doc.get("map", type=Map)
    while "k" in level:
        level, depth = level["k"], depth + 1
    assert depth < protocol.MAX_DEPTH
    honest.doc.get("text", type=Text).insert(0, "unharmed")
    await eventually(lambda: str(room.doc.get("text", type=Text)) == "unharmed")


async def test_nesting_through_origins_across_updates_is_refused() -> None:
    room = Room("doc", store=MemoryStore(), limits=RoomLimits(max_depth=10))
    conn = Connection(MemoryChannel(), doc="doc", peer="test")
    room.join(conn)
    updates = arrays_beside(12)
    with pytest.raises(ProtocolError) as info:
        for update in updates:
            room.handle(conn, protocol.sync_update(update))
    assert info.value.code == CloseCode.INVALID_DATA
    assert "nested deeper than 10" in info.value.reason
    await room.close()


async def test_nesting_of_a_stored_document_counts_after_it_is_loaded_again() -> None:
    doc: Doc[Any] = Doc()
    for update in one_level_per_update(9):
        doc.apply_update(update)
    stored = doc.get_update()
    room = Room("doc", store=MemoryStore(), limits=RoomLimits(max_depth=10))
    room.load(stored, protocol.scan_update(stored, max_depth=sys.maxsize))
    conn = Connection(MemoryChannel(), doc="doc", peer="test")
    room.join(conn)
    writer: Doc[Any] = Doc()
    writer.apply_update(stored)
    level = writer.get("map", type=Map)
    while "k" in level:
        level = level["k"]
    before = writer.get_state()
    level["k"] = Map({"deeper": Map()})
    with pytest.raises(ProtocolError, match="nested deeper than 10"):
        room.handle(conn, protocol.sync_update(writer.get_update(before)))
    await room.close()


async def test_a_document_that_would_take_too_much_memory_is_refused_with_4413(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server()
    server.app[MANAGER].room_limits = RoomLimits(max_doc_memory=1024 * 1024)
    honest = await make_client(url=server.ws_url)
    doc: Doc[Any] = Doc()
    ws = await http.ws_connect(f"{server.ws_url}/doc")
    for batch in range(10):  # small maps: ~10 bytes encoded, ~550 in memory, each
        before = doc.get_state()
        with doc.transaction():
            mapping = doc.get("map", type=Map)
            for i in range(500):
                mapping[f"{batch}.{i}"] = Map()
        if ws.closed:
            break
        await ws.send_bytes(protocol.sync_update(doc.get_update(before)))
    assert await closed_with(ws) == CloseCode.DOCUMENT_TOO_LARGE
    room = server.app[MANAGER].rooms["doc"]
    assert room.memory <= 1024 * 1024
    honest.doc.get("text", type=Text).insert(0, "still here")
    await eventually(lambda: str(room.doc.get("text", type=Text)) == "still here")


async def test_deleting_again_what_is_already_deleted_waits_for_nothing() -> None:
    room = Room("doc", store=MemoryStore())
    conn = Connection(MemoryChannel(), doc="doc", peer="test")
    room.join(conn)
    full, deletes, one = await asyncio.to_thread(text_with_many_deletes)
    assert len(deletes) > 16 * 1024  # checked against the whole state vector
    room.handle(conn, protocol.sync_update(full))
    for update in (one, deletes, deletes, one):
        room.handle(conn, protocol.sync_update(update))
        assert room._waiting is None
    await room.close()


def text_with_many_deletes() -> tuple[bytes, bytes, bytes]:
    """A text, an update deleting 8,000 separate characters of it, and one deleting one."""
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    text.insert(0, "ab" * 8_001)
    full = doc.get_update()
    before = doc.get_state()
    with doc.transaction():
        for i in range(8_000, 0, -1):
            del text[2 * i : 2 * i + 1]
    deletes = doc.get_update(before)
    before = doc.get_state()
    del text[0:1]
    return full, deletes, doc.get_update(before)
