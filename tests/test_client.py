"""The Python client against a real server: reconnects and re-syncs both ways."""

from __future__ import annotations

import pytest
from pycrdt import Text

from collab import connect
from collab.client import ConnectionClosed, Session
from collab.closecodes import CloseCode
from collab.testing.server import InProcessServer
from tests.conftest import ClientFactory
from tests.helpers import text_of


async def test_connect_yields_a_synced_document(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    seed = await make_client("notes")
    seed.doc.get("text", type=Text).insert(0, "already here")
    await seed.drain()
    async with connect(server.ws_url, "notes") as session:
        await session.wait_for(lambda: text_of(session) == "already here")
        assert session.synced.is_set()


async def test_client_reconnects_after_restart_and_resyncs_both_ways(
    server: InProcessServer, make_client: ClientFactory
) -> None:
    a = await make_client()
    b = await make_client()
    a.doc.get("text", type=Text).insert(0, "kept by clients")
    await b.wait_for(lambda: text_of(b) == "kept by clients")
    await server.stop()  # memory store: the restarted server knows nothing
    await a.wait_for(lambda: not a.synced.is_set())
    a.doc.get("text", type=Text).insert(0, "offline ")  # typed while disconnected
    await server.start()
    await a.wait_synced(10)
    await b.wait_synced(10)
    await b.wait_for(lambda: text_of(b) == "offline kept by clients")
    fresh = await make_client()
    assert text_of(fresh) == "offline kept by clients"
    assert a.connects >= 2


async def test_client_gives_up_when_the_handshake_is_refused(server: InProcessServer) -> None:
    session = Session(server.ws_url, "x" * 513, min_backoff=0.01)
    await session.start()
    with pytest.raises(ConnectionClosed) as info:
        await session.wait_synced(5)
    assert info.value.code == 4400
    assert session.connects == 0
    await session.close()


async def test_protocol_error_from_us_is_reported_not_retried(server: InProcessServer) -> None:
    session = Session(server.ws_url, "doc", min_backoff=0.01)
    await session.start()
    await session.wait_synced()
    session._outbox.put_nowait(b"\x09garbage")  # a frame no server accepts
    session.synced.clear()
    with pytest.raises(ConnectionClosed) as info:
        await session.wait_synced(5)
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    assert "unknown message type 9" in info.value.reason
    assert session.connects == 1
    await session.close()
