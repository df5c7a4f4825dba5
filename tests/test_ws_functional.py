"""The server over real sockets: sync, presence, and bad input closing only its socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pycrdt import Awareness, Doc, Text

from collab import protocol
from collab.closecodes import CloseCode
from collab.keys import MANAGER
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, ServerFactory
from tests.helpers import converged, eventually, logged, text_of


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def raw_socket(
    http: aiohttp.ClientSession, server: InProcessServer, name: str = "doc"
) -> aiohttp.ClientWebSocketResponse:
    """A bare WebSocket, past the server's opening step 1."""
    ws = await http.ws_connect(f"{server.ws_url}/{name}")
    first = await ws.receive_bytes(timeout=5)
    assert isinstance(protocol.decode(first), protocol.SyncStep1)
    return ws


async def test_two_clients_see_each_others_edits(make_client: ClientFactory) -> None:
    a = await make_client()
    b = await make_client()
    a.doc.get("text", type=Text).insert(0, "from a")
    await b.wait_for(lambda: text_of(b) == "from a")
    b.doc.get("text", type=Text).insert(6, ", from b")
    await a.wait_for(lambda: text_of(a) == "from a, from b")


async def test_late_joiner_receives_full_state(make_client: ClientFactory) -> None:
    writer = await make_client()
    text = writer.doc.get("text", type=Text)
    for i in range(50):
        text.insert(len(text), f"line {i}\n")
    writer.doc.get("meta", type=__import__("pycrdt").Map)["title"] = "notes"
    other = await make_client()
    await other.wait_for(lambda: text_of(other) == str(text))
    late = await make_client()  # wait_synced: everything is there at once
    assert text_of(late) == str(text)
    assert late.doc.get("meta", type=__import__("pycrdt").Map)["title"] == "notes"


async def test_offline_edits_reach_the_room_through_servers_step1(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    first = await make_client()
    first.doc.get("text", type=Text).insert(0, "shared ")
    observer = await make_client()
    await observer.wait_for(lambda: text_of(observer) == "shared ")
    # A client whose doc was edited before it ever connected.
    offline: Doc[Any] = Doc()
    offline.apply_update(first.doc.get_update())
    offline.get("text", type=Text).insert(7, "offline")
    late = await make_client(doc=offline)
    await observer.wait_for(lambda: text_of(observer) == "shared offline")
    assert text_of(late) == "shared offline"


async def test_document_names_are_url_decoded_keys(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    name = "team/notes ü?#%2F..\\x"
    a = await make_client(name)
    a.doc.get("text", type=Text).insert(0, "unicode")
    b = await make_client(name)
    assert text_of(b) == "unicode"
    c = await make_client("team/notes")
    assert text_of(c) == ""


async def test_document_name_over_512_characters_is_refused_before_upgrade(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{server.ws_url}/{'x' * 513}")
    assert info.value.status == 400
    ws = await http.ws_connect(f"{server.ws_url}/{'x' * 512}")
    await ws.close()


async def test_presence_appears_and_is_removed_on_disconnect(make_client: ClientFactory) -> None:
    watcher = await make_client()
    visitor = await make_client()
    visitor.set_presence({"user": {"name": "ada", "color": "#f00"}})
    vid = visitor.awareness.client_id
    await watcher.wait_for(lambda: watcher.awareness.states.get(vid, {}).get("user") is not None)
    await visitor.close()
    await watcher.wait_for(lambda: vid not in watcher.awareness.states)


async def test_presence_of_a_dropped_socket_is_removed_without_a_goodbye(
    server: InProcessServer, http: aiohttp.ClientSession, make_client: ClientFactory
) -> None:
    watcher = await make_client()
    ws = await raw_socket(http, server)
    aw = Awareness(Doc())
    aw.set_local_state({"user": "ghost"})
    await ws.send_bytes(protocol.awareness(aw.encode_awareness_update([aw.client_id])))
    await watcher.wait_for(lambda: aw.client_id in watcher.awareness.states)
    await ws.close()  # no null-state message first, like a crashed tab
    await watcher.wait_for(lambda: aw.client_id not in watcher.awareness.states)


async def test_presence_that_is_not_renewed_expires_while_its_socket_stays(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(awareness_timeout=0.5)
    watcher_ws = await raw_socket(http, server)
    ws = await raw_socket(http, server)
    aw = Awareness(Doc())
    aw.set_local_state({"user": "stale"})
    await ws.send_bytes(protocol.awareness(aw.encode_awareness_update([aw.client_id])))
    room = server.app[MANAGER].rooms["doc"]
    await eventually(lambda: aw.client_id in room.awareness.states)
    # Never renewed (y-protocols renews every 15 s): gone after the timeout,
    # and the watcher is told with a removal (a null state).
    async with asyncio.timeout(5):
        while True:
            message = protocol.decode(await watcher_ws.receive_bytes())
            if isinstance(message, protocol.AwarenessUpdate) and any(
                e.client_id == aw.client_id and e.removed for e in message.entries
            ):
                break
    assert aw.client_id not in room.awareness.states
    assert not ws.closed
    await ws.close()
    await watcher_ws.close()


BAD_FRAMES = {
    "malformed": (b"\x00\x01\xff\xff\xff", CloseCode.PROTOCOL_ERROR),
    "truncated": (protocol.sync_update(b"\x01\x02\x03\x04")[:-2], CloseCode.PROTOCOL_ERROR),
    "unknown-type": (b"\x09\x00", CloseCode.PROTOCOL_ERROR),
    "unknown-sync-type": (b"\x00\x07\x00", CloseCode.PROTOCOL_ERROR),
    "refused-update": (protocol.sync_update(b"\x05\xff\x00garbage"), CloseCode.INVALID_DATA),
    "awareness-not-json": (
        protocol.awareness(protocol.encode_awareness_entries([protocol.AwarenessEntry(1, 1, "{")])),
        CloseCode.INVALID_DATA,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_bad_frame_closes_only_that_socket_and_leaves_document_unchanged(
    case: str,
    server: InProcessServer,
    http: aiohttp.ClientSession,
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame, code = BAD_FRAMES[case]
    a = await make_client()
    b = await make_client()
    a.doc.get("text", type=Text).insert(0, "before")
    await b.wait_for(lambda: text_of(b) == "before")
    ws = await raw_socket(http, server)
    await ws.send_bytes(frame)
    msg = await ws.receive(timeout=5)
    while msg.type is aiohttp.WSMsgType.BINARY:  # frames sent before the close
        msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == code
    await logged(caplog, "doc='doc'", f"code={int(code)}")
    # Everyone else carries on, and the document is exactly as it was.
    a.doc.get("text", type=Text).insert(6, " after")
    await converged([a, b])
    late = await make_client()
    assert text_of(late) == "before after"


async def test_text_frame_closes_with_1003(
    server: InProcessServer, http: aiohttp.ClientSession, make_client: ClientFactory
) -> None:
    a = await make_client()
    ws = await raw_socket(http, server)
    await ws.send_str("hello")
    msg = await ws.receive(timeout=5)
    while msg.type is aiohttp.WSMsgType.BINARY:
        msg = await ws.receive(timeout=5)
    assert ws.close_code == CloseCode.UNSUPPORTED_DATA
    a.doc.get("text", type=Text).insert(0, "still fine")
    late = await make_client()
    await late.wait_for(lambda: text_of(late) == "still fine")


async def test_oversized_message_closes_with_1009(
    make_server: ServerFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(max_message_size=1024)
    ws = await raw_socket(http, server)
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, "x" * 4096)
    await ws.send_bytes(protocol.sync_update(doc.get_update()))
    msg = await ws.receive(timeout=5)
    while msg.type is aiohttp.WSMsgType.BINARY:
        msg = await ws.receive(timeout=5)
    assert ws.close_code == CloseCode.MESSAGE_TOO_BIG
    await logged(caplog, "code=1009")
    room = server.app[MANAGER].rooms["doc"]
    assert str(room.doc.get("text", type=Text)) == ""


async def test_half_open_peer_is_dropped_by_heartbeat(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(heartbeat=0.2)
    # autoping=False: this client never answers pings, like a dead peer.
    ws = await http.ws_connect(f"{server.ws_url}/doc", autoping=False)
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
    await eventually(lambda: not server.app[MANAGER].rooms["doc"].connections)


async def test_slow_reader_is_closed_with_1013_and_others_keep_syncing(
    make_server: ServerFactory,
    make_client: ClientFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await make_server(queue_limit=4, stall_timeout=0.2)
    writer = await make_client(url=server.ws_url)
    reader = await make_client(url=server.ws_url)
    # A socket that never reads: its kernel buffers fill up, then its queue.
    stuck = await http.ws_connect(f"{server.ws_url}/doc", max_msg_size=0)
    connection = stuck._response.connection
    assert connection is not None
    transport = connection.transport
    assert transport is not None
    transport.pause_reading()
    room = server.app[MANAGER].rooms["doc"]
    (stuck_conn,) = [c for c in room.connections if c.peer.endswith(str(stuck_port(stuck)))]
    text = writer.doc.get("text", type=Text)
    backlog = 0
    try:
        async with asyncio.timeout(30):
            while len(room.connections) == 3:
                text.insert(len(text), "y" * 64 * 1024)
                await writer.drain()
                await asyncio.sleep(0.01)  # pace the writer so the stall clock runs
                backlog = max(backlog, stuck_conn._queued_bytes)
        await reader.wait_for(lambda: len(text_of(reader)) == len(text), timeout=20)
    finally:
        transport.resume_reading()
        await stuck.close()
    await logged(caplog, "code=1013")
    assert len(room.connections) == 2
    # Memory stayed bounded: merging kept the backlog to about the document's size.
    assert backlog <= len(text) + 64 * 1024


def stuck_port(ws: aiohttp.ClientWebSocketResponse) -> int:
    """The local port of a client socket, to find its connection on the server."""
    sock = ws._response.connection.transport.get_extra_info("sockname")  # type: ignore[union-attr]
    return int(sock[1])


@pytest.mark.parametrize("setting", [False, True])
async def test_permessage_deflate_is_accepted_only_when_enabled(
    make_server: ServerFactory, http: aiohttp.ClientSession, setting: bool
) -> None:
    server = await make_server(ws_compression=setting)
    # Offer permessage-deflate, as every browser does.
    ws = await http.ws_connect(f"{server.ws_url}/doc", compress=15)
    assert (ws.compress != 0) is setting
    first = await ws.receive_bytes(timeout=5)
    assert isinstance(protocol.decode(first), protocol.SyncStep1)
    await ws.send_bytes(protocol.sync_step1(b"\x00"))
    reply = protocol.decode(await ws.receive_bytes(timeout=5))
    assert isinstance(reply, protocol.SyncStep2)
    # A big edit (compressed in a worker thread by aiohttp when on) reaches another socket.
    other = await http.ws_connect(f"{server.ws_url}/doc", compress=15)
    await other.receive_bytes(timeout=5)
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("text", type=Text).insert(0, "x" * 300_000)
    await ws.send_bytes(protocol.sync_update(updates[0]))
    async with asyncio.timeout(5):
        while True:
            message = protocol.decode(await other.receive_bytes())
            if isinstance(message, protocol.SyncUpdate):
                break
    seen: Doc[Any] = Doc()
    seen.apply_update(message.update)
    assert str(seen.get("text", type=Text)) == "x" * 300_000
    await other.close()
    await ws.close()
