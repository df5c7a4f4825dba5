"""Big documents over slow links (issue #16): the y-websocket #203 situation, reproduced.

The stock y-websocket client closes a socket that received nothing for 30 s,
and a WebSocket message arrives whole or not at all.  Through the netem
proxy's bandwidth limit (which delivers a frame once the link could have
carried it), a document sent as one sync step 2 never arrives on a slow
link: the client reconnects and the transfer restarts from byte 0.  Sent in
pieces it arrives on one connection, ``sync`` fires once, and a reconnect
after a cut asks only for the rest.

The runs at the speeds and sizes of the issue take a minute each: they are
in ``tests/test_big_documents_slow.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Text

from collab import protocol
from collab.client import Session
from collab.keys import MANAGER
from collab.room import Room
from collab.testing.netem import Direction, NetemProxy
from collab.testing.server import InProcessServer
from tests.conftest import ServerFactory
from tests.helpers import eventually

INTEROP_DIR = Path(__file__).parent / "interop"
MB = 1_000_000

pytestmark = pytest.mark.usefixtures("require_node")


class StockClient:
    """``tests/interop/big_sync.mjs``: the stock provider, reporting its events."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._errors = asyncio.create_task(self._read_stderr())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))
            self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    @property
    def connects(self) -> int:
        return sum(1 for e in self.of("status") if e["status"] == "connected")

    async def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                if self._reader.done():
                    raise AssertionError(f"the JS client exited waiting for {what}")
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        for task in (self._reader, self._errors):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def stock_client() -> AsyncIterator[Callable[..., Any]]:
    clients: list[StockClient] = []

    async def start(url: str, doc: str, upload: int = 0) -> StockClient:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(INTEROP_DIR / "big_sync.mjs"),
            url,
            doc,
            str(upload),
            cwd=INTEROP_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = StockClient(proc)
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.stop()


@pytest.fixture
async def proxies() -> AsyncIterator[list[NetemProxy]]:
    started: list[NetemProxy] = []
    yield started
    for proxy in started:
        await proxy.close()


async def proxy_to(server: InProcessServer, proxies: list[NetemProxy], rate: float) -> NetemProxy:
    proxy = NetemProxy(server.ws_url)
    await proxy.start()
    proxies.append(proxy)
    proxy.set_bandwidth(rate)
    return proxy


def big_document(size: int) -> tuple[bytes, str]:
    """A document of ``size`` bytes of text; (its update, sha256 of the text)."""
    line = "Zürich ☃ big document 👋 " + "x" * 70 + "\n"
    body = (line * (size // len(line.encode()) + 1)).encode()[:size].decode(errors="ignore")
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    step = len(body) // 8 + 1
    for start in range(0, len(body), step):  # a few pastes
        text += body[start : start + step]
    return doc.get_update(), hashlib.sha256(str(text).encode()).hexdigest()


async def seed(server: InProcessServer, name: str, update: bytes) -> Room:
    """Put ``update`` into document ``name`` (as if loaded from the store) and keep it loaded."""
    manager = server.app[MANAGER]
    room = await manager.acquire(name)
    room.hold()
    room.load(update)
    return room


async def download(
    make_server: ServerFactory,
    stock_client: Callable[..., Any],
    proxies: list[NetemProxy],
    *,
    size: int,
    rate: float,
    chunk: int,
) -> tuple[StockClient, str, int]:
    server = await make_server(sync_chunk_bytes=chunk)
    update, digest = await asyncio.to_thread(big_document, size)
    await seed(server, "big", update)
    proxy = await proxy_to(server, proxies, rate)
    client: StockClient = await stock_client(await proxy.endpoint("js"), "big")
    return client, digest, len(update)


@pytest.mark.timeout(90)
async def test_a_reconnect_after_a_cut_at_half_gets_at_most_55_percent(
    make_server: ServerFactory, stock_client: Callable[..., Any], proxies: list[NetemProxy]
) -> None:
    server = await make_server(sync_chunk_bytes=64 * 1024)
    update, digest = await asyncio.to_thread(big_document, 3 * MB)
    await seed(server, "cut", update)
    proxy = await proxy_to(server, proxies, 1 * MB)
    client: StockClient = await stock_client(await proxy.endpoint("js"), "cut")
    await client.wait(lambda: client.connects >= 1, 20, "a connection")
    (first,) = proxy.connections("js")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while first.stats[Direction.DOWN].bytes < len(update) // 2:
        assert loop.time() < deadline, "the transfer did not reach half"
        await asyncio.sleep(0.01)
    proxy.drop("js")
    await client.wait(lambda: bool(client.of("sync")), 30, "sync after the reconnect")
    (synced,) = client.of("sync")
    assert synced["sha256"] == digest
    assert client.connects == 2
    # What the second connection carried: the rest of the document, not all of it.
    assert synced["bytes"] <= 0.55 * len(update), (synced["bytes"], len(update))
    # The size announcement ([2, 1, n]) is ignored silently by the stock client.
    assert client.stderr == []


async def test_the_python_client_shows_the_progress_of_a_sync_in_pieces(
    make_server: ServerFactory, proxies: list[NetemProxy]
) -> None:
    server = await make_server(sync_chunk_bytes=64 * 1024)
    update, digest = await asyncio.to_thread(big_document, 2 * MB)
    await seed(server, "progress", update)
    proxy = await proxy_to(server, proxies, 1 * MB)
    session = Session(await proxy.endpoint("py"), "progress")
    seen: list[float] = []

    def far_enough() -> bool:
        seen.append(session.progress)
        return session.progress > 0.4

    try:
        await session.start()
        await session.wait_for(far_enough)
        assert not session.synced.is_set()
        assert 0.4 < session.progress < 0.99
        await session.wait_synced(30)
        assert session.progress == 1.0
        assert session.sync_expected >= len(update)
        text = str(session.doc.get("text", type=Text))
        assert hashlib.sha256(text.encode()).hexdigest() == digest
        # It grew step by step.
        assert len({round(p, 2) for p in seen if 0 < p < 1}) >= 3
    finally:
        await session.close()


def masked_frame(payload: bytes) -> bytes:
    """A client's binary WebSocket frame (masked with a zero key: the payload as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x82, 0x80 | n])
    elif n < 65536:
        head = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


async def test_an_upload_slower_than_the_heartbeat_is_not_dropped(
    make_server: ServerFactory,
) -> None:
    """A message that takes 4 s to arrive, to a server that pings after 1 s of
    silence and drops 0.5 s after an unanswered ping; this client never
    answers pings (a real one's pong would wait behind its upload)."""
    server = await make_server(heartbeat=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/trickle HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    writer.write(request.encode())
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, "t" * 200_000)
    data = masked_frame(protocol.sync_update(doc.get_update()))
    step = len(data) // 40 + 1
    try:
        for start in range(0, len(data), step):
            writer.write(data[start : start + step])
            await writer.drain()
            await asyncio.sleep(0.1)
        room = server.app[MANAGER].rooms["trickle"]
        await eventually(lambda: len(str(room.doc.get("text", type=Text))) == 200_000)
        assert len(room.connections) == 1
    finally:
        writer.close()


async def test_a_message_above_the_limit_is_closed_with_1009_and_a_reason(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_message_size=64 * 1024)
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, "x" * 100_000)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.ws_url}/limit") as ws,
    ):
        await ws.send_bytes(protocol.sync_update(doc.get_update()))
        message = await ws.receive(timeout=10)
        while message.type is aiohttp.WSMsgType.BINARY:
            message = await ws.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert message.data == 1009
    assert "--max-message-size" in str(message.extra)
