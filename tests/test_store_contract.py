"""One contract, every store: memory, SQLite (a temporary file) and a real PostgreSQL.

PostgreSQL: ``COLLAB_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``) names a server where we may
create databases; the run creates ``collab_test_<random>`` and drops it at
the end.  Unreachable, the PostgreSQL cases are skipped, except in CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from collab.store import CorruptDocument, MemoryStore, Store, StoreError, open_store
from collab.store.group import GroupCommitStore
from collab.store.sqlite import SQLiteStore
from tests.helpers import eventually

# -- editing helpers ------------------------------------------------------------------


class Editor:
    """A client document whose every change is recorded as one update."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("text", type=Text)
        self.updates: list[bytes] = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def type(self, s: str) -> bytes:
        self.text += s
        return self.updates[-1]

    def __str__(self) -> str:
        return str(self.text)


def text_of(update: bytes | None) -> str:
    assert update is not None
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return str(doc.get("text", type=Text))


def typed(store: Store, name: str, pieces: list[str]) -> Editor:
    """Type ``pieces`` into a new editor, appending each change to ``store``."""
    editor = Editor()
    for piece in pieces:
        store.append(name, editor.type(piece))
    return editor


# -- the backends under test ------------------------------------------------------------


@dataclass
class Backend:
    """Opens stores of one kind on one database; closes them after the test."""

    kind: str
    url: str
    opened: list[Store] = field(default_factory=list)

    @property
    def durable(self) -> bool:
        return self.kind != "memory"

    async def open(self, **options: Any) -> Any:
        store = open_store(self.url, **options)
        self.opened.append(store)
        await store.open()
        return store

    async def insert_raw(self, name: str, data: bytes) -> None:
        """Write a log row behind the store's back (as a damaged disk would)."""
        if self.kind == "sqlite":

            def insert() -> None:
                with contextlib.closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as db:
                    db.execute(
                        "INSERT INTO collab_updates (name, data, created_at) VALUES (?, ?, ?)",
                        (name, data, time.time()),
                    )
                    db.commit()

            await asyncio.to_thread(insert)
        else:
            import psycopg

            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                await conn.execute(
                    "INSERT INTO collab_updates (name, data, created_at) VALUES (%s, %s, now())",
                    [name, data],
                )


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/data/collab.db"
    return str(request.getfixturevalue("postgres_url"))


async def _backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    # (conftest's autouse fixture fails the test if the event loop is blocked.)
    backend = Backend(kind, _url(kind, request, tmp_path))
    try:
        yield backend
    finally:
        for store in backend.opened:
            with contextlib.suppress(StoreError):
                await store.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Every store."""
    async for b in _backend(request.param, request, tmp_path):
        yield b


@pytest.fixture(params=["sqlite", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The stores that write to a database (and so commit, survive restarts, can rot)."""
    async for b in _backend(request.param, request, tmp_path):
        yield b


# -- the contract --------------------------------------------------------------------------


async def test_load_of_unknown_document_is_none(backend: Backend) -> None:
    store = await backend.open()
    assert await store.load("nobody") is None
    assert await store.info("nobody") is None
    assert await store.list() == []


async def test_appended_updates_load_back_merged(backend: Backend) -> None:
    store = await backend.open()
    pieces = [f"line {i}\n" for i in range(50)]
    typed(store, "notes", pieces)
    typed(store, "other", ["unrelated"])
    await store.flush()
    assert text_of(await store.load("notes")) == "".join(pieces)
    assert text_of(await store.load("other")) == "unrelated"


async def test_load_sees_updates_not_yet_committed(durable: Backend) -> None:
    store = await durable.open(commit_window=60)
    first = typed(store, "doc", ["committed "])
    await store.flush()
    store.append("doc", first.type("queued"))  # the next commit is a minute away
    assert store.queued == 1
    assert text_of(await store.load("doc")) == "committed queued"
    assert store.commits == 1


async def test_load_sees_appends_without_flush(backend: Backend) -> None:
    store = await backend.open()
    typed(store, "doc", ["a", "b", "c"])
    assert text_of(await store.load("doc")) == "abc"


async def test_flushed_updates_survive_close_and_reopen(durable: Backend) -> None:
    store = await durable.open()
    editor = typed(store, "doc", [f"{i}," for i in range(100)])
    await store.flush()
    await store.close()
    reopened = await durable.open()
    assert text_of(await reopened.load("doc")) == str(editor)


async def test_close_commits_what_is_queued(durable: Backend) -> None:
    store = await durable.open(commit_window=60)
    store.append("doc", Editor().type("x"))
    store.append("doc", Editor().type("y"))
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append("doc", Editor().type("z"))
    reopened = await durable.open()
    assert sorted(text_of(await reopened.load("doc"))) == ["x", "y"]


async def test_compaction_keeps_content_and_leaves_one_update(backend: Backend) -> None:
    store = await backend.open()
    editor = typed(store, "doc", [f"{i} " for i in range(40)])
    await store.flush()
    before = await store.info("doc")
    assert before is not None and before.updates == 40
    await store.compact("doc")
    after = await store.info("doc")
    assert after is not None and after.updates == 1
    assert text_of(await store.load("doc")) == str(editor)
    # Appending after a compaction builds on the snapshot.
    store.append("doc", editor.type("end"))
    await store.flush()
    assert text_of(await store.load("doc")) == str(editor)
    info = await store.info("doc")
    assert info is not None and info.updates == 2


async def test_compacting_an_unknown_or_compact_document_changes_nothing(
    backend: Backend,
) -> None:
    store = await backend.open()
    await store.compact("nobody")
    assert await store.info("nobody") is None
    typed(store, "doc", ["a", "b"])
    await store.compact("doc")
    await store.compact("doc")
    info = await store.info("doc")
    assert info is not None and info.updates == 1
    assert text_of(await store.load("doc")) == "ab"


@pytest.mark.parametrize("threshold", ["updates", "bytes"])
async def test_log_is_compacted_automatically_past_the_threshold(
    durable: Backend, threshold: str
) -> None:
    options = {"compact_updates": 10} if threshold == "updates" else {"compact_bytes": 400}
    store = await durable.open(**options)
    editor = Editor()
    for i in range(30):
        store.append("doc", editor.type(f"piece {i};"))
        await store.flush()

    # 30 updates of ~30 bytes: past either threshold two times at least.
    await eventually(lambda: store.compactions >= 2)
    info = await store.info("doc")
    assert info is not None and info.updates < 16, "a snapshot and the log since"
    assert text_of(await store.load("doc")) == str(editor)


async def test_delete_forgets_the_document(backend: Backend) -> None:
    store = await backend.open(**({"commit_window": 60} if backend.durable else {}))
    typed(store, "gone", ["a", "b"])
    await store.flush()
    await store.compact("gone")
    typed(store, "gone", ["queued"])  # not yet committed
    typed(store, "kept", ["k"])
    await store.delete("gone")
    assert await store.load("gone") is None
    assert await store.info("gone") is None
    assert [i.name for i in await store.list()] == ["kept"]
    if backend.durable:
        await store.close()
        store = await backend.open()
        assert await store.load("gone") is None
        assert text_of(await store.load("kept")) == "k"


async def test_list_and_info_report_size_count_and_time(backend: Backend) -> None:
    store = await backend.open()
    t0 = time.time()
    updates = [Editor().type(f"b{i}") for i in range(3)]
    for update in updates:
        store.append("b", update)
    store.append("a", Editor().type("a"))
    pending = await store.info("b")
    await store.flush()
    t1 = time.time()
    infos = await store.list()
    assert [i.name for i in infos] == ["a", "b"]
    info = await store.info("b")
    assert info == infos[1]
    # Queued updates are counted once, committed or not.
    assert pending is not None
    assert (pending.size, pending.updates) == (info.size, info.updates)
    assert pending.updated_at == pytest.approx(info.updated_at, abs=0.01)
    assert info.size == sum(len(u) for u in updates)
    assert info.updates == 3
    assert t0 - 0.01 <= info.updated_at <= t1 + 0.01
    await store.compact("b")
    compacted = await store.info("b")
    assert compacted is not None
    assert compacted.updates == 1
    assert compacted.size == len(await store.load("b") or b"")
    assert compacted.updated_at >= info.updated_at


async def test_corrupt_row_fails_only_that_document(durable: Backend) -> None:
    store = await durable.open(compact_updates=2)
    typed(store, "bad", ["fine so far"])
    typed(store, "good", ["intact"])
    await store.flush()
    await durable.insert_raw("bad", b"\xff\xfe not an update")
    with pytest.raises(CorruptDocument, match="'bad'"):
        await store.load("bad")
    with pytest.raises(CorruptDocument, match="'bad'"):
        await store.compact("bad")
    assert text_of(await store.load("good")) == "intact"
    # Commits go on, and so does automatic compaction of the others.
    store.append("bad", Editor().type("more"))
    store.append("bad", Editor().type("and more"))
    good = typed(store, "good2", ["x", "y", "z"])
    await store.flush()
    assert store.healthy
    await eventually(lambda: _updates(store, "good2", 1))
    assert text_of(await store.load("good2")) == str(good)
    with pytest.raises(CorruptDocument):
        await store.load("bad")
    await store.delete("bad")
    assert await store.load("bad") is None


async def _updates(store: Store, name: str, expected: int) -> bool:
    info = await store.info(name)
    return info is not None and info.updates == expected


async def test_appends_within_one_window_are_one_transaction(durable: Backend) -> None:
    store = await durable.open(commit_window=1.0)
    editors = [Editor() for _ in range(3)]
    store.append("doc0", editors[0].type("first"))
    # After a quiet spell the first append is committed at once...
    await eventually(lambda: store.commits == 1)
    # ...and what comes within the next second waits for one shared commit.
    for turn in range(50):
        for i, editor in enumerate(editors):
            store.append(f"doc{i}", editor.type(f"{turn},"))
        await asyncio.sleep(0)
    assert store.commits == 1
    assert store.queued == 150
    committed: list[int] = []
    store.on_commit = lambda updates, seconds: committed.append(updates)
    await eventually(lambda: store.commits == 2, timeout=5)
    assert store.queued == 0
    await asyncio.sleep(0)
    assert store.commits == 2
    assert committed == [150]
    for i, editor in enumerate(editors):
        assert text_of(await store.load(f"doc{i}")) == str(editor)


async def test_flush_commits_at_once_without_waiting_for_the_window(durable: Backend) -> None:
    store = await durable.open(commit_window=30)
    store.append("doc", Editor().type("a"))
    await eventually(lambda: store.commits == 1)
    store.append("doc", Editor().type("b"))
    async with asyncio.timeout(5):
        await store.flush()
    assert store.commits == 2


async def test_failed_compaction_leaves_the_document_intact(
    durable: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await durable.open()
    editor = typed(store, "doc", [f"{i}." for i in range(20)])
    await store.compact("doc")
    typed_more = [editor.type(f"+{i}") for i in range(5)]
    for update in typed_more:
        store.append("doc", update)
    await store.flush()

    def crash(*args: Any) -> None:
        raise OSError("simulated crash between snapshot and log deletion")

    # The new snapshot is written, then deleting the merged rows fails.
    monkeypatch.setattr(store, "_delete_log", crash)
    with pytest.raises(StoreError, match="simulated crash"):
        await store.compact("doc")
    info = await store.info("doc")
    assert info is not None and info.updates == 6, "the old snapshot and log are still there"
    assert text_of(await store.load("doc")) == str(editor)
    monkeypatch.undo()
    await store.compact("doc")
    assert await _updates(store, "doc", 1)
    assert text_of(await store.load("doc")) == str(editor)


async def test_unwritable_data_dir_gives_store_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # Works as root too: no chmod involved.
    store = open_store(f"sqlite:///{blocker}/sub/collab.db")
    with pytest.raises(StoreError, match=re.escape(f"{blocker}/sub")) as caught:
        await store.open()
    assert "\n" not in str(caught.value)
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    store = open_store(f"sqlite:///{folder}")
    with pytest.raises(StoreError, match=re.escape(str(folder))):
        await store.open()


async def test_sqlite_runs_in_its_own_thread_never_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connected_in: list[int] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connected_in.append(threading.get_ident())
        conn: sqlite3.Connection = connect(*args, **kwargs)
        return conn

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    async with SQLiteStore(tmp_path / "collab.db") as store:
        typed(store, "doc", ["a", "b"])
        await store.compact("doc")
        assert text_of(await store.load("doc")) == "ab"
        await store.list()
        await store.delete("doc")
    # The connection refuses use from any other thread (check_same_thread).
    assert connected_in and threading.get_ident() not in connected_in


async def test_locked_database_commits_are_retried_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "collab.db"
    store = SQLiteStore(path, busy_timeout=0.05, retry_max=0.2)
    await store.open()
    try:
        editor = typed(store, "doc", ["before"])
        await store.flush()
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")  # another writer holds the lock
        try:
            store.append("doc", editor.type(" during"))
            await eventually(lambda: not store.healthy)
            assert store.queued == 1
            assert text_of(await store.load("doc")) == "before during"
        finally:
            await asyncio.to_thread(other.execute, "ROLLBACK")
            other.close()
        async with asyncio.timeout(10):
            await store.flush()
        assert store.healthy
    finally:
        await store.close()
    reopened = SQLiteStore(path)
    async with reopened:
        assert text_of(await reopened.load("doc")) == "before during"


_CRASHING_WRITER = """
import asyncio, sys
from pycrdt import Doc, Text
from collab.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1], compact_updates=20)
    await store.open()
    doc = Doc()
    text = doc.get("text", type=Text)
    doc.observe(lambda event: store.append("doc", event.update))
    i = 0
    while True:
        text += f"{i},"
        if i % 25 == 24:
            await store.flush()
            print(i, flush=True)
        else:
            await asyncio.sleep(0)
        i += 1

asyncio.run(main())
"""


async def test_sigkill_loses_nothing_that_was_flushed(tmp_path: Path) -> None:
    path = tmp_path / "collab.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHING_WRITER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None
    flushed = -1
    try:
        async with asyncio.timeout(60):
            while flushed < 1500:
                line = await child.stdout.readline()
                assert line, "the writer died on its own"
                flushed = int(line)
    finally:
        child.send_signal(signal.SIGKILL)  # mid-commit or mid-compaction, no cleanup
        await child.wait()
    async with SQLiteStore(path) as store:
        text = text_of(await store.load("doc"))
    numbers = [int(n) for n in text.split(",")[:-1]]
    assert numbers == list(range(len(numbers))), "the log is a clean prefix"
    assert len(numbers) > flushed


async def test_two_postgres_stores_compacting_one_document_lose_nothing(
    postgres_url: str,
) -> None:
    """Two server processes share a document; both compact it all the time."""
    stores = [open_store(postgres_url, compact_updates=5) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        editors = [Editor(), Editor()]

        async def write(store: Store, editor: Editor, tag: str) -> None:
            for i in range(150):
                store.append("shared", editor.type(f"{tag}{i} "))
                if i % 10 == 0:
                    await store.compact("shared")
                await asyncio.sleep(0)
            await store.flush()

        await asyncio.gather(
            *(write(s, e, t) for s, e, t in zip(stores, editors, "ab", strict=True))
        )
        reference: Doc[Any] = Doc()
        for editor in editors:
            for update in editor.updates:
                reference.apply_update(update)
        expected = str(reference.get("text", type=Text))
        assert text_of(await stores[0].load("shared")) == expected
        assert text_of(await stores[1].load("shared")) == expected
    finally:
        for store in stores:
            await store.close()


async def test_postgres_compaction_keeps_rows_committed_meanwhile_with_smaller_ids(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identities are handed out at insert, rows become visible at commit: a row
    another process commits during a compaction may carry a smaller id than
    the rows the compaction merged, and must survive it."""
    import psycopg

    store = open_store(postgres_url)
    await store.open()
    other = await psycopg.AsyncConnection.connect(postgres_url)  # not autocommit
    try:
        editor = typed(store, "doc", ["a"])
        await store.flush()
        late = Editor().type("late")
        await other.execute(
            "INSERT INTO collab_updates (name, data, created_at) VALUES ('doc', %s, now())",
            [late],
        )  # takes the next id, invisible until committed
        store.append("doc", editor.type("b"))
        await store.flush()  # a bigger id, committed first
        write_snapshot = store._write_snapshot  # type: ignore[attr-defined]

        async def commit_other_first(*args: Any) -> None:
            await other.commit()  # after the compaction read the log
            await write_snapshot(*args)

        monkeypatch.setattr(store, "_write_snapshot", commit_other_first)
        await store.compact("doc")
        assert await _updates(store, "doc", 2), "the snapshot and the late row"
        assert "late" in text_of(await store.load("doc"))
    finally:
        await other.close()
        await store.close()


class TcpProxy:
    """Forwards a local port to PostgreSQL; ``cut()`` simulates an outage."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


async def test_postgres_outage_keeps_updates_queued_until_it_is_back(postgres_url: str) -> None:
    target = urlsplit(postgres_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    user = target.netloc.rpartition("@")[0]
    via_proxy = urlunsplit(target._replace(netloc=f"{user}@127.0.0.1:{proxy.port}"))
    store = open_store(via_proxy, timeout=0.5, retry_max=0.3)
    assert isinstance(store, GroupCommitStore)
    await store.open()
    try:
        editor = typed(store, "doc", ["before "])
        await store.flush()
        await proxy.cut()
        for i in range(20):
            store.append("doc", editor.type(f"{i} "))
        await eventually(lambda: not store.healthy)
        assert store.queued == 20
        with pytest.raises(StoreError):
            await store.load("doc")  # reads need the database
        await proxy.start()
        async with asyncio.timeout(30):
            await store.flush()
        assert store.healthy
        assert text_of(await store.load("doc")) == str(editor)
    finally:
        await store.close()
        if proxy._server is not None:
            await proxy.cut()
    direct = open_store(postgres_url)
    await direct.open()
    try:
        assert text_of(await direct.load("doc")) == str(editor)
    finally:
        await direct.close()


# -- random histories --------------------------------------------------------------------

_actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("type"),
            st.integers(0, 1),
            st.integers(0, 1),
            st.text(alphabet="abc xyz\n", max_size=5),
        ),
        st.tuples(st.just("erase"), st.integers(0, 1), st.integers(0, 1), st.integers(0, 20)),
        st.tuples(st.just("sync"), st.integers(0, 1)),
        st.tuples(st.just("flush")),
        st.tuples(st.just("compact"), st.integers(0, 1)),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("load"), st.integers(0, 1)),
    ),
    max_size=40,
)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(actions=_actions)
def test_random_edits_compactions_and_reopens_keep_the_content(
    store_url: str, actions: list[tuple[Any, ...]]
) -> None:
    """Two documents, two concurrent editors each; the store always matches a reference."""
    run = secrets.token_hex(4)  # fresh documents for each example

    async def scenario() -> None:
        options = {} if store_url == "memory://" else {"compact_updates": 4}
        store = open_store(store_url, **options)
        await store.open()
        names = [f"{run}-0", f"{run}-1"]
        editors = [[Editor(), Editor()], [Editor(), Editor()]]
        reference: list[Doc[Any]] = [Doc(), Doc()]

        def record(doc: int, update: bytes) -> None:
            store.append(names[doc], update)
            reference[doc].apply_update(update)

        async def check(doc: int) -> None:
            expected = str(reference[doc].get("text", type=Text))
            loaded = await store.load(names[doc])
            assert (text_of(loaded) if loaded is not None else "") == expected

        try:
            for action in actions:
                kind = action[0]
                if kind == "type":
                    _, doc, who, s = action
                    editor = editors[doc][who]
                    if s:
                        editor.text.insert(len(editor.text) // 2, s)
                        record(doc, editor.updates[-1])
                elif kind == "erase":
                    _, doc, who, n = action
                    editor = editors[doc][who]
                    n = min(n, len(editor.text))
                    if n:
                        del editor.text[0:n]
                        record(doc, editor.updates[-1])
                elif kind == "sync":
                    a, b = editors[action[1]]
                    a.doc.apply_update(b.doc.get_update(a.doc.get_state()))
                    b.doc.apply_update(a.doc.get_update(b.doc.get_state()))
                elif kind == "flush":
                    await store.flush()
                elif kind == "compact":
                    await store.compact(names[action[1]])
                elif kind == "reopen" and store_url != "memory://":
                    await store.close()
                    store = open_store(store_url, **options)
                    await store.open()
                elif kind == "load":
                    await check(action[1])
            await check(0)
            await check(1)
        finally:
            await store.close()

    asyncio.run(scenario())


# -- open_store ---------------------------------------------------------------------------


def test_open_store_dispatches_on_the_url_scheme(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    relative = open_store("sqlite:///data/collab.db")
    assert isinstance(relative, SQLiteStore) and relative.path == "data/collab.db"
    dotted = open_store("sqlite:///./data/collab.db")
    assert isinstance(dotted, SQLiteStore) and dotted.path == "./data/collab.db"
    absolute = open_store(f"sqlite:///{tmp_path}/x.db?commit_window=0.5&compact_updates=9")
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/x.db"
    assert absolute.commit_window == 0.5 and absolute.compact_updates == 9
    from collab.store.postgres import PostgresStore  # psycopg is a dev dependency

    for url in ("postgresql://u@h:5433/db", "postgres://u@h/db"):
        store = open_store(url, commit_window=0.1)
        assert isinstance(store, PostgresStore) and isinstance(store, GroupCommitStore)
        assert store.commit_window == 0.1


@pytest.mark.parametrize(
    "url",
    ["redis://localhost", "sqlite://host/x.db", "sqlite:///", "x.db", "sqlite:///x.db?nope=1"],
)
def test_open_store_refuses_unknown_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"memory://|sqlite:///|nope"):
        open_store(url)
