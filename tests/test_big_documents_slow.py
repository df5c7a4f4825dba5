"""The y-websocket #203 situation at the issue's sizes and speeds (issue #16): slow.

70 MB to the stock client at 1.5 MB/s and 10 MB at 256 KiB/s arrive on one
connection with one ``sync``; the same 10 MB as one message never does
(the reconnect loop); a 60 MB upload through 1 MB/s completes.  Each takes
a minute or so: ``COLLAB_SLOW_TESTS=1`` runs them (the faster checks of the
same behaviour are in ``tests/test_big_documents_net.py``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest
from pycrdt import Text

from collab.keys import MANAGER
from collab.testing.netem import NetemProxy
from tests.conftest import SLOW_CALLBACK_SECONDS, ServerFactory
from tests.test_big_documents_net import (
    MB,
    StockClient,
    download,
    proxies,
    proxy_to,
    stock_client,
)

__all__ = ["proxies", "stock_client"]  # fixtures, by name

pytestmark = [
    pytest.mark.usefixtures("require_node"),
    pytest.mark.skipif(
        not os.environ.get("COLLAB_SLOW_TESTS"), reason="slow: COLLAB_SLOW_TESTS=1 runs them"
    ),
]

#: pycrdt encodes a 70 MB document in ~1.4 s and a room applies a 60 MB
#: update in ~1.1 s (the memory store once more), on the event loop (a Doc
#: cannot be read in a thread while the loop writes to it); on this shared
#: machine under load that was up to 5.6 s.  The loop guard allows it here,
#: where nothing else is measured.
BLOCKED_LOOP_SECONDS = max(SLOW_CALLBACK_SECONDS, 10.0)


@pytest.mark.timeout(240)
async def test_the_stock_client_gets_70_MB_at_1_5_MB_s_on_one_connection(
    make_server: ServerFactory, stock_client: Callable[..., Any], proxies: list[NetemProxy]
) -> None:
    client, digest, size = await download(
        make_server, stock_client, proxies, size=70 * MB, rate=1.5 * MB, chunk=256 * 1024
    )
    await client.wait(lambda: bool(client.of("sync")), 150, "sync")
    await asyncio.sleep(1)  # nothing more comes: no second sync, no reconnect
    (synced,) = client.of("sync")
    assert synced["sha256"] == digest
    assert client.connects == 1 and not client.of("close")
    assert synced["bytes"] >= 0.99 * size  # all of it on this one connection


@pytest.mark.timeout(180)
async def test_the_stock_client_gets_10_MB_at_256_KiB_s_on_one_connection(
    make_server: ServerFactory, stock_client: Callable[..., Any], proxies: list[NetemProxy]
) -> None:
    client, digest, _ = await download(
        make_server, stock_client, proxies, size=10 * MB, rate=256 * 1024, chunk=256 * 1024
    )
    await client.wait(lambda: bool(client.of("sync")), 120, "sync")
    await asyncio.sleep(1)
    (synced,) = client.of("sync")
    assert synced["sha256"] == digest
    assert client.connects == 1 and not client.of("close")


@pytest.mark.timeout(180)
async def test_without_pieces_the_stock_client_reconnects_and_never_syncs(
    make_server: ServerFactory, stock_client: Callable[..., Any], proxies: list[NetemProxy]
) -> None:
    """The same 10 MB at 256 KiB/s as one sync step 2 (``--sync-chunk-bytes 0``)."""
    client, _, _ = await download(
        make_server, stock_client, proxies, size=10 * MB, rate=256 * 1024, chunk=0
    )
    # 40 s per attempt, and the client gives up after 30 s without a message.
    await client.wait(lambda: len(client.of("close")) >= 2, 120, "two closes")
    assert client.connects >= 2
    assert not client.of("sync")


@pytest.mark.timeout(240)
async def test_a_60_MB_upload_through_1_MB_s_completes_without_a_client_timeout(
    make_server: ServerFactory, stock_client: Callable[..., Any], proxies: list[NetemProxy]
) -> None:
    size = 60 * MB
    # netem delivers a frame whole once the link could have carried it, so
    # for 60 s the server sees no byte of this upload and the client's pong
    # waits behind it: the server's heartbeat would drop it as unresponsive.
    # On a real link the bytes trickle in and count as signs of life
    # (test_an_upload_slower_than_the_heartbeat_is_not_dropped); here the
    # heartbeat is off so that the client's own 30 s timer is what is tested.
    server = await make_server(max_message_size=80 * MB, rate_bytes=80 * MB, heartbeat=0)
    manager = server.app[MANAGER]
    room = await manager.acquire("upload")
    room.hold()
    proxy = await proxy_to(server, proxies, 1 * MB)
    client: StockClient = await stock_client(await proxy.endpoint("js"), "upload", size)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 150
    while len(room.doc.get("text", type=Text)) < size:  # ASCII: bytes are characters
        assert loop.time() < deadline, "the upload did not arrive"
        assert not client.of("close"), client.of("close")
        await asyncio.sleep(0.5)
    assert client.connects == 1 and not client.of("close")
    (conn,) = room.connections
    assert conn.keepalives >= 3  # ~60 s at one per 10 s of silence
