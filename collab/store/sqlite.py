"""The embedded default store: one SQLite file, written from one thread.

Every write runs in one dedicated thread (a one-worker executor) and every
read of documents in another, each with its own connection, so the event
loop never waits on the disk, a connection is never shared between threads,
and reading a big document never holds up a commit (WAL: readers and the
writer do not block each other).

``append`` only puts the update in a list in memory.  At most every
``commit_window`` seconds (20 ms by default) the commit task hands *all*
queued updates, of every document, to the thread, which inserts them in
one transaction (group commit): a thousand edits per second cost fifty
fsync-free commits, not a thousand.  ``flush`` cuts the window short and
waits for the commit.  A commit that fails (disk full, file locked by
another process) is retried with exponential backoff; the updates stay
queued and ``healthy`` is False until a commit succeeds again.

Durability: the database is in WAL mode with ``synchronous=NORMAL``.  A
commit then ``write()``s the transaction to the WAL file before it
returns, but does not ``fsync`` it (that happens at checkpoints).  Killing
the process (SIGKILL, OOM killer, a crash) therefore loses nothing that
was committed, because the data is in the operating system's page cache;
only a power loss or kernel crash can roll back the last transactions,
never corrupt the file.  Pass ``synchronous="FULL"`` to fsync every group
commit as well.

Layout (``PRAGMA user_version`` holds the schema version, 4; an older file
gains the ``author`` and ``seq`` columns and the event and history tables when
it is opened)::

    collab_snapshots(name PRIMARY KEY, snapshot BLOB, updated_at REAL, seq INTEGER)
    collab_updates(id INTEGER PRIMARY KEY AUTOINCREMENT, name, data BLOB, created_at REAL,
                   author TEXT)
    collab_events(id INTEGER PRIMARY KEY AUTOINCREMENT, type, name, seq_from, seq_to,
                  authors (JSON), updates, size, at REAL)
    collab_webhook_cursors / collab_webhook_deliveries / collab_webhook_endpoints
    collab_history / collab_checkpoints / collab_versions / collab_trash /
    collab_history_meta / collab_idempotency      (version history: sqlite_history.py)

Each commit writes its events (``events.py``) in its own transaction; the
single writer makes their ids grow in commit order.

A document's state is its snapshot (if any) plus its log rows.  When the
log of a document passes ``compact_updates`` rows or ``compact_bytes``
bytes, the store reads snapshot and log (reader thread), merges them
(``merge.py``: a worker process for big documents) while commits go on, and
then, in one transaction of the writer thread, writes the new snapshot and
deletes the rows it merged (ids are never reused, so "this name, id <= the
last merged id" is exactly them), provided they are all still there and the
snapshot is unchanged.

One process at a time: a server opened with ``lock="exclusive"`` holds an
``flock`` on ``PATH.lock`` while it runs, so a second server on the same
file without Redis stops at start instead of splitting live editing between
the two (issue #18, finding 8); servers linked by Redis take it shared.
Commands such as ``collab ls`` take no lock.

The queueing, commit loop and retry logic shared with the PostgreSQL
backend live in ``group.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from ..webhooks import Delivery, StoredEvent
from .base import DocInfo, LogEntry, StoreError, StoreInUse
from .events import (
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    EventDraft,
    delivery_from_row,
    delivery_row,
    drafts,
    encode_authors,
    event_from_row,
)
from .group import (
    COMMIT_WINDOW,
    COMPACT_BYTES,
    COMPACT_UPDATES,
    Committed,
    GroupCommitStore,
    LogRead,
    Pending,
)
from .merge import PROCESS_BYTES
from .sqlite_history import SCHEMA_3, SQLiteHistory

log = logging.getLogger("collab.store")

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 4

# Every statement is idempotent: it creates a new file and completes an older one.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS collab_snapshots (
    name TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS collab_updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL,
    author TEXT
);
CREATE INDEX IF NOT EXISTS collab_updates_by_name ON collab_updates (name, id);
CREATE TABLE IF NOT EXISTS collab_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL,
    authors TEXT NOT NULL,
    updates INTEGER NOT NULL,
    size INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS collab_events_by_at ON collab_events (at);
CREATE TABLE IF NOT EXISTS collab_webhook_cursors (
    endpoint TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS collab_webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL,
    authors TEXT NOT NULL,
    updates INTEGER NOT NULL,
    size INTEGER NOT NULL,
    first_at REAL NOT NULL,
    next_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS collab_webhook_deliveries_by_status
    ON collab_webhook_deliveries (endpoint, status, next_at);
CREATE TABLE IF NOT EXISTS collab_webhook_endpoints (
    endpoint TEXT PRIMARY KEY,
    disabled_at REAL NOT NULL,
    reason TEXT NOT NULL
)
"""

# Whether a document has anything stored (asked before a commit adds rows).
_STORED = (
    "SELECT EXISTS (SELECT 1 FROM collab_snapshots WHERE name = :name)"
    " OR EXISTS (SELECT 1 FROM collab_updates WHERE name = :name)"
)

#: Rows one prune transaction deletes at most (commits go on between them).
_PRUNE_CHUNK = 5000

# Snapshot first, then the log in order; one statement, so one consistent read.
# ``at`` is the snapshot's time: with the last id, what a compaction checks.
_ROWS = """
SELECT 0 AS kind, 0 AS id, snapshot, updated_at AS at FROM collab_snapshots WHERE name = :name
UNION ALL
SELECT 1, id, data, NULL FROM collab_updates WHERE name = :name
ORDER BY kind, id
"""

_LOG_TOTALS = "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM collab_updates WHERE name = ?"

_STATS = """
SELECT name, SUM(size), SUM(n), MAX(t) FROM (
    SELECT name, LENGTH(snapshot) AS size, 1 AS n, updated_at AS t
    FROM collab_snapshots {where}
    UNION ALL
    SELECT name, SUM(LENGTH(data)), COUNT(*), MAX(created_at)
    FROM collab_updates {where} GROUP BY name
) GROUP BY name ORDER BY name
"""

_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")


class SQLiteStore(SQLiteHistory, GroupCommitStore):
    """Documents in one SQLite file (WAL), written by one thread in group commits."""

    _driver_errors = (sqlite3.Error, OSError)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        commit_window: float = COMMIT_WINDOW,
        compact_updates: int = COMPACT_UPDATES,
        compact_bytes: int = COMPACT_BYTES,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        retry_min: float = 0.05,
        retry_max: float = 5.0,
        close_timeout: float = 30.0,
        merge_process_bytes: int | None = PROCESS_BYTES,
        lock: Literal["none", "shared", "exclusive"] = "none",
    ) -> None:
        super().__init__(
            commit_window=commit_window,
            compact_updates=compact_updates,
            compact_bytes=compact_bytes,
            retry_min=retry_min,
            retry_max=retry_max,
            close_timeout=close_timeout,
            merge_process_bytes=merge_process_bytes,
        )
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        if lock not in ("none", "shared", "exclusive"):
            raise ValueError("lock must be none, shared or exclusive")
        self.path = os.fspath(path)
        self.lock = lock
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._executor: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None
        self._lead_fd: int | None = None
        # Only ever touched in the writer's one thread:
        self._db: sqlite3.Connection | None = None
        self._log_totals: dict[str, list[int]] = {}
        # Only ever touched in the reader's one thread:
        self._read_db: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"

    @property
    def where(self) -> str:
        return self.path

    # -- running in the thread -------------------------------------------------------

    async def _call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the writer thread."""
        if self._executor is None:
            raise StoreError(f"store {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _read(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the reader thread."""
        if self._reader is None:
            raise StoreError(f"store {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path} is not open")
        return self._db

    @contextlib.contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        db = self._conn
        db.execute(f"BEGIN {mode}")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def _backend_open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite-read")
        try:
            await self._call(self._open_sync)
            await self._read(self._open_reader_sync)
        except BaseException:
            await self._backend_close()
            raise

    def _open_sync(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
        if self.lock != "none":
            self._lock_fd = lock_file(self.path + ".lock", exclusive=self.lock == "exclusive")
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            db = self._db
            db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning(
                    "%s: WAL unavailable (journal_mode=%s); commits are slower", self.path, mode
                )
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            with self._transaction() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has schema version {version}, newer than this collab "
                        f"understands ({SCHEMA_VERSION}); upgrade collab"
                    )
                if version < SCHEMA_VERSION:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    # Version 1 files: their log rows keep no author (None: unknown).
                    columns = {row[1] for row in db.execute("PRAGMA table_info(collab_updates)")}
                    if "author" not in columns:
                        db.execute("ALTER TABLE collab_updates ADD COLUMN author TEXT")
                    # Version 2 files: snapshots say which log rows they hold (history).
                    columns = {row[1] for row in db.execute("PRAGMA table_info(collab_snapshots)")}
                    if "seq" not in columns:
                        db.execute(
                            "ALTER TABLE collab_snapshots ADD COLUMN seq INTEGER NOT NULL DEFAULT 0"
                        )
                    for statement in SCHEMA_3:
                        db.execute(statement)
                    # Version 3 files (a day's development): the session totals.
                    columns = {row[1] for row in db.execute("PRAGMA table_info(collab_history)")}
                    for column, kind in (
                        ("gap", "REAL"),
                        ("cum_n", "INTEGER NOT NULL DEFAULT 0"),
                        ("cum_bytes", "INTEGER NOT NULL DEFAULT 0"),
                    ):
                        if column not in columns:
                            db.execute(f"ALTER TABLE collab_history ADD COLUMN {column} {kind}")
                # Always written, so that a read-only file fails here, at open.
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from None

    def _open_reader_sync(self) -> None:
        try:
            self._read_db = sqlite3.connect(self.path, isolation_level=None)
            self._read_db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            self._read_db.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from None

    async def _backend_close(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._read(self._close_reader_sync)
            self._reader.shutdown(wait=True)
            self._reader = None
        if self._executor is not None:
            with contextlib.suppress(Exception):
                await self._call(self._close_sync)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close_reader_sync(self) -> None:
        if self._read_db is not None:
            self._read_db.close()
            self._read_db = None

    def _close_sync(self) -> None:
        try:
            if self._db is not None:
                self._db.close()
                self._db = None
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
            if self._lead_fd is not None:
                os.close(self._lead_fd)
                self._lead_fd = None

    async def _backend_write(self, batch: Sequence[Pending]) -> Committed:
        result: Committed = await self._call(self._write_sync, batch)
        return result

    def _write_sync(self, batch: Sequence[Pending]) -> Committed:
        now = time.time()
        with self._transaction() as db:
            names = dict.fromkeys(e.name for e in batch)
            new = {n for n in names if not db.execute(_STORED, {"name": n}).fetchone()[0]}
            db.executemany(
                "INSERT INTO collab_updates (name, data, created_at, author) VALUES (?, ?, ?, ?)",
                [(e.name, e.update, e.at, e.author) for e in batch],
            )
            # We are the only writer and hold the write lock: AUTOINCREMENT gave
            # the batch consecutive ids, in order, ending at the last one.
            (last,) = db.execute("SELECT last_insert_rowid()").fetchone()
            ids = range(last - len(batch) + 1, last + 1)
            events = self._insert_events(db, drafts(batch, ids, new, now))
        added: dict[str, list[int]] = {}
        for e in batch:
            rows_bytes = added.setdefault(e.name, [0, 0])
            rows_bytes[0] += 1
            rows_bytes[1] += len(e.update)
        result = {}
        for name, (rows, size) in added.items():
            totals = self._log_totals.get(name)
            if totals is None:
                # First sight since open: count what is there (our rows included).
                # Committed already: a failure here must not make the batch retry.
                try:
                    row = self._conn.execute(_LOG_TOTALS, (name,)).fetchone()
                except sqlite3.Error:
                    continue
                totals = self._log_totals[name] = [int(row[0]), int(row[1])]
            else:
                totals[0] += rows
                totals[1] += size
            result[name] = (totals[0], totals[1])
        return Committed(result, events)

    # A separate step, so that a test can fail a commit after its rows went in.
    def _insert_events(
        self, db: sqlite3.Connection, events: Sequence[EventDraft]
    ) -> list[StoredEvent]:
        db.executemany(
            "INSERT INTO collab_events (type, name, seq_from, seq_to, authors, updates, size, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(*e[:4], encode_authors(e.authors), *e[5:]) for e in events],
        )
        # Consecutive ids, as for the log rows (see _write_sync).
        (last,) = db.execute("SELECT last_insert_rowid()").fetchone()
        return [e.stored(last - len(events) + 1 + i) for i, e in enumerate(events)]

    async def _backend_read(self, name: str) -> LogRead:
        result: LogRead = await self._read(self._read_sync, name)
        return result

    def _read_sync(self, name: str) -> LogRead:
        if self._read_db is None:
            raise StoreError(f"store {self.path} is not open")
        parts: list[tuple[str, bytes]] = []
        snapshot_at: float | None = None
        last_id = rows = 0
        with contextlib.closing(self._read_db.execute(_ROWS, {"name": name})) as cursor:
            for kind, row_id, data, at in cursor:
                if kind == 0:
                    snapshot_at = at
                    parts.append(("snapshot", data))
                else:
                    last_id = row_id
                    rows += 1
                    parts.append((f"update #{row_id}", data))
        return LogRead(parts, rows, (last_id, rows, snapshot_at))

    async def _backend_replace_log(self, name: str, state: bytes, token: Any) -> bool:
        done: bool = await self._call(self._replace_sync, name, state, token)
        return done

    def _replace_sync(self, name: str, state: bytes, token: tuple[int, int, float | None]) -> bool:
        last_id, rows, snapshot_at = token
        with self._transaction() as db:
            # The writer's lock is ours until COMMIT: nothing changes between
            # this check and the writes.
            snapshot = db.execute(
                "SELECT updated_at FROM collab_snapshots WHERE name = ?", (name,)
            ).fetchone()
            (still,) = db.execute(
                "SELECT COUNT(*) FROM collab_updates WHERE name = ? AND id <= ?", (name, last_id)
            ).fetchone()
            if still != rows or (snapshot[0] if snapshot else None) != snapshot_at:
                return False  # compacted or deleted meanwhile (another process?)
            now = time.time()
            seq = self._h_fold(db, name, last_id, now)  # history: keep what goes
            self._write_snapshot(db, name, state, now)
            self._delete_log(db, name, last_id)
            self._h_after_compaction(db, name, seq, now)
            left = db.execute(_LOG_TOTALS, (name,)).fetchone()
        self._log_totals[name] = [int(left[0]), int(left[1])]
        return True

    async def _backend_recount(self, name: str) -> None:
        await self._call(self._log_totals.pop, name, None)

    # Separate steps so that a test can fail one inside the transaction.
    def _write_snapshot(self, db: sqlite3.Connection, name: str, state: bytes, now: float) -> None:
        db.execute(
            "INSERT INTO collab_snapshots (name, snapshot, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE"
            " SET snapshot = excluded.snapshot, updated_at = excluded.updated_at",
            (name, state, now),
        )

    def _delete_log(self, db: sqlite3.Connection, name: str, max_id: int) -> None:
        # Exactly the rows merged: AUTOINCREMENT ids only grow, so no row of
        # this name with a smaller id appeared since they were read.
        db.execute("DELETE FROM collab_updates WHERE name = ? AND id <= ?", (name, max_id))

    async def _backend_delete(self, name: str, author: str | None) -> StoredEvent | None:
        event: StoredEvent | None = await self._call(self._delete_sync, name, author)
        return event

    def _delete_sync(self, name: str, author: str | None) -> StoredEvent | None:
        event = None
        with self._transaction() as db:
            snapshot = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(snapshot)), 0) FROM collab_snapshots"
                " WHERE name = ?",
                (name,),
            ).fetchone()
            first, last, rows, size = db.execute(
                "SELECT MIN(id), MAX(id), COUNT(*), COALESCE(SUM(LENGTH(data)), 0)"
                " FROM collab_updates WHERE name = ?",
                (name,),
            ).fetchone()
            if snapshot[0] or rows:
                if self.trash_retention > 0:
                    self._h_trash(db, name, author, time.time())
                else:
                    self._h_forget(db, name, None)
            db.execute("DELETE FROM collab_snapshots WHERE name = ?", (name,))
            db.execute("DELETE FROM collab_updates WHERE name = ?", (name,))
            if snapshot[0] or rows:
                draft = EventDraft(
                    "doc.deleted",
                    name,
                    first or 0,
                    last or 0,
                    () if author is None else (author,),
                    rows,
                    snapshot[1] + size,
                    time.time(),
                )
                (event,) = self._insert_events(db, [draft])
        self._log_totals.pop(name, None)
        return event

    async def _backend_prune(self, before: float) -> int:
        pruned = 0
        while True:
            counts: tuple[int, int] = await self._call(self._prune_sync, before)
            events, deliveries = counts
            pruned += events + deliveries
            if events < _PRUNE_CHUNK and deliveries < _PRUNE_CHUNK:
                return pruned

    def _prune_sync(self, before: float) -> tuple[int, int]:
        with self._transaction() as db:
            events = db.execute(
                "DELETE FROM collab_events WHERE id IN"
                " (SELECT id FROM collab_events WHERE at < ? LIMIT ?)",
                (before, _PRUNE_CHUNK),
            ).rowcount
            deliveries = db.execute(
                "DELETE FROM collab_webhook_deliveries WHERE id IN"
                " (SELECT id FROM collab_webhook_deliveries"
                "  WHERE status != 'pending' AND first_at < ? LIMIT ?)",
                (before, _PRUNE_CHUNK),
            ).rowcount
        return events, deliveries

    async def _backend_entries(self, name: str) -> list[LogEntry]:
        result: list[LogEntry] = await self._read(self._entries_sync, name)
        return result

    def _entries_sync(self, name: str) -> list[LogEntry]:
        rows = self._reader_conn.execute(
            "SELECT id, author, created_at, LENGTH(data) FROM collab_updates"
            " WHERE name = ? ORDER BY id",
            (name,),
        ).fetchall()
        return [LogEntry(int(i), author, float(at), int(size)) for i, author, at, size in rows]

    @property
    def _reader_conn(self) -> sqlite3.Connection:
        if self._read_db is None:
            raise StoreError(f"store {self.path} is not open")
        return self._read_db

    # -- the webhook outbox (collab.webhooks.Outbox) ------------------------------------

    async def events_after(self, after: int, limit: int) -> list[StoredEvent]:
        """Events with an id above ``after``, oldest first (at most ``limit``)."""
        self._check_open()
        with self._driver_guard("reading events"):
            result: list[StoredEvent] = await self._read(self._events_after_sync, after, limit)
        return result

    def _events_after_sync(self, after: int, limit: int) -> list[StoredEvent]:
        rows = self._reader_conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM collab_events WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [event_from_row(row) for row in rows]

    async def webhook_cursor(self, endpoint: str) -> int:
        """The last event id turned into deliveries for ``endpoint`` (0 at first)."""
        self._check_open()
        with self._driver_guard("reading a webhook cursor"):
            row = await self._read(
                self._fetchone,
                "SELECT cursor FROM collab_webhook_cursors WHERE endpoint = ?",
                (endpoint,),
            )
        return 0 if row is None else int(row[0])

    def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self._reader_conn.execute(sql, params).fetchone()

    async def webhook_absorb(self, endpoint: str, cursor: int, upserts: Sequence[Delivery]) -> None:
        """In one transaction: insert or replace ``upserts`` and move the cursor."""
        self._check_open()
        with self._driver_guard("recording webhook deliveries"):
            await self._call(self._absorb_sync, endpoint, cursor, upserts)

    def _absorb_sync(self, endpoint: str, cursor: int, upserts: Sequence[Delivery]) -> None:
        with self._transaction() as db:
            self._upsert_deliveries(db, upserts)
            # Never backwards (a former leader finishing a round late).
            db.execute(
                "INSERT INTO collab_webhook_cursors (endpoint, cursor) VALUES (?, ?)"
                " ON CONFLICT (endpoint) DO UPDATE SET cursor = MAX(cursor, excluded.cursor)",
                (endpoint, cursor),
            )

    def _upsert_deliveries(self, db: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
        db.executemany(
            f"INSERT OR REPLACE INTO collab_webhook_deliveries ({DELIVERY_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [delivery_row(d, encode_authors(d.authors)) for d in deliveries],
        )

    async def webhook_pending(self, endpoint: str) -> list[Delivery]:
        """The endpoint's deliveries with status ``pending``, by ``next_at``."""
        return await self._deliveries(
            f"SELECT {DELIVERY_COLUMNS} FROM collab_webhook_deliveries"
            " WHERE endpoint = ? AND status = 'pending' ORDER BY next_at, id",
            endpoint,
        )

    async def webhook_deliveries(self, endpoint: str) -> list[Delivery]:
        """Every delivery of ``endpoint`` kept (pending, delivered, failed), by first event."""
        return await self._deliveries(
            f"SELECT {DELIVERY_COLUMNS} FROM collab_webhook_deliveries"
            " WHERE endpoint = ? ORDER BY first_at, id",
            endpoint,
        )

    async def _deliveries(self, sql: str, endpoint: str) -> list[Delivery]:
        self._check_open()
        with self._driver_guard("reading webhook deliveries"):
            rows: list[Any] = await self._read(self._fetchall, sql, (endpoint,))
        return [delivery_from_row(row) for row in rows]

    def _fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._reader_conn.execute(sql, params).fetchall()

    async def webhook_update(self, delivery: Delivery) -> None:
        """Record an attempt's outcome (replaces the row with the same id)."""
        self._check_open()
        with self._driver_guard("recording a webhook attempt"):
            await self._call(self._update_sync, delivery)

    def _update_sync(self, delivery: Delivery) -> None:
        with self._transaction() as db:
            self._upsert_deliveries(db, [delivery])

    async def webhook_disabled(self, endpoint: str) -> bool:
        """Whether ``endpoint`` was disabled (it answered ``410 Gone``)."""
        self._check_open()
        with self._driver_guard("reading webhook endpoints"):
            row = await self._read(
                self._fetchone,
                "SELECT 1 FROM collab_webhook_endpoints WHERE endpoint = ?",
                (endpoint,),
            )
        return row is not None

    async def webhook_disable(self, endpoint: str, reason: str) -> None:
        """Stop deliveries to ``endpoint`` until ``webhook_enable``."""
        self._check_open()
        with self._driver_guard("disabling a webhook endpoint"):
            await self._call(self._write_one, _DISABLE, (endpoint, time.time(), reason))

    async def webhook_enable(self, endpoint: str) -> bool:
        """Deliver to ``endpoint`` again; whether it was disabled."""
        self._check_open()
        with self._driver_guard("enabling a webhook endpoint"):
            changed: int = await self._call(
                self._write_one,
                "DELETE FROM collab_webhook_endpoints WHERE endpoint = ?",
                (endpoint,),
            )
        return changed > 0

    def _write_one(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._transaction() as db:
            changed: int = db.execute(sql, params).rowcount
        return changed

    async def try_lead(self, key: str) -> bool:
        """Whether this process dispatches webhooks.

        A store opened with ``lock="exclusive"`` is alone on its file and
        leads.  Otherwise (servers linked by Redis share a file) the one
        holding an ``flock`` on ``PATH.lead`` does, for every key, until it
        closes the store or dies.
        """
        self._check_open()
        if self.lock == "exclusive" or self._lead_fd is not None:
            return True
        with self._driver_guard("taking the webhook lead"):
            leads: bool = await self._call(self._lead_sync)
        return leads

    def _lead_sync(self) -> bool:
        # In the writer thread: two dispatchers asking at once take one flock.
        if self._lead_fd is None:
            self._lead_fd = _try_flock(self.path + ".lead")
        return self._lead_fd is not None

    async def _backend_stats(self, name: str | None) -> list[DocInfo]:
        result: list[DocInfo] = await self._call(self._stats_sync, name)
        return result

    def _stats_sync(self, name: str | None) -> list[DocInfo]:
        where = "" if name is None else "WHERE name = :name"
        rows = self._conn.execute(_STATS.format(where=where), {"name": name}).fetchall()
        return [DocInfo(n, int(size), int(count), float(t)) for n, size, count, t in rows]


_DISABLE = (
    "INSERT INTO collab_webhook_endpoints (endpoint, disabled_at, reason) VALUES (?, ?, ?)"
    " ON CONFLICT (endpoint) DO UPDATE"
    " SET disabled_at = excluded.disabled_at, reason = excluded.reason"
)


def _try_flock(path: str) -> int | None:
    """An exclusive ``flock`` on ``path`` without waiting: the descriptor, or None if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no election, every process leads
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_file(path: str, *, exclusive: bool) -> int | None:
    """``flock`` ``path`` (created if missing) without waiting; the open descriptor.

    ``StoreInUse`` names the process holding it; None where the file system
    (or the platform) has no ``flock``: then nothing is enforced.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        log.warning("%s: no flock on this platform; not guarding against a second server", path)
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        # Shared holders are servers linked by Redis; an exclusive one runs alone.
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            alone = False
        except BlockingIOError:
            alone = True
        os.close(fd)
        database = path.removesuffix(".lock")
        if alone:
            raise StoreInUse(
                f"{database} is in use by collab process {holder}, which serves it alone; "
                "stop it, or, to serve it from several processes, start each with the same "
                "--redis-url (see docs/scale-out.md)"
            ) from None
        raise StoreInUse(
            f"{database} is in use by collab processes linked by Redis (the last started: "
            f"{holder}); start this one with their --redis-url too, or give it another --store"
        ) from None
    except OSError as exc:
        os.close(fd)
        log.warning("%s: cannot lock (%s); not guarding against a second server", path, exc)
        return None
    # Who holds it, for the message above (shared holders: the last one started).
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return pid if pid.isdigit() else "(unknown)"
