"""The room limits of issue #18 are settings, and the settings reach every room."""

from __future__ import annotations

from typing import Any

import aiohttp
from pycrdt import Doc, Map

from collab import protocol
from collab.closecodes import CloseCode
from collab.protocol import AwarenessEntry
from tests.conftest import ServerFactory


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code


async def test_an_awareness_message_over_the_configured_entries_closes_with_1008(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_awareness_entries=3)
    entries = [AwarenessEntry(client_id=i, clock=1, state='{"user":{}}') for i in range(4)]
    payload = protocol.encode_awareness_entries(entries)
    async with aiohttp.ClientSession() as http:
        small = await http.ws_connect(f"{server.ws_url}/room")
        await small.send_bytes(protocol.awareness(protocol.encode_awareness_entries(entries[:3])))
        big = await http.ws_connect(f"{server.ws_url}/room")
        await big.send_bytes(protocol.awareness(payload))
        assert await _closed_with(big) == CloseCode.POLICY_VIOLATION
        assert not small.closed
        await small.close()


async def test_nesting_beyond_the_configured_depth_closes_with_1007(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_nesting=3)
    doc: Doc[Any] = Doc()
    inner: Map[object] = doc.get("m", type=Map)
    for level in range(5):
        child: Map[object] = Map()
        inner[f"k{level}"] = child
        inner = child
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{server.ws_url}/deep")
        await ws.send_bytes(protocol.sync_update(doc.get_update()))
        assert await _closed_with(ws) == CloseCode.INVALID_DATA
