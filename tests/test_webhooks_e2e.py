"""Webhooks end to end: a real receiver, real servers, crashes and clusters."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from collab.testing.server import InProcessServer, ServerProcess, free_port
from collab.webhooks import verify
from tests.conftest import ClientFactory, RedisServer
from tests.helpers import eventually

SECRET = "whsec_" + base64.b64encode(b"thirty-two bytes of webhook key!").decode()


@dataclass
class Receiver:
    """An HTTP endpoint that verifies and records deliveries; ``failing`` answers 500."""

    port: int = field(default_factory=free_port)
    failing: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    attempts: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        payload = verify(SECRET, dict(request.headers), body)
        if self.failing > 0:
            self.failing -= 1
            return web.Response(status=500)
        self.ids.append(request.headers["webhook-id"])
        self.events.append(payload)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def persisted(self, doc: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "doc.persisted" and e["data"]["doc"] == doc]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def test_an_event_committed_before_a_sigkill_is_delivered_after_the_restart(
    tmp_path: Path,
) -> None:
    receiver = Receiver()  # not listening yet: the first attempts fail
    db = tmp_path / "collab.db"
    server = ServerProcess(
        "--store",
        f"sqlite:///{db}",
        "--webhook-url",
        receiver.url,
        "--webhook-secret",
        SECRET,
    )
    await server.start()
    try:
        from collab.client import Session

        session = Session(server.ws_url, "crash-doc", min_backoff=0.05, max_backoff=0.5)
        await session.start()
        await session.wait_synced(10)
        session.text().insert(0, "committed, then the server died")
        # Wait until the commit (the server's log lists the document as stored).
        await eventually(lambda: _stored(db, "crash-doc"), timeout=10)
        await session.close()
        await server.restart(hard=True)  # SIGKILL, then start again
        await receiver.start()
        await eventually(lambda: bool(receiver.persisted("crash-doc")), timeout=30)
    finally:
        await server.stop()
        await receiver.stop()
    assert receiver.persisted("crash-doc")[0]["data"]["doc"] == "crash-doc"


def _stored(db: Path, name: str) -> bool:
    import sqlite3

    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT COUNT(*) FROM collab_updates WHERE name = ?", (name,)).fetchone()
    return bool(row and row[0])


async def test_a_burst_of_a_thousand_updates_gives_at_most_two_deliveries(
    make_client: ClientFactory, receiver: Receiver, tmp_path: Path
) -> None:
    async with InProcessServer(
        store=f"sqlite:///{tmp_path / 'collab.db'}",
        webhook_url=(receiver.url,),
        webhook_secret=SECRET,
    ) as server:
        session = await make_client("burst", url=server.ws_url)
        text = session.text()
        started = time.monotonic()
        for i in range(1000):
            text.insert(len(text), "x")
            if i % 50 == 49:
                await asyncio.sleep(0.09)  # spread over about 2 s
        burst = time.monotonic() - started
        await eventually(lambda: bool(receiver.persisted("burst")), timeout=15)
        # Everything from the burst arrives within the debounce after it ended.
        await eventually(
            lambda: sum(e["data"]["updates"] for e in receiver.persisted("burst")) >= 1,
            timeout=15,
        )
        await asyncio.sleep(3)  # time is the input: a third delivery would come by now
    deliveries = receiver.persisted("burst")
    assert burst < 4
    assert 1 <= len(deliveries) <= 2, deliveries
    assert deliveries[-1]["data"]["seq_to"] >= deliveries[0]["data"]["seq_from"]


async def test_a_receiver_that_fails_twice_gets_the_same_event_on_the_third_try(
    make_client: ClientFactory, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.failing = 2
    async with InProcessServer(
        store=f"sqlite:///{tmp_path / 'collab.db'}",
        webhook_url=(receiver.url,),
        webhook_secret=SECRET,
        webhook_retry=(0.2, 0.2, 0.2),
    ) as server:
        session = await make_client("flaky", url=server.ws_url)
        session.text().insert(0, "hello")
        await eventually(lambda: bool(receiver.persisted("flaky")), timeout=20)
    assert receiver.attempts >= 3
    assert len(set(receiver.ids)) == len(receiver.ids)


async def test_one_edit_in_a_cluster_gives_one_delivery(
    make_client: ClientFactory,
    receiver: Receiver,
    redis_server: RedisServer,
    postgres_url: str,
) -> None:
    settings: dict[str, Any] = {
        "store": postgres_url,
        "redis_url": redis_server.url,
        "webhook_url": (receiver.url,),
        "webhook_secret": SECRET,
    }
    async with InProcessServer(**settings) as one, InProcessServer(**settings) as two:
        writer = await make_client("cluster-doc", url=one.ws_url)
        reader = await make_client("cluster-doc", url=two.ws_url)
        writer.text().insert(0, "one edit")
        await eventually(lambda: str(reader.text()) == "one edit")
        await eventually(lambda: bool(receiver.persisted("cluster-doc")), timeout=20)
        await asyncio.sleep(3)  # time is the input: a duplicate would arrive by now
    assert len(receiver.persisted("cluster-doc")) == 1
