"""The embedded default store: one SQLite file, used from one thread.

Every SQLite call runs in one dedicated thread (a one-worker executor), so
the event loop never waits on the disk, and the connection is never shared
between threads.

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

Layout (``PRAGMA user_version`` holds the schema version)::

    collab_snapshots(name PRIMARY KEY, snapshot BLOB, updated_at REAL)
    collab_updates(id INTEGER PRIMARY KEY AUTOINCREMENT, name, data BLOB, created_at REAL)

A document's state is its snapshot (if any) plus its log rows.  When the
log of a document passes ``compact_updates`` rows or ``compact_bytes``
bytes, the thread merges snapshot and log into a new snapshot and deletes
exactly the rows it merged, in one transaction.

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
from typing import Any

from .base import DocInfo, StoreError
from .group import (
    COMMIT_WINDOW,
    COMPACT_BYTES,
    COMPACT_UPDATES,
    GroupCommitStore,
    Pending,
    build_update,
)

log = logging.getLogger("collab.store")

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 1


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
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS collab_updates_by_name ON collab_updates (name, id);
"""

# Snapshot first, then the log in order; one statement, so one consistent read.
_ROWS = """
SELECT 0 AS kind, 0 AS id, snapshot FROM collab_snapshots WHERE name = :name
UNION ALL
SELECT 1, id, data FROM collab_updates WHERE name = :name
ORDER BY kind, id
"""

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


class SQLiteStore(GroupCommitStore):
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
    ) -> None:
        super().__init__(
            commit_window=commit_window,
            compact_updates=compact_updates,
            compact_bytes=compact_bytes,
            retry_min=retry_min,
            retry_max=retry_max,
            close_timeout=close_timeout,
        )
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = os.fspath(path)
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._executor: ThreadPoolExecutor | None = None
        # Only ever touched in the executor's one thread:
        self._db: sqlite3.Connection | None = None
        self._log_totals: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"

    @property
    def where(self) -> str:
        return self.path

    # -- running in the thread -------------------------------------------------------

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            raise StoreError(f"store {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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
        try:
            await self._call(self._open_sync)
        except BaseException:
            await self._call(self._close_sync)
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open_sync(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
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
                if version < 1:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                # Always written, so that a read-only file fails here, at open.
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from None

    async def _backend_close(self) -> None:
        if self._executor is not None:
            with contextlib.suppress(Exception):
                await self._call(self._close_sync)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _backend_write(self, batch: Sequence[Pending]) -> dict[str, tuple[int, int]]:
        result: dict[str, tuple[int, int]] = await self._call(self._write_sync, batch)
        return result

    def _write_sync(self, batch: Sequence[Pending]) -> dict[str, tuple[int, int]]:
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO collab_updates (name, data, created_at) VALUES (?, ?, ?)",
                [(e.name, e.update, e.at) for e in batch],
            )
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
                    row = self._conn.execute(
                        "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM collab_updates"
                        " WHERE name = ?",
                        (name,),
                    ).fetchone()
                except sqlite3.Error:
                    continue
                totals = self._log_totals[name] = [int(row[0]), int(row[1])]
            else:
                totals[0] += rows
                totals[1] += size
            result[name] = (totals[0], totals[1])
        return result

    async def _backend_load(self, name: str, pending: list[bytes]) -> bytes | None:
        result: bytes | None = await self._call(self._load_sync, name, pending)
        return result

    def _load_sync(self, name: str, pending: list[bytes]) -> bytes | None:
        with self._transaction("DEFERRED") as db:
            rows = db.execute(_ROWS, {"name": name})

            def parts() -> Iterator[tuple[str, bytes]]:
                for kind, row_id, data in rows:
                    yield ("snapshot" if kind == 0 else f"update #{row_id}"), data
                for update in pending:
                    yield "queued update", update

            return build_update(name, parts())

    async def _backend_compact(self, name: str) -> bool:
        done: bool = await self._call(self._compact_sync, name)
        return done

    def _compact_sync(self, name: str) -> bool:
        now = time.time()
        with self._transaction() as db:
            max_id = 0
            count = 0

            def parts() -> Iterator[tuple[str, bytes]]:
                nonlocal max_id, count
                for kind, row_id, data in db.execute(_ROWS, {"name": name}):
                    if kind == 1:
                        max_id = row_id
                        count += 1
                    yield ("snapshot" if kind == 0 else f"update #{row_id}"), data

            state = build_update(name, parts())
            if state is None or count == 0:
                self._log_totals[name] = [0, 0]
                return False
            self._write_snapshot(db, name, state, now)
            self._delete_log(db, name, max_id)
        self._log_totals[name] = [0, 0]
        return True

    # Separate steps so that a test can fail one inside the transaction.
    def _write_snapshot(self, db: sqlite3.Connection, name: str, state: bytes, now: float) -> None:
        db.execute(
            "INSERT INTO collab_snapshots (name, snapshot, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE"
            " SET snapshot = excluded.snapshot, updated_at = excluded.updated_at",
            (name, state, now),
        )

    def _delete_log(self, db: sqlite3.Connection, name: str, max_id: int) -> None:
        # Exactly the rows merged: the transaction holds the write lock, so
        # no row of this name with a smaller id can appear meanwhile.
        db.execute("DELETE FROM collab_updates WHERE name = ? AND id <= ?", (name, max_id))

    async def _backend_delete(self, name: str) -> None:
        await self._call(self._delete_sync, name)

    def _delete_sync(self, name: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM collab_snapshots WHERE name = ?", (name,))
            db.execute("DELETE FROM collab_updates WHERE name = ?", (name,))
        self._log_totals.pop(name, None)

    async def _backend_stats(self, name: str | None) -> list[DocInfo]:
        result: list[DocInfo] = await self._call(self._stats_sync, name)
        return result

    def _stats_sync(self, name: str | None) -> list[DocInfo]:
        where = "" if name is None else "WHERE name = :name"
        rows = self._conn.execute(_STATS.format(where=where), {"name": name}).fetchall()
        return [DocInfo(n, int(size), int(count), float(t)) for n, size, count, t in rows]
