"""The webhook dispatcher over a real store and a real HTTP receiver.

``Webhook`` is driven directly (no server): updates are appended to a
SQLite or PostgreSQL store, whose commits write the events the dispatcher
turns into signed deliveries.  Server wiring and process crashes of a
whole server are in ``test_webhooks_e2e``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook as ReferenceWebhook

from collab.hooks import Persisted
from collab.store import StoreError, open_store
from collab.store.group import GroupCommitStore
from collab.testing.server import free_port
from collab.webhooks import StoredEvent, Webhook, verify
from tests.helpers import eventually
from tests.test_store_contract import Editor, _url

SECRET = "whsec_" + base64.b64encode(b"thirty-two bytes of webhook key!").decode()


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        return verify(SECRET, self.headers, self.body)


@dataclass
class Receiver:
    """An HTTP endpoint that records every request; ``answers`` are used up first
    (status, headers), then it answers 204."""

    port: int = field(default_factory=free_port)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Request(headers, await request.read(), time.time()))
        status, headers = self.answers.pop(0) if self.answers else (204, {})
        return web.Response(status=status, headers=headers)

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

    def of(self, kind: str, doc: str) -> list[Request]:
        """The requests of one event type and document."""
        return [
            r
            for r in self.requests
            if r.payload["type"] == kind and r.payload["data"]["doc"] == doc
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@dataclass
class Harness:
    """Opens stores and webhooks on one database; closes them after the test."""

    url: str
    stores: list[GroupCommitStore] = field(default_factory=list)
    hooks: list[Webhook] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def store(self, **options: Any) -> GroupCommitStore:
        store = open_store(self.url, **options)
        assert isinstance(store, GroupCommitStore)
        self.stores.append(store)
        await store.open()
        return store

    async def webhook(self, store: GroupCommitStore, url: str, **options: Any) -> Webhook:
        settings: dict[str, Any] = {
            "debounce": 0.1,
            "retry_schedule": (0.1, 0.1, 0.1, 0.1),
            "poll_interval": 0.05,
            **options,
        }
        hook = Webhook(url, SECRET, **settings)
        hook.attach(store)
        self.hooks.append(hook)
        await hook.start()

        # As the server wires it: the store's commits reach the hook's on_persisted.
        def persisted(events: list[StoredEvent]) -> None:
            for e in events:
                if e.type == "doc.persisted":
                    event = Persisted(e.doc, e.seq_from, e.seq_to, e.authors, e.updates, e.size)
                    task = asyncio.get_running_loop().create_task(hook.on_persisted(event))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

        store.on_persisted = persisted
        return hook

    async def close(self) -> None:
        for hook in self.hooks:
            await hook.close()
        for store in self.stores:
            with contextlib.suppress(StoreError):
                await store.close()


@pytest.fixture
async def harness(store_url: str) -> AsyncIterator[Harness]:
    h = Harness(store_url)
    yield h
    await h.close()


@pytest.fixture
async def sqlite_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(f"sqlite:///{tmp_path}/collab.db")
    yield h
    await h.close()


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0) -> None:
    await eventually(check, timeout=timeout)


# -- signing and payloads -------------------------------------------------------------------


async def test_deliveries_are_signed_and_verify_with_the_reference_library(
    harness: Harness, receiver: Receiver
) -> None:
    store = await harness.store()
    await harness.webhook(store, receiver.url)
    editor = Editor()
    store.append("notes", editor.type("hello"), "alice")
    store.append("notes", editor.type(" world"), "server:assistant")
    await store.flush()
    await until(lambda: bool(receiver.of("doc.persisted", "notes")))
    rows = await store.entries("notes")
    (created,) = receiver.of("doc.created", "notes")
    (persisted,) = receiver.of("doc.persisted", "notes")
    for request in (created, persisted):
        ReferenceWebhook(SECRET).verify(request.body, request.headers)
        assert request.headers["content-type"] == "application/json"
    assert persisted.payload["data"] == {
        "doc": "notes",
        "seq_from": rows[0].id,
        "seq_to": rows[1].id,
        "authors": ["alice", "server:assistant"],
        "updates": 2,
        "bytes": sum(r.size for r in rows),
    }
    assert created.payload["data"]["authors"] == ["alice"]
    assert created.id != persisted.id


async def test_the_event_filter_leaves_out_other_types(
    harness: Harness, receiver: Receiver
) -> None:
    store = await harness.store()
    await harness.webhook(store, receiver.url, events=("doc.deleted",))
    store.append("doc", Editor().type("x"))
    await store.flush()
    await store.delete("doc", author="alice")
    await until(lambda: bool(receiver.of("doc.deleted", "doc")))
    assert [r.payload["type"] for r in receiver.requests] == ["doc.deleted"]
    assert receiver.requests[0].payload["data"]["authors"] == ["alice"]


# -- retries ---------------------------------------------------------------------------------


async def test_a_receiver_failing_twice_gets_the_same_delivery_on_the_third_attempt(
    harness: Harness, receiver: Receiver
) -> None:
    receiver.answers = [(500, {}), (500, {})]
    store = await harness.store()
    hook = await harness.webhook(store, receiver.url, events=("doc.persisted",))
    store.append("doc", Editor().type("x"), "alice")
    await store.flush()
    await until(lambda: len(receiver.requests) == 3)
    first, second, third = receiver.requests
    assert first.id == second.id == third.id
    assert first.body == second.body == third.body
    assert first.payload == third.payload
    await until(lambda: _delivered(store, hook.endpoint))
    (kept,) = await store.webhook_deliveries(hook.endpoint)
    assert (kept.status, kept.attempts, kept.id) == ("delivered", 3, first.id)
    assert (hook.delivered, hook.failed_attempts) == (1, 2)


async def test_retry_after_is_honoured(harness: Harness, receiver: Receiver) -> None:
    receiver.answers = [(503, {"Retry-After": "1"})]
    store = await harness.store()
    await harness.webhook(store, receiver.url, events=("doc.persisted",))
    store.append("doc", Editor().type("x"))
    await store.flush()
    await until(lambda: len(receiver.requests) == 2)
    first, second = receiver.requests
    assert first.id == second.id
    # The schedule says 0.1 s; the receiver asked for a second.
    assert second.at - first.at >= 1.0


async def test_410_gone_disables_the_endpoint_until_it_is_enabled(
    harness: Harness, receiver: Receiver
) -> None:
    receiver.answers = [(410, {})]
    store = await harness.store()
    hook = await harness.webhook(store, receiver.url, events=("doc.persisted",))
    store.append("one", Editor().type("x"))
    await store.flush()
    await until(lambda: store.webhook_disabled(hook.endpoint))
    (gone,) = await store.webhook_deliveries(hook.endpoint)
    assert (gone.status, gone.last_error) == ("failed", "HTTP 410")
    store.append("two", Editor().type("y"))
    await store.flush()
    # Time is the input: ten polls of the dispatcher, and of a restarted one.
    await asyncio.sleep(0.5)
    await hook.close()
    restarted = await harness.webhook(store, receiver.url, events=("doc.persisted",))
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 1
    assert await store.webhook_enable(restarted.endpoint)
    store.append("three", Editor().type("z"))  # its commit wakes the dispatcher
    await until(lambda: bool(receiver.of("doc.persisted", "three")))
    await until(lambda: bool(receiver.of("doc.persisted", "two")))
    assert len(receiver.requests) == 3, "what came while disabled is delivered once enabled"


# -- debounce --------------------------------------------------------------------------------


async def test_a_thousand_appends_within_two_seconds_give_at_most_two_deliveries(
    sqlite_harness: Harness, receiver: Receiver
) -> None:
    store = await sqlite_harness.store(compact_updates=10_000)  # keep every row to look at
    await sqlite_harness.webhook(store, receiver.url, debounce=2.0, events=("doc.persisted",))
    editor = Editor()
    for i in range(1000):
        store.append("burst", editor.type("x"), f"user{i % 3}")
        if i % 25 == 24:
            await asyncio.sleep(0.05)  # 40 pauses: about 2 s
    await store.flush()
    rows = await store.entries("burst")
    assert len(rows) == 1000

    def covered() -> int:
        return sum(r.payload["data"]["updates"] for r in receiver.of("doc.persisted", "burst"))

    await until(lambda: covered() == 1000, timeout=30)
    deliveries = receiver.of("doc.persisted", "burst")
    assert 1 <= len(deliveries) <= 2
    appended = {row.id: row.at for row in rows}
    for request in deliveries:
        data = request.payload["data"]
        assert sorted(data["authors"]) == ["user0", "user1", "user2"]
        # At most 10 s late: after the first update it reports.
        assert request.at - appended[data["seq_from"]] <= 10.0
    seqs = sorted((r.payload["data"]["seq_from"], r.payload["data"]["seq_to"]) for r in deliveries)
    assert seqs[0][0] == rows[0].id and seqs[-1][1] == rows[-1].id
    # Time is the input: a third delivery would come within a debounce.
    await asyncio.sleep(2.5)
    assert len(receiver.of("doc.persisted", "burst")) == len(deliveries)


# -- durability ------------------------------------------------------------------------------


async def test_a_pending_delivery_survives_closing_the_store_abruptly(
    harness: Harness, receiver: Receiver
) -> None:
    receiver.answers = [(500, {})] * 1000
    store = await harness.store()
    first = await harness.webhook(
        store, receiver.url, events=("doc.persisted",), retry_schedule=(0.5,) * 10
    )
    store.append("doc", Editor().type("x"), "alice")
    await store.flush()
    await until(lambda: len(receiver.requests) >= 1)
    # The store goes while the dispatcher runs (it is never told).
    await store.close()
    await asyncio.sleep(0.2)  # its polls now fail, and are retried
    await first.close()
    attempted = receiver.requests[0]
    receiver.answers.clear()

    reopened = await harness.store()
    await harness.webhook(reopened, receiver.url, events=("doc.persisted",))
    await until(lambda: len(receiver.requests) >= 2)
    await until(lambda: _delivered(reopened, first.endpoint))
    last = receiver.requests[-1]
    assert (last.id, last.body) == (attempted.id, attempted.body)
    assert len({r.id for r in receiver.requests}) == 1


async def _delivered(store: GroupCommitStore, endpoint: str) -> bool:
    return [d.status for d in await store.webhook_deliveries(endpoint)] == ["delivered"]


async def test_events_committed_while_no_dispatcher_ran_are_delivered_later(
    harness: Harness, receiver: Receiver
) -> None:
    store = await harness.store()
    store.append("early", Editor().type("x"), "alice")
    await store.flush()
    await store.close()
    reopened = await harness.store()
    await harness.webhook(reopened, receiver.url)
    await until(lambda: bool(receiver.of("doc.persisted", "early")))
    assert len(receiver.of("doc.created", "early")) == 1


_KILLED_WRITER = """
import asyncio, sys
from pycrdt import Doc, Text
from collab.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open()
    doc = Doc()
    doc.observe(lambda event: store.append("doc", event.update, "alice"))
    doc.get("text", type=Text).insert(0, "committed, then killed")
    await store.flush()
    print("flushed", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_an_event_committed_just_before_a_sigkill_is_delivered_after_reopening(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "collab.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_WRITER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert await child.stdout.readline() == b"flushed\n"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    harness = Harness(f"sqlite:///{path}")
    try:
        store = await harness.store()
        await harness.webhook(store, receiver.url)
        await until(lambda: bool(receiver.of("doc.persisted", "doc")))
        (persisted,) = receiver.of("doc.persisted", "doc")
        assert persisted.payload["data"]["authors"] == ["alice"]
        assert len(receiver.of("doc.created", "doc")) == 1
    finally:
        await harness.close()


# -- several processes -----------------------------------------------------------------------


async def test_two_processes_on_one_postgres_deliver_each_event_once(
    postgres_url: str, receiver: Receiver
) -> None:
    harness = Harness(postgres_url)
    try:
        one, two = await harness.store(), await harness.store()
        await harness.webhook(one, receiver.url)
        await harness.webhook(two, receiver.url)
        editors = {name: Editor() for name in ("a", "b", "c")}
        for turn in range(3):
            for store, (name, editor) in zip((one, two, one), editors.items(), strict=True):
                store.append(name, editor.type(f"{turn}"), name)
            await asyncio.gather(one.flush(), two.flush())

        def updates(name: str) -> int:
            return sum(r.payload["data"]["updates"] for r in receiver.of("doc.persisted", name))

        await until(lambda: all(updates(name) == 3 for name in editors))
        # Time is the input: a duplicate would arrive within a few polls.
        await asyncio.sleep(0.5)
        ids = [r.id for r in receiver.requests]
        assert len(ids) == len(set(ids))
        for name in editors:
            assert len(receiver.of("doc.created", name)) == 1
            assert updates(name) == 3
    finally:
        await harness.close()
