"""The connection loop over an in-memory channel: no socket, the same behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab import protocol
from collab.closecodes import CloseCode
from collab.config import Settings
from collab.connection import Connection
from collab.hooks import HookRunner
from collab.loop import Context, serve
from collab.metrics import Metrics
from collab.rooms import RoomManager
from collab.store import MemoryStore
from tests.fakes import MemoryChannel


@pytest.fixture
async def context() -> AsyncIterator[Context]:
    store = MemoryStore()
    await store.open()
    manager = RoomManager(store, unload_grace=0.05)
    yield Context(manager, Settings(store="memory://"), Metrics(), HookRunner())
    await manager.close()
    await store.close()


async def _served(
    channel: MemoryChannel, context: Context
) -> tuple[Connection, asyncio.Task[None]]:
    conn = Connection(channel, doc="doc", peer="memory")
    task = asyncio.create_task(serve(conn, channel, context, "direct"))
    return conn, task


async def test_an_update_from_the_channel_reaches_the_room_and_the_other_channel(
    context: Context,
) -> None:
    writer, reader = MemoryChannel(), MemoryChannel()
    _, writing = await _served(writer, context)
    _, reading = await _served(reader, context)
    source: Doc[Any] = Doc()
    source.get("text", type=Text).insert(0, "no socket needed")
    writer.deliver(protocol.sync_update(source.get_update()))
    async with asyncio.timeout(5):
        while not reader.updates():
            reader.sent.clear()
            await reader.sent.wait()
    check: Doc[Any] = Doc()
    for update in reader.updates():
        check.apply_update(update)
    assert str(check.get("text", type=Text)) == "no socket needed"
    writer.deliver(None)
    reader.deliver(None)
    await asyncio.gather(writing, reading)


async def test_a_text_frame_closes_only_that_channel_with_1003(context: Context) -> None:
    rude, polite = MemoryChannel(), MemoryChannel()
    rude_conn, rude_task = await _served(rude, context)
    polite_conn, polite_task = await _served(polite, context)
    rude.deliver("hello")
    await rude_task
    assert rude.closed_with is not None and rude.closed_with[0] == CloseCode.UNSUPPORTED_DATA
    assert not polite_conn.closed
    polite.deliver(None)
    await polite_task
    assert rude_conn.close_code == CloseCode.UNSUPPORTED_DATA


async def test_a_malformed_frame_closes_with_its_protocol_code(context: Context) -> None:
    channel = MemoryChannel()
    conn, task = await _served(channel, context)
    channel.deliver(b"\x63\x00")  # an unknown message type
    await task
    assert conn.close_code == CloseCode.PROTOCOL_ERROR
    assert context.manager.connection_count == 0
