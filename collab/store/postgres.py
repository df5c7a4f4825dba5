"""Documents in PostgreSQL, shared by any number of server processes.

Install with ``pip install 'collab[postgres]'`` (psycopg 3 and its pool).
The URL is a libpq connection URI (``postgresql://user@host:5432/db`` or
``postgres://...``); ``?sslmode=...`` and the other libpq parameters work.

Behaviour is that of the SQLite store (see ``collab.store.sqlite``): the
appends of every document are queued in memory and inserted by one task in
one transaction at most every ``commit_window`` seconds; ``flush`` waits
for that.  While PostgreSQL is unreachable, commits are retried with
exponential backoff, the updates stay in memory and ``healthy`` is False;
they are written once the database answers again.  (A commit whose
acknowledgement was lost may be written twice: harmless, applying a Yjs
update twice changes nothing.)

Compaction reads snapshot and log without a transaction held open,
merges them (a worker process for big documents) while commits go on, then
in one transaction under ``pg_advisory_xact_lock(hashtext(name))`` checks
that the snapshot is the one it read and every row it read is still there,
writes the new snapshot and deletes exactly those rows (by id), so rows that
another process commits meanwhile, whatever their id, are kept.  Two
processes may merge the same document at once; the second to write finds
the rows gone and writes nothing.  ``delete`` takes the same lock, so a
concurrent compaction cannot write the snapshot back.

Tables: ``collab_snapshots``, ``collab_updates`` and ``collab_schema``
(holding the schema version), created at ``open`` if missing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the PostgreSQL store needs psycopg: pip install 'collab[postgres]'") from exc

from .base import DocInfo, StoreError
from .group import (
    COMMIT_WINDOW,
    COMPACT_BYTES,
    COMPACT_UPDATES,
    GroupCommitStore,
    LogRead,
    Pending,
)
from .merge import PROCESS_BYTES

__all__ = ["PostgresStore"]

SCHEMA_VERSION = 1

#: Advisory lock key serializing schema creation between processes.
_SCHEMA_LOCK = 0x636F6C6C  # "coll"

_SCHEMA = [
    """CREATE TABLE collab_snapshots (
        name text PRIMARY KEY,
        snapshot bytea NOT NULL,
        updated_at timestamptz NOT NULL
    )""",
    """CREATE TABLE collab_updates (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL,
        data bytea NOT NULL,
        created_at timestamptz NOT NULL
    )""",
    "CREATE INDEX collab_updates_by_name ON collab_updates (name, id)",
]

# Snapshot first, then the log in order; one statement, so one consistent read
# even while another process compacts.  ``at``: the snapshot's time, which a
# compaction checks before it replaces the snapshot.
_ROWS = """
SELECT 0 AS kind, 0::bigint AS id, snapshot, updated_at AS at
FROM collab_snapshots WHERE name = %(name)s
UNION ALL
SELECT 1, id, data, NULL FROM collab_updates WHERE name = %(name)s
ORDER BY kind, id
"""

_STATS = """
SELECT name, SUM(size)::bigint, SUM(n)::bigint, EXTRACT(EPOCH FROM MAX(t))::float8 FROM (
    SELECT name, octet_length(snapshot)::bigint AS size, 1::bigint AS n, updated_at AS t
    FROM collab_snapshots {where}
    UNION ALL
    SELECT name, SUM(octet_length(data))::bigint, COUNT(*), MAX(created_at)
    FROM collab_updates {where} GROUP BY name
) AS s GROUP BY name ORDER BY name
"""

_LOCK_DOC = "SELECT pg_advisory_xact_lock(hashtext(%s))"


class PostgresStore(GroupCommitStore):
    """Documents in PostgreSQL via a psycopg 3 async connection pool."""

    _driver_errors = (psycopg.Error, OSError)

    def __init__(
        self,
        dsn: str,
        *,
        commit_window: float = COMMIT_WINDOW,
        compact_updates: int = COMPACT_UPDATES,
        compact_bytes: int = COMPACT_BYTES,
        pool_size: int = 4,
        timeout: float = 5.0,
        retry_min: float = 0.05,
        retry_max: float = 5.0,
        close_timeout: float = 30.0,
        merge_process_bytes: int | None = PROCESS_BYTES,
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
        self.dsn = dsn
        self._timeout = timeout
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"invalid PostgreSQL URL: {exc}") from None
        host = params.get("host") or "localhost"
        port = params.get("port") or "5432"
        self._where = f"PostgreSQL {host}:{port}/{params.get('dbname') or ''}"
        self._pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            name="collab-store",
            timeout=timeout,
            # autocommit: every transaction is an explicit ``conn.transaction()``.
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
            # After an outage the idle connections are dead: test before use,
            # so that a load does not fail on a stale one.
            check=AsyncConnectionPool.check_connection,
        )

    def __repr__(self) -> str:
        return f"<PostgresStore {self._where}>"

    @property
    def where(self) -> str:
        return self._where

    async def _backend_open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=self._timeout)
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS collab_schema (version integer NOT NULL)"
                )
                cur = await conn.execute("SELECT MAX(version) FROM collab_schema")
                row = await cur.fetchone()
                version = int(row[0]) if row and row[0] is not None else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self._where} has schema version {version}, newer than this collab "
                        f"understands ({SCHEMA_VERSION}); upgrade collab"
                    )
                if version < 1:
                    for statement in _SCHEMA:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO collab_schema (version) VALUES (1)")
        except (psycopg.Error, OSError) as exc:
            await self._pool.close()
            raise StoreError(f"cannot open {self._where}: {exc}".strip()) from None
        except BaseException:
            await self._pool.close()
            raise

    async def _backend_close(self) -> None:
        await self._pool.close()

    async def _backend_write(self, batch: Sequence[Pending]) -> dict[str, tuple[int, int]]:
        names = list(dict.fromkeys(e.name for e in batch))
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO collab_updates (name, data, created_at)"
                " VALUES (%s, %s, to_timestamp(%s))",
                [(e.name, e.update, e.at) for e in batch],
            )
            # Log totals including other processes' rows: the compaction trigger.
            await cur.execute(
                "SELECT name, COUNT(*), COALESCE(SUM(octet_length(data)), 0)::bigint"
                " FROM collab_updates WHERE name = ANY(%s) GROUP BY name",
                [names],
            )
            rows = await cur.fetchall()
        return {name: (int(count), int(size)) for name, count, size in rows}

    async def _backend_read(self, name: str) -> LogRead:
        async with self._pool.connection() as conn:
            # Binary: bytea as text is hex, decoded on the event loop (30 MB: 0.3 s).
            cur = await conn.execute(_ROWS, {"name": name}, binary=True)
            rows: list[tuple[int, int, bytes, Any]] = await cur.fetchall()
        parts = [
            ("snapshot" if kind == 0 else f"update #{row_id}", data)
            for kind, row_id, data, _ in rows
        ]
        snapshot_at = rows[0][3] if rows and rows[0][0] == 0 else None
        ids = [row_id for kind, row_id, _, _ in rows if kind == 1]
        return LogRead(parts, len(ids), (ids, snapshot_at))

    async def _backend_replace_log(self, name: str, state: bytes, token: Any) -> bool:
        ids: list[int] = token[0]
        snapshot_at = token[1]
        async with self._pool.connection() as conn, conn.transaction():
            # Held until COMMIT: no other compaction or delete of this name
            # runs between the checks and the writes.
            await conn.execute(_LOCK_DOC, [name])
            cur = await conn.execute(
                "SELECT updated_at FROM collab_snapshots WHERE name = %s", [name]
            )
            snapshot = await cur.fetchone()
            cur = await conn.execute(
                "SELECT COUNT(*) FROM collab_updates WHERE id = ANY(%s)", [ids]
            )
            still = await cur.fetchone()
            if (snapshot[0] if snapshot else None) != snapshot_at or (
                still is None or still[0] != len(ids)
            ):
                return False  # another process compacted or deleted it meanwhile
            await self._write_snapshot(conn, name, state, time.time())
            await self._delete_log(conn, ids)
        return True

    # Separate steps so that a test can fail one inside the transaction.
    async def _write_snapshot(
        self, conn: psycopg.AsyncConnection[Any], name: str, state: bytes, now: float
    ) -> None:
        await conn.execute(
            "INSERT INTO collab_snapshots (name, snapshot, updated_at)"
            " VALUES (%s, %s, to_timestamp(%s))"
            " ON CONFLICT (name) DO UPDATE"
            " SET snapshot = excluded.snapshot, updated_at = excluded.updated_at",
            [name, state, now],
        )

    async def _delete_log(self, conn: psycopg.AsyncConnection[Any], ids: list[int]) -> None:
        # By id, not "id <= max": identities are handed out before commit, so
        # a row committed by another process after our read may have a
        # smaller id than the ones we merged.
        await conn.execute("DELETE FROM collab_updates WHERE id = ANY(%s)", [ids])

    async def _backend_delete(self, name: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_LOCK_DOC, [name])
            await conn.execute("DELETE FROM collab_snapshots WHERE name = %s", [name])
            await conn.execute("DELETE FROM collab_updates WHERE name = %s", [name])

    async def _backend_stats(self, name: str | None) -> list[DocInfo]:
        async with self._pool.connection() as conn:
            if name is None:
                cur = await conn.execute(_STATS.format(where=""))
            else:
                cur = await conn.execute(
                    _STATS.format(where="WHERE name = %(name)s"), {"name": name}
                )
            rows = await cur.fetchall()
        return [DocInfo(n, int(size), int(count), float(t)) for n, size, count, t in rows]
