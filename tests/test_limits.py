"""Every limit: the offender gets its documented close code, everyone else carries on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pycrdt import Awareness, Doc, Text

from collab import protocol
from collab.client import ConnectionClosed, Session
from collab.closecodes import CloseCode
from collab.keys import MANAGER
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory, ServerFactory
from tests.helpers import logged, text_of


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


async def others_keep_syncing(a: Session, b: Session, marker: str) -> None:
    a.doc.get("text", type=Text).insert(0, marker)
    await b.wait_for(lambda: marker in text_of(b))


async def test_update_that_would_grow_document_past_limit_is_refused_with_4413(
    make_server: ServerFactory, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(max_doc_size=4096)
    a = await make_client(url=server.ws_url)
    b = await make_client(url=server.ws_url)
    await others_keep_syncing(a, b, "small ")
    hog = await make_client(url=server.ws_url)
    hog.doc.get("text", type=Text).insert(0, "x" * 8192)
    hog.synced.clear()
    with pytest.raises(ConnectionClosed) as info:
        await hog.wait_synced(5)
    assert info.value.code == CloseCode.DOCUMENT_TOO_LARGE
    await logged(caplog, "code=4413")
    await others_keep_syncing(a, b, "still ")
    room = server.app[MANAGER].rooms["doc"]
    assert "x" not in str(room.doc.get("text", type=Text))


async def test_http_update_past_document_limit_is_413(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_doc_size=1024)
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, "y" * 4096)
    async with http.post(f"{server.http_url}/api/docs/big/update", data=doc.get_update()) as r:
        assert r.status == 413


async def test_connections_past_the_per_document_limit_are_closed_with_1013(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_connections_per_doc=2)
    a = await make_client(url=server.ws_url)
    b = await make_client(url=server.ws_url)
    extra = await http.ws_connect(f"{server.ws_url}/doc")
    assert await closed_with(extra) == CloseCode.TRY_AGAIN_LATER
    elsewhere = await make_client("other-doc", url=server.ws_url)
    assert elsewhere.synced.is_set()
    await others_keep_syncing(a, b, "fine")


async def test_connections_past_the_total_limit_are_closed_with_1013(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_connections=2)
    a = await make_client(url=server.ws_url)
    b = await make_client(url=server.ws_url)
    extra = await http.ws_connect(f"{server.ws_url}/another")
    assert await closed_with(extra) == CloseCode.TRY_AGAIN_LATER
    await others_keep_syncing(a, b, "fine")
    await a.close()  # a slot frees up
    late = await make_client("another", url=server.ws_url)
    assert late.synced.is_set()


async def test_sending_faster_than_the_message_rate_is_closed_with_4429(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(rate_messages=20)
    a = await make_client(url=server.ws_url)
    b = await make_client(url=server.ws_url)
    flood = await http.ws_connect(f"{server.ws_url}/doc")
    aw = Awareness(Doc())
    for i in range(200):
        aw.set_local_state({"cursor": i})
        if flood.closed:
            break
        await flood.send_bytes(protocol.awareness(aw.encode_awareness_update([aw.client_id])))
    assert await closed_with(flood) == CloseCode.RATE_LIMITED
    await others_keep_syncing(a, b, "fine")


async def test_sending_more_bytes_than_the_byte_rate_is_closed_with_4429(
    make_server: ServerFactory, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(rate_bytes=10_000, max_message_size=8_000)
    a = await make_client(url=server.ws_url)
    b = await make_client(url=server.ws_url)
    flood = await http.ws_connect(f"{server.ws_url}/doc")
    writer: Doc[Any] = Doc()
    text = writer.get("text", type=Text)
    for _ in range(20):
        before = writer.get_state()
        text.insert(len(text), "z" * 3_000)
        if flood.closed:
            break
        await flood.send_bytes(protocol.sync_update(writer.get_update(before)))
    assert await closed_with(flood) == CloseCode.RATE_LIMITED
    await others_keep_syncing(a, b, "fine")


async def test_ordinary_typing_stays_under_the_default_rates(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    a = await make_client()
    b = await make_client()
    text = a.doc.get("text", type=Text)
    for i in range(300):  # a burst of fast typing with cursor moves
        text.insert(len(text), "k")
        a.set_presence({"cursor": i})
    await b.wait_for(lambda: text_of(b) == "k" * 300)
    assert not a.error


async def test_document_name_longer_than_limit_is_400(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_name_length=10)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{server.ws_url}/{'n' * 11}")
    assert info.value.status == 400
    async with http.get(f"{server.http_url}/api/docs/{'n' * 11}") as resp:
        assert resp.status == 400


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes the connection; what it sent before."""
    return await asyncio.wait_for(reader.read(), timeout=20)


async def test_an_unfinished_request_is_closed_after_the_request_timeout(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = await make_server(request_timeout=0.5)
    editor = await make_client(url=server.ws_url)  # an open WebSocket is not a request
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /ws/doc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await closed_by_server(reader) == b""  # slowloris: headers never finished
    assert await closed_by_server(silent_reader) == b""  # connected and said nothing
    writer.close()
    silent_writer.close()
    other = await make_client(url=server.ws_url)
    await others_keep_syncing(editor, other, "still open")


async def test_a_name_with_a_newline_can_be_opened_and_read(
    server: InProcessServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    name = "two\nlines"
    writer = await make_client(name)
    writer.doc.get("text", type=Text).insert(0, "reachable")
    await writer.drain()
    async with http.get(f"{server.http_url}/api/docs") as resp:
        assert [d["name"] for d in (await resp.json())["docs"]] == [name]
    ws = await http.ws_connect(f"{server.ws_url}/two%0Alines")
    await ws.close()
    assert name in server.app[MANAGER].rooms


async def test_a_name_with_a_nul_byte_is_400(
    server: InProcessServer, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{server.ws_url}/a%00b")
    assert info.value.status == 400
    async with http.get(f"{server.ws_url.replace('ws:', 'http:')}/a%00b") as resp:
        assert (await resp.json())["error"] == "invalid_name"
