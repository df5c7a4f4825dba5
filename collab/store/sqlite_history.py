"""Version history in the SQLite store: the tables and statements of ``history.py``.

Mixed into ``SQLiteStore``: the ``_h_*_sync`` methods run in its writer
thread (those taking ``db``, inside its transactions) or its reader thread.
SQLite hands out log ids at commit under the write lock, so a row's id
orders it for good: no row can appear later below a checkpoint's seq.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ..webhooks import StoredEvent
from .events import EventDraft
from .history import (
    Checkpoint,
    PointRead,
    Session,
    TrashEntry,
    Version,
    list_sessions,
    thin,
)

SCHEMA_3 = [
    """CREATE TABLE IF NOT EXISTS collab_history (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        created_at REAL NOT NULL,
        author TEXT,
        size INTEGER NOT NULL,
        folded INTEGER NOT NULL,
        gap REAL,
        cum_n INTEGER NOT NULL DEFAULT 0,
        cum_bytes INTEGER NOT NULL DEFAULT 0
    )""",
    # (name, id) plus the gap: finding session boundaries reads no table rows.
    "CREATE INDEX IF NOT EXISTS collab_history_by_name ON collab_history (name, id, gap)",
    "CREATE INDEX IF NOT EXISTS collab_history_by_author ON collab_history (name, author, id)",
    "CREATE INDEX IF NOT EXISTS collab_history_by_time ON collab_history (created_at)",
    """CREATE TABLE IF NOT EXISTS collab_checkpoints (
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (name, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS collab_checkpoints_by_at ON collab_checkpoints (at)",
    """CREATE TABLE IF NOT EXISTS collab_versions (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        label TEXT NOT NULL,
        created_by TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS collab_versions_by_name ON collab_versions (name, seq)",
    """CREATE TABLE IF NOT EXISTS collab_trash (
        name TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        deleted_at REAL NOT NULL,
        deleted_by TEXT,
        purge_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS collab_history_meta (
        name TEXT PRIMARY KEY,
        pruned_seq INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS collab_idempotency (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        at REAL NOT NULL,
        result TEXT
    )""",
]

_CHECKPOINTS = """
SELECT seq, at FROM collab_checkpoints WHERE name = :name
UNION
SELECT seq, updated_at FROM collab_snapshots WHERE name = :name
ORDER BY seq
"""

_LATEST = """
SELECT MAX(s) FROM (
    SELECT MAX(id) AS s FROM collab_updates WHERE name = :name
    UNION ALL SELECT MAX(id) FROM collab_history WHERE name = :name
    UNION ALL SELECT MAX(seq) FROM collab_snapshots WHERE name = :name
    UNION ALL SELECT MAX(seq) FROM collab_checkpoints WHERE name = :name
)
"""

_OLDEST = """
SELECT MIN(s) FROM (
    SELECT MIN(id) AS s FROM collab_updates WHERE name = :name
    UNION ALL SELECT MIN(id) FROM collab_history WHERE name = :name
    UNION ALL SELECT MIN(seq) FROM collab_snapshots WHERE name = :name
    UNION ALL SELECT MIN(seq) FROM collab_checkpoints WHERE name = :name
)
"""

_SEQ_AT = """
SELECT MAX(s) FROM (
    SELECT MAX(id) AS s FROM collab_updates WHERE name = :name AND created_at <= :t
    UNION ALL SELECT MAX(id) FROM collab_history WHERE name = :name AND created_at <= :t
    UNION ALL SELECT MAX(seq) FROM collab_snapshots WHERE name = :name AND updated_at <= :t
    UNION ALL SELECT MAX(seq) FROM collab_checkpoints WHERE name = :name AND at <= :t
)
"""

# The time of a seq: its row's, or its checkpoint's when the row is gone.
_AT_OF = """
SELECT at FROM (
    SELECT created_at AS at, 0 AS k FROM collab_updates WHERE id = :seq AND name = :name
    UNION ALL SELECT created_at, 0 FROM collab_history WHERE id = :seq AND name = :name
    UNION ALL SELECT at, 1 FROM collab_checkpoints WHERE name = :name AND seq = :seq
    UNION ALL SELECT updated_at, 1 FROM collab_snapshots WHERE name = :name AND seq = :seq
) ORDER BY k LIMIT 1
"""

_PRUNED = "SELECT pruned_seq FROM collab_history_meta WHERE name = ?"

_LIVE = (
    "SELECT EXISTS (SELECT 1 FROM collab_snapshots WHERE name = :name)"
    " OR EXISTS (SELECT 1 FROM collab_updates WHERE name = :name)"
)


class SQLiteHistory:
    """History operations of ``SQLiteStore`` (see ``collab.store.history``)."""

    history_retention: float
    trash_retention: float
    checkpoint_every: float

    # -- in the writer's transactions ---------------------------------------------------

    def _h_fold(self, db: sqlite3.Connection, name: str, last_id: int, now: float) -> int:
        """Before the compaction replaces the snapshot: keep it as a checkpoint if due, move
        the log rows up to ``last_id`` to the history; the new snapshot's seq."""
        row = db.execute("SELECT seq FROM collab_snapshots WHERE name = ?", (name,)).fetchone()
        seq = max(int(row[0]) if row else 0, last_id)
        if self.history_retention <= 0:
            self._h_pruned(db, name, seq)
            return seq
        db.execute(
            "INSERT OR REPLACE INTO collab_checkpoints (name, seq, at, state)"
            " SELECT name, seq, updated_at, snapshot FROM collab_snapshots s WHERE name = ?"
            " AND NOT EXISTS (SELECT 1 FROM collab_checkpoints c"
            "  WHERE c.name = s.name AND c.at > s.updated_at - ?)",
            (name, self.checkpoint_every),
        )
        self._h_move_log(db, name, last_id, seq)
        return seq

    def _h_move_log(self, db: sqlite3.Connection, name: str, last_id: int, folded: int) -> None:
        prev = db.execute(
            "SELECT created_at, cum_n, cum_bytes FROM collab_history WHERE name = ?"
            " ORDER BY id DESC LIMIT 1",
            (name,),
        ).fetchone()
        at, n, size = prev if prev is not None else (None, 0, 0)
        db.execute(
            "INSERT OR REPLACE INTO collab_history"
            " (id, name, data, created_at, author, size, folded, gap, cum_n, cum_bytes)"
            " SELECT id, name, data, created_at, author, LENGTH(data), :folded,"
            "  created_at - COALESCE(LAG(created_at) OVER w, :at),"
            "  :n + ROW_NUMBER() OVER w,"
            "  :size + SUM(LENGTH(data)) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING)"
            " FROM collab_updates WHERE name = :name AND id <= :last WINDOW w AS (ORDER BY id)",
            {"folded": folded, "at": at, "n": n, "size": size, "name": name, "last": last_id},
        )

    def _h_after_compaction(self, db: sqlite3.Connection, name: str, seq: int, now: float) -> None:
        db.execute("UPDATE collab_snapshots SET seq = ? WHERE name = ?", (seq, name))
        if self.history_retention > 0:
            self._h_prune(db, name, now)

    def _h_pruned(self, db: sqlite3.Connection, name: str, seq: int) -> None:
        db.execute(
            "INSERT INTO collab_history_meta (name, pruned_seq) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET pruned_seq = MAX(pruned_seq, excluded.pruned_seq)",
            (name, seq),
        )

    def _h_prune(self, db: sqlite3.Connection, name: str, now: float) -> None:
        """Drop the history rows a checkpoint older than the window holds; thin checkpoints."""
        cutoff = now - self.history_retention
        (k,) = db.execute(
            "SELECT MAX(seq) FROM (SELECT seq FROM collab_checkpoints WHERE name = :n AND at < :c"
            " UNION ALL SELECT seq FROM collab_snapshots WHERE name = :n AND updated_at < :c)",
            {"n": name, "c": cutoff},
        ).fetchone()
        keep = {
            int(s) for (s,) in db.execute("SELECT seq FROM collab_versions WHERE name = ?", (name,))
        }
        if k is not None:
            db.execute("DELETE FROM collab_history WHERE name = ? AND folded <= ?", (name, k))
            self._h_pruned(db, name, int(k))
            keep.add(int(k))
        old = [
            Checkpoint(int(s), float(a))
            for s, a in db.execute(
                "SELECT seq, at FROM collab_checkpoints WHERE name = ? AND at < ?", (name, cutoff)
            )
        ]
        drop = thin(old, cutoff, keep)
        db.executemany(
            "DELETE FROM collab_checkpoints WHERE name = ? AND seq = ?", [(name, s) for s in drop]
        )

    def _h_trash(self, db: sqlite3.Connection, name: str, author: str | None, now: float) -> None:
        """Before a delete: keep the document's snapshot and log as history, in the trash."""
        row = db.execute("SELECT seq FROM collab_snapshots WHERE name = ?", (name,)).fetchone()
        (last,) = db.execute(
            "SELECT MAX(id) FROM collab_updates WHERE name = ?", (name,)
        ).fetchone()
        seq = max(int(row[0]) if row else 0, int(last or 0))
        db.execute(
            "INSERT OR REPLACE INTO collab_checkpoints (name, seq, at, state)"
            " SELECT name, seq, updated_at, snapshot FROM collab_snapshots WHERE name = ?",
            (name,),
        )
        self._h_move_log(db, name, seq, seq)
        db.execute(
            "INSERT OR REPLACE INTO collab_trash (name, seq, deleted_at, deleted_by, purge_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, seq, now, author, now + self.trash_retention),
        )

    def _h_forget(self, db: sqlite3.Connection, name: str, upto: int | None) -> None:
        """Delete the history of ``name`` (up to seq ``upto``, or all) for good."""
        bound = "" if upto is None else " AND id <= :upto"
        params = {"name": name, "upto": upto}
        db.execute(f"DELETE FROM collab_history WHERE name = :name{bound}", params)
        bound = "" if upto is None else " AND seq <= :upto"
        for table in ("collab_checkpoints", "collab_versions"):
            db.execute(f"DELETE FROM {table} WHERE name = :name{bound}", params)
        db.execute("DELETE FROM collab_trash WHERE name = ?", (name,))
        if upto is None:
            db.execute("DELETE FROM collab_history_meta WHERE name = ?", (name,))
        else:
            self._h_pruned(db, name, upto)

    # -- writer thread, own transactions ---------------------------------------------------

    def _h_sweep_sync(self, now: float) -> tuple[int, int]:
        """Prune every document with history older than the window; purge expired trash."""
        pruned = purged = 0
        db = self._conn  # type: ignore[attr-defined]
        if self.history_retention > 0:
            cutoff = now - self.history_retention
            names = [
                n
                for (n,) in db.execute(
                    "SELECT DISTINCT name FROM collab_history WHERE created_at < :c"
                    " UNION SELECT DISTINCT name FROM collab_checkpoints WHERE at < :c",
                    {"c": cutoff},
                ).fetchall()
            ]
            for name in names:
                with self._transaction() as db:  # type: ignore[attr-defined]
                    self._h_prune(db, name, now)
                pruned += 1
        expired = db.execute("SELECT name, seq FROM collab_trash WHERE purge_at < ?", (now,))
        for name, seq in expired.fetchall():
            with self._transaction() as db:  # type: ignore[attr-defined]
                self._h_forget(db, name, int(seq))
            purged += 1
        return pruned, purged

    def _h_purge_sync(self, name: str) -> bool:
        with self._transaction() as db:  # type: ignore[attr-defined]
            row = db.execute("SELECT seq FROM collab_trash WHERE name = ?", (name,)).fetchone()
            if row is None:
                return False
            self._h_forget(db, name, int(row[0]))
        return True

    def _h_untrash_sync(self, name: str, seq: int, state: bytes) -> str:
        """``"ok"``, ``"gone"`` (not in the trash at ``seq`` any more) or ``"taken"``."""
        with self._transaction() as db:  # type: ignore[attr-defined]
            row = db.execute("SELECT seq FROM collab_trash WHERE name = ?", (name,)).fetchone()
            if row is None or int(row[0]) != seq:
                return "gone"
            if db.execute(_LIVE, {"name": name}).fetchone()[0]:
                return "taken"
            db.execute(
                "INSERT INTO collab_snapshots (name, snapshot, updated_at, seq)"
                " VALUES (?, ?, ?, ?)",
                (name, state, time.time(), seq),
            )
            db.execute("DELETE FROM collab_trash WHERE name = ?", (name,))
        return "ok"

    def _h_add_version_sync(self, version: Version, state: bytes) -> None:
        with self._transaction() as db:  # type: ignore[attr-defined]
            db.execute(
                "INSERT OR IGNORE INTO collab_checkpoints (name, seq, at, state)"
                " VALUES (?, ?, ?, ?)",
                (version.name, version.seq, version.at, state),
            )
            db.execute(
                "INSERT INTO collab_versions (id, name, seq, at, label, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (version.id, version.name, version.seq, version.at, version.label)
                + (version.created_by,),
            )

    def _h_delete_version_sync(self, name: str, version_id: str) -> bool:
        with self._transaction() as db:  # type: ignore[attr-defined]
            changed: int = db.execute(
                "DELETE FROM collab_versions WHERE name = ? AND id = ?", (name, version_id)
            ).rowcount
        return changed > 0

    def _h_claim_sync(self, key: str, name: str, now: float) -> str | None:
        """Claim an idempotency key: None when claimed now, else its result ("" while running)."""
        with self._transaction() as db:  # type: ignore[attr-defined]
            row = db.execute(
                "SELECT result FROM collab_idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                return str(row[0] or "")
            db.execute(
                "INSERT INTO collab_idempotency (key, name, at, result) VALUES (?, ?, ?, NULL)",
                (key, name, now),
            )
            db.execute("DELETE FROM collab_idempotency WHERE at < ?", (now - 86400,))
        return None

    def _h_settle_sync(self, key: str, result: str | None) -> None:
        with self._transaction() as db:  # type: ignore[attr-defined]
            if result is None:
                db.execute("DELETE FROM collab_idempotency WHERE key = ?", (key,))
            else:
                db.execute("UPDATE collab_idempotency SET result = ? WHERE key = ?", (result, key))

    # -- reader thread -------------------------------------------------------------------

    @property
    def _h_reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = self._reader_conn  # type: ignore[attr-defined]
        return conn

    def _h_sessions_sync(self, name: str, before: int, gap: float, limit: int) -> list[Session]:
        db = self._h_reader
        db.execute("BEGIN")  # one snapshot of both tables
        try:
            lister = list_sessions(name, before, gap, limit)
            query = next(lister)
            while True:
                try:
                    query = lister.send(db.execute(*query).fetchall())
                except StopIteration as done:
                    sessions: list[Session] = done.value
                    return sessions
        finally:
            db.execute("COMMIT")

    def _h_checkpoints_sync(self, name: str) -> list[Checkpoint]:
        return [
            Checkpoint(int(s), float(a))
            for s, a in self._h_reader.execute(_CHECKPOINTS, {"name": name}).fetchall()
        ]

    def _h_bounds_sync(self, name: str) -> tuple[int | None, int | None, int]:
        """(oldest seq, latest seq, pruned seq) of ``name``'s history."""
        db = self._h_reader
        (oldest,) = db.execute(_OLDEST, {"name": name}).fetchone()
        (latest,) = db.execute(_LATEST, {"name": name}).fetchone()
        row = db.execute(_PRUNED, (name,)).fetchone()
        return (
            None if oldest is None else int(oldest),
            None if latest is None else int(latest),
            int(row[0]) if row else 0,
        )

    def _h_seq_at_sync(self, name: str, t: float) -> int | None:
        (seq,) = self._h_reader.execute(_SEQ_AT, {"name": name, "t": t}).fetchone()
        return None if seq is None else int(seq)

    def _h_at_of_sync(self, name: str, seq: int) -> float | None:
        row = self._h_reader.execute(_AT_OF, {"name": name, "seq": seq}).fetchone()
        return None if row is None else float(row[0])

    def _h_point_sync(self, name: str, seq: int, base_max: int | None) -> PointRead:
        db = self._h_reader
        # One read transaction: a compaction moving rows meanwhile cannot hide any.
        db.execute("BEGIN")
        try:
            return self._h_point(db, name, seq, seq if base_max is None else min(seq, base_max))
        finally:
            db.execute("COMMIT")

    def _h_point(self, db: sqlite3.Connection, name: str, seq: int, base_max: int) -> PointRead:
        base_row = db.execute(
            "SELECT seq, at, k FROM (SELECT seq, at, 0 AS k FROM collab_checkpoints"
            "  WHERE name = :name AND seq <= :seq"
            " UNION ALL SELECT seq, updated_at, 1 FROM collab_snapshots"
            "  WHERE name = :name AND seq <= :seq) ORDER BY seq DESC, k DESC LIMIT 1",
            {"name": name, "seq": base_max},
        ).fetchone()
        parts: list[tuple[str, bytes]] = []
        base = None
        since = 0
        if base_row is not None:
            since = int(base_row[0])
            base = Checkpoint(since, float(base_row[1]))
            table, column, key = (
                ("collab_snapshots", "snapshot", "seq")
                if base_row[2]
                else ("collab_checkpoints", "state", "seq")
            )
            (state,) = db.execute(
                f"SELECT {column} FROM {table} WHERE name = ? AND {key} = ?", (name, since)
            ).fetchone()
            parts.append((f"checkpoint {since}", state))
        rows: list[tuple[int, float, str | None]] = []
        for row_id, at, author, data in db.execute(
            "SELECT id, created_at, author, data FROM collab_history"
            " WHERE name = :name AND id > :since AND id <= :seq AND folded > :since"
            " UNION ALL SELECT id, created_at, author, data FROM collab_updates"
            " WHERE name = :name AND id > :since AND id <= :seq ORDER BY 1",
            {"name": name, "since": since, "seq": seq},
        ):
            parts.append((f"update #{row_id}", data))
            rows.append((int(row_id), float(at), author))
        meta = db.execute(_PRUNED, (name,)).fetchone()
        pruned = int(meta[0]) if meta else 0
        return PointRead(seq, base, parts, rows, since >= pruned)

    def _h_versions_sync(self, name: str) -> list[Version]:
        return [
            Version(*row)
            for row in self._h_reader.execute(
                "SELECT id, name, seq, at, label, created_by FROM collab_versions"
                " WHERE name = ? ORDER BY seq DESC, at DESC",
                (name,),
            ).fetchall()
        ]

    def _h_version_sync(self, version_id: str) -> Version | None:
        row = self._h_reader.execute(
            "SELECT id, name, seq, at, label, created_by FROM collab_versions WHERE id = ?",
            (version_id,),
        ).fetchone()
        return None if row is None else Version(*row)

    def _h_trash_list_sync(self, name: Any = None) -> list[TrashEntry]:
        where = "" if name is None else " WHERE name = :name"
        return [
            TrashEntry(n, int(s), float(d), by, float(p))
            for n, s, d, by, p in self._h_reader.execute(
                f"SELECT name, seq, deleted_at, deleted_by, purge_at FROM collab_trash{where}"
                " ORDER BY deleted_at DESC",
                {"name": name},
            ).fetchall()
        ]

    # -- the async interface (what ``collab.history`` calls) --------------------------------

    async def _h_run(self, what: str, write: bool, fn: Any, *args: Any) -> Any:
        self._check_open()  # type: ignore[attr-defined]
        with self._driver_guard(what):  # type: ignore[attr-defined]
            if write:
                return await self._call(fn, *args)  # type: ignore[attr-defined]
            return await self._read(fn, *args)  # type: ignore[attr-defined]

    async def history_sessions(
        self, name: str, before: int, gap: float, limit: int
    ) -> list[Session]:
        """Up to ``limit`` editing sessions of rows below seq ``before``, newest first."""
        result: list[Session] = await self._h_run(
            "reading history", False, self._h_sessions_sync, name, before, gap, limit
        )
        return result

    async def history_checkpoints(self, name: str) -> list[Checkpoint]:
        """The checkpoints of ``name`` (the snapshot included), oldest first."""
        result: list[Checkpoint] = await self._h_run(
            "reading checkpoints", False, self._h_checkpoints_sync, name
        )
        return result

    async def history_bounds(self, name: str) -> tuple[int | None, int | None, int]:
        """(oldest seq, latest seq, seq up to which rows were pruned)."""
        result: tuple[int | None, int | None, int] = await self._h_run(
            "reading history", False, self._h_bounds_sync, name
        )
        return result

    async def seq_at(self, name: str, t: float) -> int | None:
        """The last seq of ``name`` at Unix time ``t`` (None: nothing that early)."""
        result: int | None = await self._h_run(
            "reading history", False, self._h_seq_at_sync, name, t
        )
        return result

    async def at_of(self, name: str, seq: int) -> float | None:
        """When seq ``seq`` of ``name`` was written (None: no row or checkpoint has it)."""
        result: float | None = await self._h_run(
            "reading history", False, self._h_at_of_sync, name, seq
        )
        return result

    async def point(self, name: str, seq: int, base_max: int | None = None) -> PointRead:
        """What replaying ``name`` up to ``seq`` needs, from a checkpoint at or before
        ``base_max`` (default: ``seq``)."""
        result: PointRead = await self._h_run(
            "reading history", False, self._h_point_sync, name, seq, base_max
        )
        return result

    async def versions(self, name: str) -> list[Version]:
        result: list[Version] = await self._h_run(
            "reading versions", False, self._h_versions_sync, name
        )
        return result

    async def version(self, version_id: str) -> Version | None:
        result: Version | None = await self._h_run(
            "reading versions", False, self._h_version_sync, version_id
        )
        return result

    async def add_version(self, version: Version, state: bytes) -> None:
        """Record ``version`` and keep ``state`` (the document at its seq) as a checkpoint."""
        await self._h_run("saving a version", True, self._h_add_version_sync, version, state)

    async def delete_version(self, name: str, version_id: str) -> bool:
        result: bool = await self._h_run(
            "deleting a version", True, self._h_delete_version_sync, name, version_id
        )
        return result

    async def trash(self, name: str | None = None) -> list[TrashEntry]:
        """Deleted documents still kept (one, or all), most recently deleted first."""
        result: list[TrashEntry] = await self._h_run(
            "reading the trash", False, self._h_trash_list_sync, name
        )
        return result

    async def untrash(self, name: str, seq: int, state: bytes) -> str:
        """Bring ``name`` back with ``state``: "ok", "gone" or "taken"."""
        result: str = await self._h_run("undeleting", True, self._h_untrash_sync, name, seq, state)
        return result

    async def purge(self, name: str) -> bool:
        """Delete a trashed document and its history for good; whether it was there."""
        result: bool = await self._h_run("purging", True, self._h_purge_sync, name)
        return result

    async def claim(self, key: str, name: str) -> str | None:
        """Claim an idempotency key (None), or what it answered ("" while in progress)."""
        result: str | None = await self._h_run(
            "claiming an idempotency key", True, self._h_claim_sync, key, name, time.time()
        )
        return result

    async def settle(self, key: str, result: str | None) -> None:
        """Record a claimed key's answer (None: forget the claim, the work failed)."""
        await self._h_run("recording an idempotency key", True, self._h_settle_sync, key, result)

    async def record_event(self, draft: EventDraft) -> StoredEvent:
        """Write one event to the change feed (``doc.restored``)."""
        result: StoredEvent = await self._h_run("writing an event", True, self._h_event_sync, draft)
        return result

    def _h_event_sync(self, draft: EventDraft) -> StoredEvent:
        with self._transaction() as db:  # type: ignore[attr-defined]
            (event,) = self._insert_events(db, [draft])  # type: ignore[attr-defined]
        result: StoredEvent = event
        return result

    async def history_sweep(self) -> None:
        """Prune history beyond the window and purge expired trash (the compaction task
        calls this now and then).  A document whose live log reaches beyond the window
        is compacted first: a quiet document never passes the compaction thresholds,
        and without a checkpoint its old rows could never go."""
        if self.history_retention > 0:
            rows = await self._h_run(
                "pruning history",
                False,
                self._fetchall,  # type: ignore[attr-defined]
                "SELECT DISTINCT name FROM collab_updates WHERE created_at < ?",
                (time.time() - self.history_retention,),
            )
            for (name,) in rows:
                await self.compact(name)  # type: ignore[attr-defined]
        await self._h_run("pruning history", True, self._h_sweep_sync, time.time())
