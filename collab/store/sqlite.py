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

This module also holds ``GroupCommitStore``, the queueing, commit loop and
retry logic that the PostgreSQL backend shares.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Self

from pycrdt import Doc

from .base import CorruptDocument, DocInfo, StoreError

log = logging.getLogger("collab.store")

__all__ = ["GroupCommitStore", "Pending", "SQLiteStore", "build_update"]

#: Default commit window: a commit at most this often, in seconds.
COMMIT_WINDOW = 0.02
#: Default log length (rows) past which a document is compacted.
COMPACT_UPDATES = 500
#: Default log size (bytes) past which a document is compacted.
COMPACT_BYTES = 1024 * 1024

SCHEMA_VERSION = 1


class Pending(NamedTuple):
    """An appended update not yet committed; ``seq`` orders all appends."""

    seq: int
    name: str
    update: bytes
    at: float


def build_update(name: str, parts: Iterable[tuple[str, bytes]]) -> bytes | None:
    """Apply ``(label, update)`` parts to a fresh ``Doc`` and encode it as one update.

    Applying to a ``Doc`` is linear; ``pycrdt.merge_updates`` over many
    inputs is quadratic (20,000 small updates: seconds instead of tens of
    milliseconds).  Returns None when there are no parts; raises
    ``CorruptDocument`` naming ``name`` and the part that cannot be decoded.
    """
    doc: Doc[Any] | None = None
    for label, update in parts:
        if doc is None:
            doc = Doc()
        try:
            doc.apply_update(update)
        except Exception as exc:
            raise CorruptDocument(f"document {name!r}: {label} cannot be decoded: {exc}") from None
        except BaseException as exc:
            # yrs may panic on crafted bytes; pyo3 raises that as a BaseException.
            if type(exc).__name__ != "PanicException":
                raise
            raise CorruptDocument(f"document {name!r}: {label} cannot be decoded (panic)") from None
    return None if doc is None else doc.get_update()


def _add_pending(infos: Mapping[str, DocInfo], pending: Iterable[Pending]) -> dict[str, DocInfo]:
    """Committed stats plus the still-queued updates (not yet in the database)."""
    merged = dict(infos)
    for entry in pending:
        old = merged.get(entry.name)
        if old is None:
            merged[entry.name] = DocInfo(entry.name, len(entry.update), 1, entry.at)
        else:
            merged[entry.name] = DocInfo(
                entry.name,
                old.size + len(entry.update),
                old.updates + 1,
                max(old.updated_at, entry.at),
            )
    return merged


class GroupCommitStore(abc.ABC):
    """Queue appends in memory and commit them in groups, retrying failures.

    Subclasses implement the ``_backend_*`` operations.  The commit task is
    the only caller of ``_backend_write`` and holds ``_io_lock`` while it
    runs, and until it has recorded the outcome; readers that must not
    count an update twice (``info``, ``list``) take the same lock, so under
    it ``_inflight + _pending`` are exactly the updates not in the database.
    """

    #: Exceptions of the driver that mean "the database said no"; wrapped in StoreError.
    _driver_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        *,
        commit_window: float = COMMIT_WINDOW,
        compact_updates: int = COMPACT_UPDATES,
        compact_bytes: int = COMPACT_BYTES,
        retry_min: float = 0.05,
        retry_max: float = 5.0,
        close_timeout: float = 30.0,
    ) -> None:
        if commit_window < 0 or compact_updates < 1 or compact_bytes < 1:
            raise ValueError("commit_window must be >= 0, compact_* must be >= 1")
        self.commit_window = commit_window
        self.compact_updates = compact_updates
        self.compact_bytes = compact_bytes
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._close_timeout = close_timeout
        #: Successful commit transactions so far (one per group of appends).
        self.commits = 0
        #: Compactions done so far (automatic and forced).
        self.compactions = 0
        self._seq = 0
        self._durable_seq = 0
        self._pending: list[Pending] = []
        self._inflight: list[Pending] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        self._io_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        self._last_error: str | None = None
        self._corrupt: set[str] = set()
        self._opened = False
        self._closed = False

    # -- what a backend provides ------------------------------------------------

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """The database, for messages (never with a password)."""

    @abc.abstractmethod
    async def _backend_open(self) -> None: ...

    @abc.abstractmethod
    async def _backend_close(self) -> None: ...

    @abc.abstractmethod
    async def _backend_write(self, batch: Sequence[Pending]) -> dict[str, tuple[int, int]]:
        """Insert ``batch`` in one transaction; return (log rows, log bytes) per name in it."""

    @abc.abstractmethod
    async def _backend_load(self, name: str, pending: list[bytes]) -> bytes | None: ...

    @abc.abstractmethod
    async def _backend_compact(self, name: str) -> bool:
        """Merge snapshot and log atomically; False when there was no log to merge."""

    @abc.abstractmethod
    async def _backend_delete(self, name: str) -> None: ...

    @abc.abstractmethod
    async def _backend_stats(self, name: str | None) -> list[DocInfo]:
        """Committed size/count/time of one document (or all), sorted by name."""

    # -- the Store interface ------------------------------------------------------

    async def open(self) -> None:
        """Create or connect to the database, then start the commit task."""
        if self._opened:
            return
        await self._backend_open()
        self._opened = True
        self._task = asyncio.get_running_loop().create_task(
            self._commit_loop(), name=f"collab-store-commit {self.where}"
        )

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def append(self, name: str, update: bytes) -> None:
        """Queue ``update``; the next group commit (within ``commit_window``) stores it."""
        if self._closed or not self._opened:
            raise StoreError(f"store {self.where} is {'closed' if self._closed else 'not open'}")
        self._seq += 1
        self._pending.append(Pending(self._seq, name, update, time.time()))
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every update appended before this call is committed."""
        target = self._seq
        if self._durable_seq >= target:
            return
        if self._task is None or self._task.done():
            raise StoreError(f"store {self.where} is not running")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._hurry.set()
        self._wake.set()
        await waiter

    async def load(self, name: str) -> bytes | None:
        """Snapshot, log and still-queued updates of ``name`` as one update."""
        self._check_open()
        # An update committed while we read is then applied twice: harmless,
        # applying a Yjs update is idempotent.
        pending = [e.update for e in (*self._inflight, *self._pending) if e.name == name]
        with self._driver_guard(f"loading {name!r}"):
            return await self._backend_load(name, pending)

    async def compact(self, name: str) -> None:
        """Commit what is queued, then replace ``name``'s log by one snapshot."""
        self._check_open()
        await self.flush()
        with self._driver_guard(f"compacting {name!r}"):
            if await self._backend_compact(name):
                self.compactions += 1
        self._corrupt.discard(name)

    async def delete(self, name: str) -> None:
        """Drop the queued updates, snapshot and log of ``name``."""
        self._check_open()
        # The commit task works on a copy of _inflight, and rebuilds its
        # batch from _inflight before a retry: a failed commit cannot bring
        # the deleted updates back.
        self._pending = [e for e in self._pending if e.name != name]
        self._inflight = [e for e in self._inflight if e.name != name]
        async with self._io_lock:
            with self._driver_guard(f"deleting {name!r}"):
                await self._backend_delete(name)
        self._corrupt.discard(name)

    async def list(self) -> list[DocInfo]:
        """Every stored document (queued updates included), sorted by name."""
        self._check_open()
        async with self._io_lock:
            with self._driver_guard("listing documents"):
                stats = await self._backend_stats(None)
            pending = [*self._inflight, *self._pending]
        merged = _add_pending({i.name: i for i in stats}, pending)
        return [merged[name] for name in sorted(merged)]

    async def info(self, name: str) -> DocInfo | None:
        """Size in bytes, log length (a snapshot counts as one) and last change of ``name``."""
        self._check_open()
        async with self._io_lock:
            with self._driver_guard(f"reading info of {name!r}"):
                stats = await self._backend_stats(name)
            pending = [e for e in (*self._inflight, *self._pending) if e.name == name]
        return _add_pending({i.name: i for i in stats}, pending).get(name)

    @property
    def healthy(self) -> bool:
        """False from a failed commit until the next successful one."""
        return self._healthy

    @property
    def queued(self) -> int:
        """Updates appended but not yet committed."""
        return len(self._pending) + len(self._inflight)

    async def close(self) -> None:
        """Commit what is queued (retrying up to ``close_timeout``), then release everything.

        Raises ``StoreError`` saying how many updates were lost if the
        database stayed unwritable for the whole ``close_timeout``.
        """
        if self._closed:
            return
        self._closed = True
        lost = 0
        try:
            if self._opened:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._close_timeout):
                        await self.flush()
                lost = self.queued
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            for _, waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(StoreError(f"store {self.where} closed"))
            self._waiters.clear()
            if self._opened:
                await self._backend_close()
        if lost:
            raise StoreError(
                f"store {self.where} closed with {lost} updates not saved: {self._last_error}"
            )

    # -- internals -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or not self._opened:
            raise StoreError(f"store {self.where} is {'closed' if self._closed else 'not open'}")

    @contextlib.contextmanager
    def _driver_guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except self._driver_errors as exc:
            raise StoreError(f"{what} in {self.where} failed: {exc}") from exc

    def _mark_durable(self, seq: int) -> None:
        self._durable_seq = max(self._durable_seq, seq)
        waiting = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if target <= self._durable_seq:
                waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._waiters = waiting

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_commit = -math.inf
        failures = 0
        while True:
            if not self._pending and not self._inflight:
                # Nothing left (deletes may have emptied the queue): every
                # append so far is durable or forgotten.
                self._mark_durable(self._seq)
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = last_commit + self.commit_window - loop.time()
            if delay > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._hurry.wait()
            self._hurry.clear()
            # After a failure, the next attempt also takes what came since.
            self._inflight.extend(self._pending)
            self._pending = []
            upto = self._seq
            batch = tuple(self._inflight)
            last_commit = loop.time()
            if not batch:
                continue
            try:
                async with self._io_lock:
                    totals = await self._backend_write(batch)
                    self._inflight = []
                    self.commits += 1
                    self._mark_durable(upto)
            except Exception as exc:
                failures += 1
                self._healthy = False
                self._last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(self._retry_max, self._retry_min * 2 ** (failures - 1))
                log.warning(
                    "commit of %d updates to %s failed (attempt %d, retrying in %.2fs): %s",
                    len(batch),
                    self.where,
                    failures,
                    backoff,
                    self._last_error,
                )
                await asyncio.sleep(backoff)
                continue
            if failures:
                log.info("commits to %s succeed again after %d failures", self.where, failures)
            failures = 0
            self._healthy = True
            self._last_error = None
            for name, (rows, size) in totals.items():
                if (rows > self.compact_updates or size > self.compact_bytes) and (
                    name not in self._corrupt
                ):
                    await self._auto_compact(name)

    async def _auto_compact(self, name: str) -> None:
        try:
            if await self._backend_compact(name):
                self.compactions += 1
        except CorruptDocument as exc:
            # Not retried after every commit; compact() or delete() clears this.
            self._corrupt.add(name)
            log.error("not compacting %s: %s", self.where, exc)
        except Exception as exc:
            log.warning("compacting %r in %s failed (retried later): %s", name, self.where, exc)


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
                row = self._conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM collab_updates"
                    " WHERE name = ?",
                    (name,),
                ).fetchone()
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
