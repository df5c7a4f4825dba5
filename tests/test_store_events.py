"""The stores' change feed and webhook outbox, over SQLite and a real PostgreSQL.

Same backends as ``test_store_contract``: each log row keeps its author,
each commit writes its events in its own transaction (so an event exists
if and only if what it reports does), and the webhook dispatcher's state
survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collab.store import MemoryStore, StoreError, open_store
from collab.store.group import GroupCommitStore
from collab.store.sqlite import SQLiteStore
from collab.webhooks import Delivery, Outbox, StoredEvent
from tests.helpers import eventually
from tests.test_store_contract import Backend, Editor, _url, text_of, typed


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    # A plain fixture: the run's PostgreSQL database is created here, not on the loop.
    return request.param, _url(request.param, request, tmp_path)


@pytest.fixture
async def durable(durable_url: tuple[str, str]) -> AsyncIterator[Backend]:
    """The stores that write to a database, as in ``test_store_contract``."""
    backend = Backend(*durable_url)
    try:
        yield backend
    finally:
        for store in backend.opened:
            with contextlib.suppress(StoreError):
                await store.close()


def kinds(events: list[StoredEvent]) -> list[tuple[str, str]]:
    return [(e.type, e.doc) for e in events]


async def all_events(store: GroupCommitStore) -> list[StoredEvent]:
    return await store.events_after(0, 10_000)


def delivery(endpoint: str, n: int, doc: str = "doc", **changes: Any) -> Delivery:
    now = time.time()
    fields: dict[str, Any] = {
        "id": f"msg_{endpoint}_{n}",
        "endpoint": endpoint,
        "type": "doc.persisted",
        "doc": doc,
        "seq_from": n,
        "seq_to": n + 2,
        "authors": ("alice", "bob"),
        "updates": 3,
        "size": 120,
        "first_at": now,
        "next_at": now + n,
        **changes,
    }
    return Delivery(**fields)


# -- authors and events ---------------------------------------------------------------


async def test_log_rows_keep_their_author_and_time(durable: Backend) -> None:
    store = await durable.open()
    editor = Editor()
    t0 = time.time()
    store.append("doc", editor.type("a"), "alice")
    store.append("doc", editor.type("b"))
    store.append("doc", editor.type("c"), "server:assistant")
    await store.flush()
    t1 = time.time()
    entries = await store.entries("doc")
    assert [e.author for e in entries] == ["alice", None, "server:assistant"]
    assert [e.size for e in entries] == [len(u) for u in editor.updates]
    assert entries[0].id < entries[1].id < entries[2].id
    assert all(t0 - 0.01 <= e.at <= t1 + 0.01 for e in entries)
    await store.close()
    reopened = await durable.open()
    assert await reopened.entries("doc") == entries


async def test_a_commit_writes_one_persisted_event_per_document(durable: Backend) -> None:
    store = await durable.open(commit_window=60)
    seen: list[list[StoredEvent]] = []
    store.on_persisted = seen.append
    a, b = Editor(), Editor()
    store.append("a", a.type("1"), "alice")
    store.append("b", b.type("x"))
    store.append("a", a.type("2"), "bob")
    store.append("a", a.type("3"), "alice")
    before = time.time()
    await store.flush()  # one commit for all four
    assert store.commits == 1
    events = await all_events(store)
    assert kinds(events) == [
        ("doc.created", "a"),
        ("doc.persisted", "a"),
        ("doc.created", "b"),
        ("doc.persisted", "b"),
    ]
    assert seen == [events], "on_persisted got exactly what the commit wrote"
    rows = await store.entries("a")
    created, persisted = events[0], events[1]
    assert (persisted.seq_from, persisted.seq_to) == (rows[0].id, rows[-1].id)
    assert persisted.authors == ("alice", "bob")
    assert persisted.updates == 3
    assert persisted.size == sum(len(u) for u in a.updates)
    assert before - 0.01 <= persisted.at <= time.time()
    assert (created.seq_from, created.seq_to, created.authors) == (
        rows[0].id,
        rows[0].id,
        ("alice",),
    )
    assert events[3].authors == (), "unknown authors are left out"
    assert [e.id for e in events] == sorted(e.id for e in events)


async def test_doc_created_is_written_for_the_first_rows_only(durable: Backend) -> None:
    store = await durable.open()
    editor = typed(store, "doc", ["a"])
    await store.flush()
    store.append("doc", editor.type("b"), "alice")
    await store.flush()
    await store.close()
    store = await durable.open()
    store.append("doc", editor.type("c"))
    await store.flush()
    await store.compact("doc")  # only a snapshot is left: the document still exists
    store.append("doc", editor.type("d"))
    await store.flush()
    assert [k for k, _ in kinds(await all_events(store))] == ["doc.created"] + ["doc.persisted"] * 4
    await store.delete("doc", author="carol")
    await store.delete("doc", author="carol")  # nothing left: no second event
    store.append("doc", Editor().type("again"), "dave")
    await store.flush()
    events = await all_events(store)
    assert kinds(events)[-3:] == [
        ("doc.deleted", "doc"),
        ("doc.created", "doc"),
        ("doc.persisted", "doc"),
    ]
    deleted, created = events[-3], events[-2]
    assert deleted.authors == ("carol",)
    assert created.authors == ("dave",)
    assert text_of(await store.load("doc")) == "again"


async def test_deleting_what_was_never_committed_writes_no_event(durable: Backend) -> None:
    store = await durable.open(commit_window=60)
    store.append("doc", Editor().type("queued"))
    await store.delete("doc")
    await store.delete("never")
    await store.flush()
    assert await all_events(store) == []


async def test_an_event_is_written_if_and_only_if_its_updates_are(
    durable: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await durable.open(retry_max=0.1)
    seen: list[list[StoredEvent]] = []
    store.on_persisted = seen.append
    insert_events = store._insert_events

    def fail_in_sqlite(db: Any, events: Any) -> Any:
        insert_events(db, events)
        raise sqlite3.OperationalError("disk I/O error (simulated, before COMMIT)")

    async def fail_in_postgres(conn: Any, events: Any) -> Any:
        await insert_events(conn, events)
        # The server ends the session before COMMIT (a restart, a network cut).
        await terminate(durable.url, conn.info.backend_pid)

    failing = fail_in_sqlite if durable.kind == "sqlite" else fail_in_postgres
    monkeypatch.setattr(store, "_insert_events", failing)
    editor = typed(store, "doc", ["lost? ", "no: "])
    await eventually(lambda: not store.healthy)
    assert await all_events(store) == []
    assert await store.entries("doc") == []
    assert seen == []
    monkeypatch.undo()
    store.append("doc", editor.type("retried"), "alice")
    async with asyncio.timeout(10):
        await store.flush()
    assert store.healthy
    events = await all_events(store)
    assert kinds(events) == [("doc.created", "doc"), ("doc.persisted", "doc")]
    assert events[1].updates == 3
    assert len(await store.entries("doc")) == 3
    assert seen == [events]
    assert text_of(await store.load("doc")) == "lost? no: retried"


async def terminate(url: str, pid: int) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", [pid])


async def test_a_postgres_connection_closed_inside_a_commit_is_no_commit(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg skips COMMIT, silently, for a connection closed inside the
    transaction block: the store must not take that for a commit."""
    store = open_store(postgres_url, retry_max=0.1)
    assert isinstance(store, GroupCommitStore)
    async with store:
        insert_events = store._insert_events  # type: ignore[attr-defined]

        async def close_inside(conn: Any, events: Any) -> Any:
            stored = await insert_events(conn, events)
            await conn.close()
            return stored

        monkeypatch.setattr(store, "_insert_events", close_inside)
        editor = typed(store, "doc", ["kept"])
        await eventually(lambda: not store.healthy)
        assert store.queued == 1, "still queued, not dropped"
        monkeypatch.undo()
        async with asyncio.timeout(10):
            await store.flush()
        assert text_of(await store.load("doc")) == str(editor)
        assert kinds(await all_events(store)) == [("doc.created", "doc"), ("doc.persisted", "doc")]


async def test_a_raising_on_persisted_does_not_stop_commits(
    durable: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = await durable.open()
    calls = 0

    def broken(events: list[StoredEvent]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug in the listener")

    store.on_persisted = broken
    editor = typed(store, "doc", ["one"])
    await store.flush()
    store.append("doc", editor.type(" two"))
    await store.flush()
    assert calls == 2
    assert store.healthy
    assert text_of(await store.load("doc")) == "one two"
    assert "on_persisted hook" in caplog.text


async def test_events_after_pages_through_the_feed_in_id_order(durable: Backend) -> None:
    store = await durable.open()
    for i in range(7):
        typed(store, f"doc{i}", ["x"])
        await store.flush()
    cursor, seen = 0, []
    while page := await store.events_after(cursor, 3):
        assert len(page) <= 3
        seen += page
        cursor = page[-1].id
    assert seen == await all_events(store)
    assert len(seen) == 14
    assert [e.id for e in seen] == sorted({e.id for e in seen})


async def test_old_events_and_finished_deliveries_are_pruned(durable: Backend) -> None:
    store = await durable.open()
    typed(store, "doc", ["a", "b"])
    await store.flush()
    await store.webhook_absorb(
        "ep",
        2,
        [
            delivery("ep", 1, status="delivered"),
            delivery("ep", 2, status="failed"),
            delivery("ep", 3),
        ],
    )
    assert await store.prune(before=time.time() - 3600) == 0, "nothing is that old"
    assert await store.prune(before=time.time() + 1) == 4
    assert await all_events(store) == []
    assert [d.id for d in await store.webhook_deliveries("ep")] == ["msg_ep_3"], "pending stay"


async def test_the_compaction_task_prunes_events(durable: Backend) -> None:
    store = await durable.open(compact_updates=3)
    store.event_retention = -3600.0  # everything is "older" than that
    typed(store, "doc", ["a", "b", "c", "d", "e"])
    await store.flush()
    await eventually(lambda: store.compactions >= 1)
    await eventually(lambda: _no_events(store))


async def _no_events(store: GroupCommitStore) -> bool:
    return await all_events(store) == []


# -- the outbox -----------------------------------------------------------------------


async def test_stores_implement_the_outbox(durable: Backend) -> None:
    store = await durable.open()
    assert isinstance(store, Outbox)


async def test_webhook_state_survives_reopening_the_store(durable: Backend) -> None:
    store = await durable.open()
    assert await store.webhook_cursor("ep") == 0
    assert await store.webhook_pending("ep") == []
    assert not await store.webhook_disabled("ep")
    later, sooner = delivery("ep", 9), delivery("ep", 1, authors=())
    await store.webhook_absorb("ep", 42, [later, sooner])
    await store.webhook_absorb("other", 7, [delivery("other", 1)])
    sent = replace(
        sooner,
        attempts=2,
        body=b'{"type":"doc.persisted"}',
        next_at=sooner.next_at + 30,
        last_error="HTTP 500",
    )
    await store.webhook_update(sent)
    await store.webhook_disable("ep", "answered 410 Gone")
    await store.close()

    store = await durable.open()
    assert await store.webhook_cursor("ep") == 42
    assert await store.webhook_cursor("other") == 7
    assert await store.webhook_pending("ep") == [later, sent], "by next_at"
    assert await store.webhook_disabled("ep")
    assert not await store.webhook_disabled("other")
    assert await store.webhook_enable("ep")
    assert not await store.webhook_enable("ep")
    assert not await store.webhook_disabled("ep")
    delivered = replace(later, status="delivered", attempts=1)
    await store.webhook_update(delivered)
    assert await store.webhook_pending("ep") == [sent]
    assert delivered in await store.webhook_deliveries("ep")


async def test_a_webhook_cursor_never_moves_back(durable: Backend) -> None:
    store = await durable.open()
    await store.webhook_absorb("ep", 10, [])
    await store.webhook_absorb("ep", 4, [])  # a former leader, late
    assert await store.webhook_cursor("ep") == 10


async def test_a_closed_store_refuses_outbox_calls(durable: Backend) -> None:
    store = await durable.open()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.events_after(0, 10)
    with pytest.raises(StoreError, match="closed"):
        await store.try_lead("webhook:x")


# -- schema upgrades ---------------------------------------------------------------------

_V1_SQLITE = """
CREATE TABLE collab_snapshots (name TEXT PRIMARY KEY, snapshot BLOB NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE collab_updates (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    data BLOB NOT NULL, created_at REAL NOT NULL);
CREATE INDEX collab_updates_by_name ON collab_updates (name, id);
PRAGMA user_version = 1;
"""


async def test_a_version_1_sqlite_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    editor = Editor()
    old = editor.type("written by the previous version")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(_V1_SQLITE)
        db.execute(
            "INSERT INTO collab_updates (name, data, created_at) VALUES ('doc', ?, ?)",
            (old, time.time()),
        )
        db.commit()
    async with SQLiteStore(path) as store:
        assert [e.author for e in await store.entries("doc")] == [None]
        store.append("doc", editor.type(", then upgraded"), "alice")
        await store.flush()
        assert [e.author for e in await store.entries("doc")] == [None, "alice"]
        assert kinds(await all_events(store)) == [("doc.persisted", "doc")], "not created"
        assert text_of(await store.load("doc")) == str(editor)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4


async def test_a_version_1_postgres_schema_is_upgraded_in_place(postgres_url: str) -> None:
    import psycopg

    editor = Editor()
    old = editor.type("written by the previous version")
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE collab_snapshots (name text PRIMARY KEY, snapshot bytea NOT NULL,"
            " updated_at timestamptz NOT NULL)"
        )
        await conn.execute(
            "CREATE TABLE collab_updates (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " name text NOT NULL, data bytea NOT NULL, created_at timestamptz NOT NULL)"
        )
        await conn.execute("CREATE TABLE collab_schema (version integer NOT NULL)")
        await conn.execute("INSERT INTO collab_schema VALUES (1)")
        await conn.execute(
            "INSERT INTO collab_updates (name, data, created_at) VALUES ('doc', %s, now())", [old]
        )
    store = open_store(postgres_url)
    assert isinstance(store, GroupCommitStore)
    async with store:
        store.append("doc", editor.type(", then upgraded"), "alice")
        await store.flush()
        assert [e.author for e in await store.entries("doc")] == [None, "alice"]
        assert kinds(await all_events(store)) == [("doc.persisted", "doc")], "not created"
        assert text_of(await store.load("doc")) == str(editor)
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cur = await conn.execute("SELECT MAX(version) FROM collab_schema")
        assert await cur.fetchone() == (4,)


# -- several processes -----------------------------------------------------------------


async def _pg(url: str, **options: Any) -> GroupCommitStore:
    store = open_store(url, **options)
    assert isinstance(store, GroupCommitStore)
    await store.open()
    return store


async def test_try_lead_is_exclusive_between_postgres_stores_and_moves_when_one_closes(
    postgres_url: str,
) -> None:
    one, two = await _pg(postgres_url), await _pg(postgres_url)
    try:
        assert await one.try_lead("webhook:a")
        assert await one.try_lead("webhook:a"), "still ours"
        assert not await two.try_lead("webhook:a")
        assert await two.try_lead("webhook:b"), "one lock per key"
        assert not await one.try_lead("webhook:b")
        await one.close()
        await eventually(lambda: two.try_lead("webhook:a"))
    finally:
        await one.close()
        await two.close()


async def test_try_lead_moves_when_the_leaders_connection_dies(postgres_url: str) -> None:
    """A SIGKILLed process's session ends: PostgreSQL drops its lock with it."""
    import psycopg

    one, two = await _pg(postgres_url), await _pg(postgres_url)
    try:
        assert await one.try_lead("webhook:a")
        assert not await two.try_lead("webhook:a")
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            )
        await eventually(lambda: two.try_lead("webhook:a"))
        assert not await one.try_lead("webhook:a"), "it notices, reconnects, and follows"
    finally:
        await one.close()
        await two.close()


async def test_try_lead_on_sqlite_goes_to_one_store_per_file(tmp_path: Path) -> None:
    path = tmp_path / "collab.db"
    async with SQLiteStore(path, lock="shared") as one, SQLiteStore(path, lock="shared") as two:
        assert await one.try_lead("webhook:a")
        assert await one.try_lead("webhook:b"), "the lead covers every endpoint"
        assert not await two.try_lead("webhook:a")
        await one.close()
        assert await two.try_lead("webhook:a")
    async with SQLiteStore(tmp_path / "alone.db", lock="exclusive") as alone:
        assert await alone.try_lead("webhook:a")


async def test_two_postgres_stores_creating_one_document_write_one_doc_created(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both commits insert their rows before either commits; only one is first."""
    one, two = await _pg(postgres_url), await _pg(postgres_url)
    arrived: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]

    def meeting(store: GroupCommitStore, me: int) -> None:
        insert_events = store._insert_events  # type: ignore[attr-defined]

        async def wait_for_the_other(conn: Any, events: Any) -> Any:
            # Give the other commit every chance to decide "new" too (it
            # cannot while we hold the events lock: then it waits for us).
            arrived[me].set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await arrived[1 - me].wait()
            return await insert_events(conn, events)

        monkeypatch.setattr(store, "_insert_events", wait_for_the_other)

    meeting(one, 0)
    meeting(two, 1)
    try:
        one.append("shared", Editor().type("from one"), "alice")
        two.append("shared", Editor().type("from two"), "bob")
        await asyncio.gather(one.flush(), two.flush())
        events = await all_events(one)
        assert [k for k, _ in kinds(events)].count("doc.created") == 1, events
        assert [k for k, _ in kinds(events)].count("doc.persisted") == 2
    finally:
        await one.close()
        await two.close()


async def test_events_after_never_skips_an_event_committed_later_with_a_smaller_id(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identities are taken at insert and seen at commit: a cursor must not pass an
    event whose transaction is still open."""
    slow, fast = await _pg(postgres_url), await _pg(postgres_url)
    inserted, release = asyncio.Event(), asyncio.Event()
    insert_events = slow._insert_events  # type: ignore[attr-defined]

    async def pause_before_commit(conn: Any, events: Any) -> Any:
        stored = await insert_events(conn, events)
        inserted.set()
        await release.wait()
        return stored

    monkeypatch.setattr(slow, "_insert_events", pause_before_commit)
    try:
        slow.append("slow", Editor().type("s"))
        slow_commit = asyncio.create_task(slow.flush())
        await inserted.wait()
        fast.append("fast", Editor().type("f"))
        fast_commit = asyncio.create_task(fast.flush())
        # Time is the input: long enough for the fast commit to finish if it may.
        await asyncio.wait([fast_commit], timeout=2.0)
        first = await fast.events_after(0, 100)
        cursor = first[-1].id if first else 0
        release.set()
        await asyncio.gather(slow_commit, fast_commit)
        seen = first + await fast.events_after(cursor, 100)
        assert sorted(kinds(seen)) == [
            ("doc.created", "fast"),
            ("doc.created", "slow"),
            ("doc.persisted", "fast"),
            ("doc.persisted", "slow"),
        ]
    finally:
        release.set()
        await slow.close()
        await fast.close()


async def test_store_events_log_nothing_alarming_in_normal_use(
    durable: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "collab.store")
    store = await durable.open(compact_updates=2)
    typed(store, "doc", ["a", "b", "c"])
    await store.flush()
    await store.delete("doc")
    await store.try_lead("webhook:a")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_memory_store_reports_each_turns_appends_to_on_persisted() -> None:
    """No outbox in memory, but the change feed of hooks works the same."""
    store = MemoryStore()
    seen: list[list[StoredEvent]] = []
    store.on_persisted = seen.append
    editor = Editor()
    store.append("doc", editor.type("a"))
    store.append("doc", editor.type("b"), "alice")
    store.append("other", Editor().type("x"), "bob")
    await asyncio.sleep(0)  # the end of this turn
    store.append("doc", editor.type("c"), "carol")
    await asyncio.sleep(0)
    assert [kinds(events) for events in seen] == [
        [("doc.created", "doc"), ("doc.persisted", "doc")]
        + [("doc.created", "other"), ("doc.persisted", "other")],
        [("doc.persisted", "doc")],
    ]
    first, second = seen[0][1], seen[1][0]
    assert (first.seq_from, first.seq_to, first.authors, first.updates) == (1, 2, ("alice",), 2)
    assert seen[0][0].authors == (), "its first update's author is unknown"
    assert (second.seq_from, second.seq_to, second.authors) == (4, 4, ("carol",))
    assert [e.id for events in seen for e in events] == [1, 2, 3, 4, 5]
