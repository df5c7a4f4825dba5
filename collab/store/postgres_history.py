"""Version history in the PostgreSQL store: the tables and statements of ``history.py``.

Mixed into ``PostgresStore``.  The writes that touch one document's history
(compaction, delete, undelete, versions, pruning) hold its advisory lock
(``hashtext(name)``), as compaction and delete already do.

Identities are handed out at insert and become visible at commit, so a row
of another process may commit *after* a compaction with an id below the
snapshot's seq (a straggler).  The snapshot does not hold it; it stays in
the live log (loads read all of it) and moves to the history at the next
compaction with that compaction's seq as ``folded``.  A replay from
checkpoint ``C`` therefore takes the live rows up to the point whatever
their id, and the history rows with ``id > C`` or ``folded > C``.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from ..webhooks import StoredEvent
from .events import EventDraft
from .history import (
    LIVE_ROWS,
    Checkpoint,
    PointRead,
    Session,
    TrashEntry,
    Version,
    list_sessions,
    thin,
)

LOCK_DOC = "SELECT pg_advisory_xact_lock(hashtext(%s))"
#: The events writers' lock of ``postgres.py`` (``_LOCK_EVENTS``: keys "coll", 1).
LOCK_EVENTS = f"SELECT pg_advisory_xact_lock({0x636F6C6C}, 1)"

SCHEMA_3 = [
    "ALTER TABLE collab_snapshots ADD COLUMN IF NOT EXISTS seq bigint NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS collab_history (
        id bigint PRIMARY KEY,
        name text NOT NULL,
        data bytea NOT NULL,
        created_at double precision NOT NULL,
        author text,
        size integer NOT NULL,
        folded bigint NOT NULL
    )""",
    "ALTER TABLE collab_history ADD COLUMN IF NOT EXISTS gap double precision",
    "ALTER TABLE collab_history ADD COLUMN IF NOT EXISTS cum_n bigint NOT NULL DEFAULT 0",
    "ALTER TABLE collab_history ADD COLUMN IF NOT EXISTS cum_bytes bigint NOT NULL DEFAULT 0",
    # (name, id) plus the gap: finding session boundaries reads no table rows.
    "CREATE INDEX IF NOT EXISTS collab_history_by_gap ON collab_history (name, id, gap)",
    "CREATE INDEX IF NOT EXISTS collab_history_by_author ON collab_history (name, author, id)",
    "CREATE INDEX IF NOT EXISTS collab_history_by_name ON collab_history (name, id)",
    "CREATE INDEX IF NOT EXISTS collab_history_by_folded ON collab_history (name, folded, id)",
    "CREATE INDEX IF NOT EXISTS collab_history_by_time ON collab_history (created_at)",
    """CREATE TABLE IF NOT EXISTS collab_checkpoints (
        name text NOT NULL,
        seq bigint NOT NULL,
        at double precision NOT NULL,
        state bytea NOT NULL,
        PRIMARY KEY (name, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS collab_checkpoints_by_at ON collab_checkpoints (at)",
    """CREATE TABLE IF NOT EXISTS collab_versions (
        id text PRIMARY KEY,
        name text NOT NULL,
        seq bigint NOT NULL,
        at double precision NOT NULL,
        label text NOT NULL,
        created_by text
    )""",
    "CREATE INDEX IF NOT EXISTS collab_versions_by_name ON collab_versions (name, seq)",
    """CREATE TABLE IF NOT EXISTS collab_trash (
        name text PRIMARY KEY,
        seq bigint NOT NULL,
        deleted_at double precision NOT NULL,
        deleted_by text,
        purge_at double precision NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS collab_history_meta (
        name text PRIMARY KEY,
        pruned_seq bigint NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS collab_idempotency (
        key text PRIMARY KEY,
        name text NOT NULL,
        at double precision NOT NULL,
        result text
    )""",
]

_EPOCH = "EXTRACT(EPOCH FROM {})::float8"

_CHECKPOINTS = f"""
SELECT seq, at FROM collab_checkpoints WHERE name = %(name)s
UNION
SELECT seq, {_EPOCH.format("updated_at")} FROM collab_snapshots WHERE name = %(name)s
ORDER BY seq
"""

_BOUNDS = """
SELECT MIN(lo), MAX(hi) FROM (
    SELECT MIN(id) AS lo, MAX(id) AS hi FROM collab_updates WHERE name = %(name)s
    UNION ALL SELECT MIN(id), MAX(id) FROM collab_history WHERE name = %(name)s
    UNION ALL SELECT MIN(seq), MAX(seq) FROM collab_snapshots WHERE name = %(name)s
    UNION ALL SELECT MIN(seq), MAX(seq) FROM collab_checkpoints WHERE name = %(name)s
) AS b
"""

_SEQ_AT = f"""
SELECT MAX(s) FROM (
    SELECT MAX(id) AS s FROM collab_updates
    WHERE name = %(name)s AND created_at <= to_timestamp(%(t)s)
    UNION ALL SELECT MAX(id) FROM collab_history WHERE name = %(name)s AND created_at <= %(t)s
    UNION ALL SELECT MAX(seq) FROM collab_snapshots
    WHERE name = %(name)s AND {_EPOCH.format("updated_at")} <= %(t)s
    UNION ALL SELECT MAX(seq) FROM collab_checkpoints WHERE name = %(name)s AND at <= %(t)s
) AS m
"""

_AT_OF = f"""
SELECT at FROM (
    SELECT {_EPOCH.format("created_at")} AS at, 0 AS k FROM collab_updates
    WHERE id = %(seq)s AND name = %(name)s
    UNION ALL SELECT created_at, 0 FROM collab_history WHERE id = %(seq)s AND name = %(name)s
    UNION ALL SELECT at, 1 FROM collab_checkpoints WHERE name = %(name)s AND seq = %(seq)s
    UNION ALL SELECT {_EPOCH.format("updated_at")}, 1 FROM collab_snapshots
    WHERE name = %(name)s AND seq = %(seq)s
) AS a ORDER BY k LIMIT 1
"""

_PRUNED = "SELECT pruned_seq FROM collab_history_meta WHERE name = %s"

_LIVE = (
    "SELECT EXISTS (SELECT 1 FROM collab_snapshots WHERE name = %(name)s)"
    " OR EXISTS (SELECT 1 FROM collab_updates WHERE name = %(name)s)"
)

_MOVE_LOG = f"""
INSERT INTO collab_history
    (id, name, data, created_at, author, size, folded, gap, cum_n, cum_bytes)
SELECT id, name, data, {_EPOCH.format("created_at")}, author, octet_length(data), %(folded)s,
    {_EPOCH.format("created_at")}
        - COALESCE(LAG({_EPOCH.format("created_at")}) OVER w, %(at)s::float8),
    %(n)s + ROW_NUMBER() OVER w,
    %(size)s + SUM(octet_length(data)) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING)
FROM collab_updates WHERE {{where}}
WINDOW w AS (ORDER BY id)
ON CONFLICT (id) DO NOTHING
"""

_PREV = (
    "SELECT created_at, cum_n, cum_bytes FROM collab_history WHERE name = %s"
    " ORDER BY id DESC LIMIT 1"
)

# The session lister's queries (written for SQLite) as PostgreSQL runs them.
_LISTER_SQL = {
    LIVE_ROWS: LIVE_ROWS.replace("created_at", _EPOCH.format("created_at")).replace(
        "LENGTH(data)", "octet_length(data)"
    ),
}

_KEEP_SNAPSHOT = f"""
INSERT INTO collab_checkpoints (name, seq, at, state)
SELECT name, seq, {_EPOCH.format("updated_at")}, snapshot FROM collab_snapshots s
WHERE name = %(name)s {{due}}
ON CONFLICT (name, seq) DO UPDATE SET at = excluded.at, state = excluded.state
"""

_DUE = (
    "AND NOT EXISTS (SELECT 1 FROM collab_checkpoints c WHERE c.name = s.name"
    f" AND c.at > {_EPOCH.format('s.updated_at')} - %(every)s)"
)

Conn = psycopg.AsyncConnection[Any]


class PostgresHistory:
    """History operations of ``PostgresStore`` (see ``collab.store.history``)."""

    history_retention: float
    trash_retention: float
    checkpoint_every: float

    # -- inside the store's transactions (the document's lock held) -----------------------

    async def _h_fold(self, conn: Conn, name: str, ids: list[int]) -> int:
        """Before a compaction replaces the snapshot: keep it as a checkpoint if due and move
        the rows ``ids`` to the history; the new snapshot's seq."""
        cur = await conn.execute("SELECT seq FROM collab_snapshots WHERE name = %s", [name])
        row = await cur.fetchone()
        seq = max([int(row[0]) if row else 0, *ids])
        if self.history_retention <= 0:
            await self._h_pruned(conn, name, seq)
            return seq
        await conn.execute(
            _KEEP_SNAPSHOT.format(due=_DUE), {"name": name, "every": self.checkpoint_every}
        )
        await conn.execute(
            _MOVE_LOG.format(where="id = ANY(%(ids)s)"),
            {"folded": seq, "ids": ids, **await self._h_prev(conn, name)},
        )
        return seq

    async def _h_prev(self, conn: Conn, name: str) -> dict[str, Any]:
        """The newest history row's time and running totals (the next rows continue them)."""
        cur = await conn.execute(_PREV, [name])
        row = await cur.fetchone()
        if row is None:
            return {"at": None, "n": 0, "size": 0}
        return {"at": row[0], "n": row[1], "size": row[2]}

    async def _h_after_compaction(self, conn: Conn, name: str, seq: int) -> None:
        await conn.execute("UPDATE collab_snapshots SET seq = %s WHERE name = %s", [seq, name])
        if self.history_retention > 0:
            await self._h_prune(conn, name, time.time())

    async def _h_pruned(self, conn: Conn, name: str, seq: int) -> None:
        await conn.execute(
            "INSERT INTO collab_history_meta (name, pruned_seq) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE"
            " SET pruned_seq = GREATEST(collab_history_meta.pruned_seq, excluded.pruned_seq)",
            [name, seq],
        )

    async def _h_prune(self, conn: Conn, name: str, now: float) -> None:
        """Drop the history rows a checkpoint older than the window holds; thin checkpoints."""
        cutoff = now - self.history_retention
        cur = await conn.execute(
            "SELECT MAX(seq) FROM (SELECT seq FROM collab_checkpoints"
            " WHERE name = %(n)s AND at < %(c)s UNION ALL SELECT seq FROM collab_snapshots"
            f" WHERE name = %(n)s AND {_EPOCH.format('updated_at')} < %(c)s) AS k",
            {"n": name, "c": cutoff},
        )
        row = await cur.fetchone()
        k = None if row is None or row[0] is None else int(row[0])
        cur = await conn.execute("SELECT seq FROM collab_versions WHERE name = %s", [name])
        keep = {int(s) for (s,) in await cur.fetchall()}
        if k is not None:
            await conn.execute(
                "DELETE FROM collab_history WHERE name = %s AND folded <= %s", [name, k]
            )
            await self._h_pruned(conn, name, k)
            keep.add(k)
        cur = await conn.execute(
            "SELECT seq, at FROM collab_checkpoints WHERE name = %s AND at < %s", [name, cutoff]
        )
        old = [Checkpoint(int(s), float(a)) for s, a in await cur.fetchall()]
        drop = thin(old, cutoff, keep)
        if drop:
            await conn.execute(
                "DELETE FROM collab_checkpoints WHERE name = %s AND seq = ANY(%s)", [name, drop]
            )

    async def _h_trash(self, conn: Conn, name: str, author: str | None, now: float) -> None:
        """Before a delete: keep the document's snapshot and log as history, in the trash."""
        cur = await conn.execute(
            "SELECT GREATEST((SELECT MAX(seq) FROM collab_snapshots WHERE name = %(n)s),"
            " (SELECT MAX(id) FROM collab_updates WHERE name = %(n)s))",
            {"n": name},
        )
        row = await cur.fetchone()
        seq = int(row[0]) if row and row[0] is not None else 0
        await conn.execute(_KEEP_SNAPSHOT.format(due=""), {"name": name})
        await conn.execute(
            _MOVE_LOG.format(where="name = %(name)s"),
            {"folded": seq, "name": name, **await self._h_prev(conn, name)},
        )
        await conn.execute(
            "INSERT INTO collab_trash (name, seq, deleted_at, deleted_by, purge_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq,"
            " deleted_at = excluded.deleted_at, deleted_by = excluded.deleted_by,"
            " purge_at = excluded.purge_at",
            [name, seq, now, author, now + self.trash_retention],
        )

    async def _h_forget(self, conn: Conn, name: str, upto: int | None) -> None:
        """Delete the history of ``name`` (up to seq ``upto``, or all) for good."""
        params: dict[str, Any] = {"name": name, "upto": upto}
        bound = "" if upto is None else " AND id <= %(upto)s"
        await conn.execute(f"DELETE FROM collab_history WHERE name = %(name)s{bound}", params)
        bound = "" if upto is None else " AND seq <= %(upto)s"
        for table in ("collab_checkpoints", "collab_versions"):
            await conn.execute(f"DELETE FROM {table} WHERE name = %(name)s{bound}", params)
        await conn.execute("DELETE FROM collab_trash WHERE name = %s", [name])
        if upto is None:
            await conn.execute("DELETE FROM collab_history_meta WHERE name = %s", [name])
        else:
            await self._h_pruned(conn, name, upto)

    # -- helpers --------------------------------------------------------------------------

    async def _h_fetch(self, what: str, sql: str, params: Any) -> list[Any]:
        rows: list[Any] = await self._fetch(what, sql, params)  # type: ignore[attr-defined]
        return rows

    def _h_conn(self) -> Any:
        return self._pool.connection()  # type: ignore[attr-defined]

    def _h_guard(self, what: str) -> Any:
        self._check_open()  # type: ignore[attr-defined]
        return self._driver_guard(what)  # type: ignore[attr-defined]

    # -- the async interface (what ``collab.history`` calls) --------------------------------

    async def history_sessions(
        self, name: str, before: int, gap: float, limit: int
    ) -> list[Session]:
        """Up to ``limit`` editing sessions of rows below seq ``before``, newest first."""
        with self._h_guard("reading history"):
            async with self._h_conn() as conn, conn.transaction():
                # One snapshot of both tables, as a compaction may move rows meanwhile.
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                lister = list_sessions(name, before, gap, limit)
                sql, params = next(lister)
                while True:
                    pg = _LISTER_SQL.get(sql, sql).replace("?", "%s")
                    cur = await conn.execute(pg, params)
                    try:
                        sql, params = lister.send(await cur.fetchall())
                    except StopIteration as done:
                        sessions: list[Session] = done.value
                        return sessions

    async def history_checkpoints(self, name: str) -> list[Checkpoint]:
        """The checkpoints of ``name`` (the snapshot included), oldest first."""
        rows = await self._h_fetch("reading checkpoints", _CHECKPOINTS, {"name": name})
        return [Checkpoint(int(s), float(a)) for s, a in rows]

    async def history_bounds(self, name: str) -> tuple[int | None, int | None, int]:
        """(oldest seq, latest seq, seq up to which rows were pruned)."""
        rows = await self._h_fetch("reading history", _BOUNDS, {"name": name})
        pruned = await self._h_fetch("reading history", _PRUNED, [name])
        lo, hi = rows[0]
        return (
            None if lo is None else int(lo),
            None if hi is None else int(hi),
            int(pruned[0][0]) if pruned else 0,
        )

    async def seq_at(self, name: str, t: float) -> int | None:
        """The last seq of ``name`` at Unix time ``t`` (None: nothing that early)."""
        rows = await self._h_fetch("reading history", _SEQ_AT, {"name": name, "t": t})
        return None if rows[0][0] is None else int(rows[0][0])

    async def at_of(self, name: str, seq: int) -> float | None:
        """When seq ``seq`` of ``name`` was written (None: no row or checkpoint has it)."""
        rows = await self._h_fetch("reading history", _AT_OF, {"name": name, "seq": seq})
        return float(rows[0][0]) if rows else None

    async def point(self, name: str, seq: int, base_max: int | None = None) -> PointRead:
        """What replaying ``name`` up to ``seq`` needs, from a checkpoint at or before
        ``base_max`` (default: ``seq``); one repeatable-read transaction."""
        limit = seq if base_max is None else min(seq, base_max)
        with self._h_guard("reading history"):
            async with self._h_conn() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return await self._h_point(conn, name, seq, limit)

    async def _h_point(self, conn: Conn, name: str, seq: int, limit: int) -> PointRead:
        cur = await conn.execute(
            "SELECT seq, at, k FROM (SELECT seq, at, 0 AS k FROM collab_checkpoints"
            " WHERE name = %(name)s AND seq <= %(seq)s UNION ALL SELECT seq,"
            f" {_EPOCH.format('updated_at')}, 1 FROM collab_snapshots"
            " WHERE name = %(name)s AND seq <= %(seq)s) AS c ORDER BY seq DESC, k DESC LIMIT 1",
            {"name": name, "seq": limit},
        )
        base_row = await cur.fetchone()
        parts: list[tuple[str, bytes]] = []
        base = None
        since = 0
        if base_row is not None:
            since = int(base_row[0])
            base = Checkpoint(since, float(base_row[1]))
            table, column = (
                ("collab_snapshots", "snapshot") if base_row[2] else ("collab_checkpoints", "state")
            )
            cur = await conn.execute(
                f"SELECT {column} FROM {table} WHERE name = %s AND seq = %s",
                [name, since],
                binary=True,
            )
            state = await cur.fetchone()
            assert state is not None
            parts.append((f"checkpoint {since}", bytes(state[0])))
        cur = await conn.execute(
            "SELECT id, created_at, author, data FROM collab_history"
            " WHERE name = %(name)s AND id > %(since)s AND id <= %(seq)s"
            " UNION ALL SELECT id, created_at, author, data FROM collab_history"
            " WHERE name = %(name)s AND folded > %(since)s AND id <= %(since)s"
            f" UNION ALL SELECT id, {_EPOCH.format('created_at')}, author, data FROM collab_updates"
            " WHERE name = %(name)s AND id <= %(seq)s ORDER BY 1",
            {"name": name, "since": since, "seq": seq},
            binary=True,
        )
        rows: list[tuple[int, float, str | None]] = []
        for row_id, at, author, data in await cur.fetchall():
            parts.append((f"update #{row_id}", bytes(data)))
            rows.append((int(row_id), float(at), author))
        cur = await conn.execute(_PRUNED, [name])
        meta = await cur.fetchone()
        pruned = int(meta[0]) if meta else 0
        return PointRead(seq, base, parts, rows, since >= pruned)

    async def versions(self, name: str) -> list[Version]:
        rows = await self._h_fetch(
            "reading versions",
            "SELECT id, name, seq, at, label, created_by FROM collab_versions"
            " WHERE name = %s ORDER BY seq DESC, at DESC",
            [name],
        )
        return [Version(r[0], r[1], int(r[2]), float(r[3]), r[4], r[5]) for r in rows]

    async def version(self, version_id: str) -> Version | None:
        rows = await self._h_fetch(
            "reading versions",
            "SELECT id, name, seq, at, label, created_by FROM collab_versions WHERE id = %s",
            [version_id],
        )
        if not rows:
            return None
        r = rows[0]
        return Version(r[0], r[1], int(r[2]), float(r[3]), r[4], r[5])

    async def add_version(self, version: Version, state: bytes) -> None:
        """Record ``version`` and keep ``state`` (the document at its seq) as a checkpoint."""
        with self._h_guard("saving a version"):
            async with self._h_conn() as conn, conn.transaction():
                await conn.execute(LOCK_DOC, [version.name])
                await conn.execute(
                    "INSERT INTO collab_checkpoints (name, seq, at, state)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (name, seq) DO NOTHING",
                    [version.name, version.seq, version.at, state],
                )
                await conn.execute(
                    "INSERT INTO collab_versions (id, name, seq, at, label, created_by)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    [version.id, version.name, version.seq, version.at, version.label]
                    + [version.created_by],
                )

    async def delete_version(self, name: str, version_id: str) -> bool:
        changed: int = await self._write(  # type: ignore[attr-defined]
            "deleting a version",
            "DELETE FROM collab_versions WHERE name = %s AND id = %s",
            [name, version_id],
        )
        return changed > 0

    async def trash(self, name: str | None = None) -> list[TrashEntry]:
        """Deleted documents still kept (one, or all), most recently deleted first."""
        where = "" if name is None else " WHERE name = %(name)s"
        rows = await self._h_fetch(
            "reading the trash",
            f"SELECT name, seq, deleted_at, deleted_by, purge_at FROM collab_trash{where}"
            " ORDER BY deleted_at DESC",
            {"name": name},
        )
        return [TrashEntry(n, int(s), float(d), by, float(p)) for n, s, d, by, p in rows]

    async def untrash(self, name: str, seq: int, state: bytes) -> str:
        """Bring ``name`` back with ``state``: "ok", "gone" or "taken"."""
        with self._h_guard("undeleting"):
            async with self._h_conn() as conn, conn.transaction():
                await conn.execute(LOCK_DOC, [name])
                cur = await conn.execute("SELECT seq FROM collab_trash WHERE name = %s", [name])
                row = await cur.fetchone()
                if row is None or int(row[0]) != seq:
                    return "gone"
                cur = await conn.execute(_LIVE, {"name": name})
                live = await cur.fetchone()
                if live is not None and live[0]:
                    return "taken"
                await conn.execute(
                    "INSERT INTO collab_snapshots (name, snapshot, updated_at, seq)"
                    " VALUES (%s, %s, to_timestamp(%s), %s)",
                    [name, state, time.time(), seq],
                )
                await conn.execute("DELETE FROM collab_trash WHERE name = %s", [name])
        return "ok"

    async def purge(self, name: str) -> bool:
        """Delete a trashed document and its history for good; whether it was there."""
        with self._h_guard("purging"):
            async with self._h_conn() as conn, conn.transaction():
                await conn.execute(LOCK_DOC, [name])
                cur = await conn.execute("SELECT seq FROM collab_trash WHERE name = %s", [name])
                row = await cur.fetchone()
                if row is None:
                    return False
                await self._h_forget(conn, name, int(row[0]))
        return True

    async def claim(self, key: str, name: str) -> str | None:
        """Claim an idempotency key (None), or what it answered ("" while in progress)."""
        now = time.time()
        with self._h_guard("claiming an idempotency key"):
            async with self._h_conn() as conn, conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO collab_idempotency (key, name, at, result)"
                    " VALUES (%s, %s, %s, NULL) ON CONFLICT (key) DO NOTHING RETURNING key",
                    [key, name, now],
                )
                if await cur.fetchone() is not None:
                    await conn.execute(
                        "DELETE FROM collab_idempotency WHERE at < %s", [now - 86400]
                    )
                    return None
                cur = await conn.execute(
                    "SELECT result FROM collab_idempotency WHERE key = %s", [key]
                )
                row = await cur.fetchone()
        return "" if row is None or row[0] is None else str(row[0])

    async def settle(self, key: str, result: str | None) -> None:
        """Record a claimed key's answer (None: forget the claim, the work failed)."""
        if result is None:
            await self._write(  # type: ignore[attr-defined]
                "recording an idempotency key",
                "DELETE FROM collab_idempotency WHERE key = %s",
                [key],
            )
        else:
            await self._write(  # type: ignore[attr-defined]
                "recording an idempotency key",
                "UPDATE collab_idempotency SET result = %s WHERE key = %s",
                [result, key],
            )

    async def record_event(self, draft: EventDraft) -> StoredEvent:
        """Write one event to the change feed (``doc.restored``)."""
        with self._h_guard("writing an event"):
            async with self._h_conn() as conn, conn.transaction():
                await conn.execute(LOCK_EVENTS)
                (event,) = await self._insert_events(conn, [draft])  # type: ignore[attr-defined]
        result: StoredEvent = event
        return result

    async def history_sweep(self) -> None:
        """Prune history beyond the window and purge expired trash.  A document whose live
        log reaches beyond the window is compacted first (see the SQLite store's)."""
        if self.history_retention > 0:
            stale = await self._h_fetch(
                "pruning history",
                "SELECT DISTINCT name FROM collab_updates WHERE created_at < to_timestamp(%s)",
                [time.time() - self.history_retention],
            )
            for (name,) in stale:
                await self.compact(name)  # type: ignore[attr-defined]
        now = time.time()
        if self.history_retention > 0:
            cutoff = now - self.history_retention
            rows = await self._h_fetch(
                "pruning history",
                "SELECT DISTINCT name FROM collab_history WHERE created_at < %(c)s"
                " UNION SELECT DISTINCT name FROM collab_checkpoints WHERE at < %(c)s",
                {"c": cutoff},
            )
            for (name,) in rows:
                with self._h_guard("pruning history"):
                    async with self._h_conn() as conn, conn.transaction():
                        await conn.execute(LOCK_DOC, [name])
                        await self._h_prune(conn, name, now)
        expired = await self._h_fetch(
            "purging the trash", "SELECT name FROM collab_trash WHERE purge_at < %s", [now]
        )
        for (name,) in expired:
            await self.purge(name)
