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
update twice changes nothing; its events are then written twice as well,
which at-least-once webhook receivers handle anyway.)

Compaction reads snapshot and log without a transaction held open,
merges them (a worker process for big documents) while commits go on, then
in one transaction under ``pg_advisory_xact_lock(hashtext(name))`` checks
that the snapshot is the one it read and every row it read is still there,
writes the new snapshot and deletes exactly those rows (by id), so rows that
another process commits meanwhile, whatever their id, are kept.  Two
processes may merge the same document at once; the second to write finds
the rows gone and writes nothing.  ``delete`` takes the same lock, so a
concurrent compaction cannot write the snapshot back.

Events (``events.py``): each commit transaction inserts its log rows,
then takes a transaction-level advisory lock shared by every writer of
events (commits and deletes of all processes), decides which documents are
new, inserts the events and commits.  Identity values are handed out at
insert but become visible at commit, so without that lock a reader could see
event 8 of one transaction before event 7 of another and move its cursor
past 7 for good; under it, the events of one transaction get ids above
every committed one and are visible before the next transaction can take
ids, so ``events_after`` always sees a prefix.  (A visibility delay would
only make the skip unlikely.)  The lock is held from the event insert to
the commit, a millisecond or two; the rows, the bulk of a commit, go in
before it.  The same lock makes ``doc.created`` exact across processes:
the check "anything stored besides my rows?" runs after every earlier
writer committed.

Webhooks: one process of the cluster dispatches, the one holding a
session-level advisory lock for the endpoint on a connection of its own
(``try_lead``); if it dies, PostgreSQL drops the session and the lock, and
another process takes over at its next poll.

Tables: ``collab_snapshots``, ``collab_updates``, ``collab_events``,
``collab_webhook_cursors``, ``collab_webhook_deliveries``,
``collab_webhook_endpoints`` and ``collab_schema`` (holding the schema
version), created or completed at ``open``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the PostgreSQL store needs psycopg: pip install 'collab[postgres]'") from exc

from ..webhooks import Delivery, StoredEvent
from .base import DocInfo, LogEntry, StoreError
from .events import (
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    EventDraft,
    delivery_from_row,
    delivery_row,
    drafts,
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
from .postgres_history import LOCK_EVENTS, SCHEMA_3, PostgresHistory

__all__ = ["PostgresStore"]

log = logging.getLogger("collab.store")

SCHEMA_VERSION = 4

#: Advisory lock key serializing schema creation between processes.
_SCHEMA_LOCK = 0x636F6C6C  # "coll"
#: The two-key advisory locks (a key space apart from the one-key locks of
#: documents, ``hashtext(name)``): (_LOCKS, 1) serializes event writers,
#: (_LEAD, hashtext(key)) elects a webhook dispatcher.
_LOCKS = 0x636F6C6C
_LEAD = 0x636F6C6D
_LOCK_EVENTS = f"SELECT pg_advisory_xact_lock({_LOCKS}, 1)"
assert _LOCK_EVENTS == LOCK_EVENTS  # postgres_history.py writes doc.restored events too
#: Rows one prune statement deletes at most.
_PRUNE_CHUNK = 5000

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

# Version 2: authors, the change feed and the webhook outbox.
_SCHEMA_2 = [
    "ALTER TABLE collab_updates ADD COLUMN IF NOT EXISTS author text",
    """CREATE TABLE IF NOT EXISTS collab_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        type text NOT NULL,
        name text NOT NULL,
        seq_from bigint NOT NULL,
        seq_to bigint NOT NULL,
        authors text[] NOT NULL,
        updates integer NOT NULL,
        size bigint NOT NULL,
        at double precision NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS collab_events_by_at ON collab_events (at)",
    """CREATE TABLE IF NOT EXISTS collab_webhook_cursors (
        endpoint text PRIMARY KEY,
        cursor bigint NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS collab_webhook_deliveries (
        id text PRIMARY KEY,
        endpoint text NOT NULL,
        type text NOT NULL,
        name text NOT NULL,
        seq_from bigint NOT NULL,
        seq_to bigint NOT NULL,
        authors text[] NOT NULL,
        updates integer NOT NULL,
        size bigint NOT NULL,
        first_at double precision NOT NULL,
        next_at double precision NOT NULL,
        attempts integer NOT NULL,
        body bytea NOT NULL,
        status text NOT NULL,
        last_error text NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS collab_webhook_deliveries_by_status
        ON collab_webhook_deliveries (endpoint, status, next_at)""",
    """CREATE TABLE IF NOT EXISTS collab_webhook_endpoints (
        endpoint text PRIMARY KEY,
        disabled_at double precision NOT NULL,
        reason text NOT NULL
    )""",
]

# Of the documents of a commit (``n``, with ``mine`` rows of this transaction),
# those that had something stored before it: a snapshot, or more log rows than
# ours (LIMIT: counting a long log would be wasted).
_STORED_BEFORE = """
SELECT t.n FROM unnest(%s::text[], %s::bigint[]) AS t(n, mine)
WHERE EXISTS (SELECT 1 FROM collab_snapshots s WHERE s.name = t.n)
   OR (SELECT COUNT(*) FROM (
         SELECT 1 FROM collab_updates u WHERE u.name = t.n LIMIT t.mine + 1) AS x) > t.mine
"""

_INSERT_EVENT = (
    "INSERT INTO collab_events (type, name, seq_from, seq_to, authors, updates, size, at)"
    " VALUES (%s, %s, %s, %s, %s::text[], %s, %s, %s) RETURNING id"
)

_UPSERT_DELIVERY = (
    f"INSERT INTO collab_webhook_deliveries ({DELIVERY_COLUMNS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s::text[], %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}" for c in (c.strip() for c in DELIVERY_COLUMNS.split(",")) if c != "id"
    )
)

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


class PostgresStore(PostgresHistory, GroupCommitStore):
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
        # try_lead's own connection: its session holds the webhook leads.
        self._lead_conn: psycopg.AsyncConnection[Any] | None = None
        self._leading: set[str] = set()
        self._lead_lock = asyncio.Lock()
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
                if version < 2:
                    for statement in _SCHEMA_2:
                        await conn.execute(statement)
                if version < 4:  # 3: the same tables, before the session totals
                    for statement in SCHEMA_3:
                        await conn.execute(statement)
                if version < SCHEMA_VERSION:
                    await conn.execute(
                        "INSERT INTO collab_schema (version) VALUES (%s)", [SCHEMA_VERSION]
                    )
        except (psycopg.Error, OSError) as exc:
            await self._pool.close()
            raise StoreError(f"cannot open {self._where}: {exc}".strip()) from None
        except BaseException:
            await self._pool.close()
            raise

    async def _backend_close(self) -> None:
        await self._drop_lead()
        await self._pool.close()

    async def _backend_write(self, batch: Sequence[Pending]) -> Committed:
        names = list(dict.fromkeys(e.name for e in batch))
        mine = Counter(e.name for e in batch)
        now = time.time()
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO collab_updates (name, data, created_at, author)"
                " VALUES (%s, %s, to_timestamp(%s), %s) RETURNING id",
                [(e.name, e.update, e.at, e.author) for e in batch],
                returning=True,
            )
            ids = await _returned_ids(cur)
            # Log totals including other processes' rows: the compaction trigger.
            await cur.execute(
                "SELECT name, COUNT(*), COALESCE(SUM(octet_length(data)), 0)::bigint"
                " FROM collab_updates WHERE name = ANY(%s) GROUP BY name",
                [names],
            )
            rows = await cur.fetchall()
            # Held until COMMIT (see the module docstring).
            await cur.execute(_LOCK_EVENTS)
            await cur.execute(_STORED_BEFORE, [names, [mine[n] for n in names]])
            stored = {row[0] for row in await cur.fetchall()}
            new = [n for n in names if n not in stored]
            events = await self._insert_events(conn, drafts(batch, ids, new, now))
        # psycopg ends a transaction without COMMIT, and without an error, when
        # its connection was closed inside the block: that is no commit.
        if conn.closed:
            raise StoreError(f"the connection to {self._where} closed before COMMIT")
        totals = {name: (int(count), int(size)) for name, count, size in rows}
        return Committed(totals, events)

    # A separate step, so that a test can fail a commit after its rows went in.
    async def _insert_events(
        self, conn: psycopg.AsyncConnection[Any], events: Sequence[EventDraft]
    ) -> list[StoredEvent]:
        """Insert ``events``; the caller holds the events lock (``_LOCK_EVENTS``)."""
        async with conn.cursor() as cur:
            await cur.executemany(
                _INSERT_EVENT,
                [(e.type, e.doc, e.seq_from, e.seq_to, list(e.authors)) + e[5:] for e in events],
                returning=True,
            )
            ids = await _returned_ids(cur)
        return [e.stored(i) for e, i in zip(events, ids, strict=True)]

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
            seq = await self._h_fold(conn, name, ids)  # history: keep what goes
            await self._write_snapshot(conn, name, state, time.time())
            await self._delete_log(conn, ids)
            await self._h_after_compaction(conn, name, seq)
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

    async def _backend_delete(self, name: str, author: str | None) -> StoredEvent | None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_LOCK_DOC, [name])
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM collab_snapshots WHERE name = %(n)s)"
                " OR EXISTS (SELECT 1 FROM collab_updates WHERE name = %(n)s)",
                {"n": name},
            )
            live = await cur.fetchone()
            if live is not None and live[0]:
                if self.trash_retention > 0:
                    await self._h_trash(conn, name, author, time.time())
                else:
                    await self._h_forget(conn, name, None)
            cur = await conn.execute(
                "WITH d AS (DELETE FROM collab_snapshots WHERE name = %s"
                " RETURNING octet_length(snapshot) AS n)"
                " SELECT COUNT(*), COALESCE(SUM(n), 0)::bigint FROM d",
                [name],
            )
            snapshot = await cur.fetchone()
            cur = await conn.execute(
                "WITH d AS (DELETE FROM collab_updates WHERE name = %s"
                " RETURNING id, octet_length(data) AS n)"
                " SELECT MIN(id), MAX(id), COUNT(*), COALESCE(SUM(n), 0)::bigint FROM d",
                [name],
            )
            log_rows = await cur.fetchone()
            assert snapshot is not None and log_rows is not None
            first, last, rows, size = log_rows
            if not snapshot[0] and not rows:
                return None
            draft = EventDraft(
                "doc.deleted",
                name,
                first or 0,
                last or 0,
                () if author is None else (author,),
                int(rows),
                int(snapshot[1]) + int(size),
                time.time(),
            )
            await conn.execute(_LOCK_EVENTS)
            (event,) = await self._insert_events(conn, [draft])
        return event

    async def _backend_prune(self, before: float) -> int:
        pruned = 0
        for table, where in (
            ("collab_events", "at < %s"),
            ("collab_webhook_deliveries", "status <> 'pending' AND first_at < %s"),
        ):
            while True:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        f"DELETE FROM {table} WHERE id IN"
                        f" (SELECT id FROM {table} WHERE {where} LIMIT {_PRUNE_CHUNK})",
                        [before],
                    )
                pruned += cur.rowcount
                if cur.rowcount < _PRUNE_CHUNK:
                    break
        return pruned

    async def _backend_entries(self, name: str) -> list[LogEntry]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, author, EXTRACT(EPOCH FROM created_at)::float8, octet_length(data)"
                " FROM collab_updates WHERE name = %s ORDER BY id",
                [name],
            )
            rows = await cur.fetchall()
        return [LogEntry(int(i), author, float(at), int(size)) for i, author, at, size in rows]

    # -- the webhook outbox (collab.webhooks.Outbox) ------------------------------------

    async def _fetch(self, what: str, sql: str, params: Sequence[Any]) -> list[Any]:
        self._check_open()
        with self._driver_guard(what):
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, params)
                rows: list[Any] = await cur.fetchall()
        return rows

    async def _write(self, what: str, sql: str, params: Sequence[Any]) -> int:
        self._check_open()
        with self._driver_guard(what):
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, params)
                changed: int = cur.rowcount
        return changed

    async def events_after(self, after: int, limit: int) -> list[StoredEvent]:
        """Events with an id above ``after``, oldest first (at most ``limit``)."""
        rows = await self._fetch(
            "reading events",
            f"SELECT {EVENT_COLUMNS} FROM collab_events WHERE id > %s ORDER BY id LIMIT %s",
            [after, limit],
        )
        return [event_from_row(row) for row in rows]

    async def webhook_cursor(self, endpoint: str) -> int:
        """The last event id turned into deliveries for ``endpoint`` (0 at first)."""
        rows = await self._fetch(
            "reading a webhook cursor",
            "SELECT cursor FROM collab_webhook_cursors WHERE endpoint = %s",
            [endpoint],
        )
        return int(rows[0][0]) if rows else 0

    async def webhook_absorb(self, endpoint: str, cursor: int, upserts: Sequence[Delivery]) -> None:
        """In one transaction: insert or replace ``upserts`` and move the cursor."""
        self._check_open()
        with self._driver_guard("recording webhook deliveries"):
            async with self._pool.connection() as conn, conn.transaction():
                await _upsert(conn, upserts)
                # Never backwards (a former leader finishing a round late).
                await conn.execute(
                    "INSERT INTO collab_webhook_cursors (endpoint, cursor) VALUES (%s, %s)"
                    " ON CONFLICT (endpoint) DO UPDATE"
                    " SET cursor = GREATEST(collab_webhook_cursors.cursor, excluded.cursor)",
                    [endpoint, cursor],
                )

    async def webhook_pending(self, endpoint: str) -> list[Delivery]:
        """The endpoint's deliveries with status ``pending``, by ``next_at``."""
        rows = await self._fetch(
            "reading webhook deliveries",
            f"SELECT {DELIVERY_COLUMNS} FROM collab_webhook_deliveries"
            " WHERE endpoint = %s AND status = 'pending' ORDER BY next_at, id",
            [endpoint],
        )
        return [delivery_from_row(row) for row in rows]

    async def webhook_deliveries(self, endpoint: str) -> list[Delivery]:
        """Every delivery of ``endpoint`` kept (pending, delivered, failed), by first event."""
        rows = await self._fetch(
            "reading webhook deliveries",
            f"SELECT {DELIVERY_COLUMNS} FROM collab_webhook_deliveries"
            " WHERE endpoint = %s ORDER BY first_at, id",
            [endpoint],
        )
        return [delivery_from_row(row) for row in rows]

    async def webhook_update(self, delivery: Delivery) -> None:
        """Record an attempt's outcome (replaces the row with the same id)."""
        self._check_open()
        with self._driver_guard("recording a webhook attempt"):
            async with self._pool.connection() as conn:
                await _upsert(conn, [delivery])

    async def webhook_disabled(self, endpoint: str) -> bool:
        """Whether ``endpoint`` was disabled (it answered ``410 Gone``)."""
        rows = await self._fetch(
            "reading webhook endpoints",
            "SELECT 1 FROM collab_webhook_endpoints WHERE endpoint = %s",
            [endpoint],
        )
        return bool(rows)

    async def webhook_disable(self, endpoint: str, reason: str) -> None:
        """Stop deliveries to ``endpoint`` until ``webhook_enable``."""
        await self._write(
            "disabling a webhook endpoint",
            "INSERT INTO collab_webhook_endpoints (endpoint, disabled_at, reason)"
            " VALUES (%s, %s, %s) ON CONFLICT (endpoint) DO UPDATE"
            " SET disabled_at = excluded.disabled_at, reason = excluded.reason",
            [endpoint, time.time(), reason],
        )

    async def webhook_enable(self, endpoint: str) -> bool:
        """Deliver to ``endpoint`` again; whether it was disabled."""
        changed = await self._write(
            "enabling a webhook endpoint",
            "DELETE FROM collab_webhook_endpoints WHERE endpoint = %s",
            [endpoint],
        )
        return changed > 0

    async def try_lead(self, key: str) -> bool:
        """Whether this process dispatches for ``key``: it holds a session-level
        advisory lock on a connection of its own (never from the pool) for as
        long as the store is open and that connection lives."""
        self._check_open()
        async with self._lead_lock:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._try_lead(key)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if self._leading:
                    log.warning("lost the webhook lead on %s: %s", self._where, exc)
                await self._drop_lead()
                return False

    async def _try_lead(self, key: str) -> bool:
        conn = self._lead_conn
        if conn is None or conn.closed or conn.broken:
            # A new session holds none of the old one's locks.
            self._leading.clear()
            await self._drop_lead()
            conn = self._lead_conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=max(1, int(self._timeout))
            )
        if key in self._leading:
            # Held for as long as the session lives: check that it does.
            await conn.execute("SELECT 1")
            return True
        cur = await conn.execute(f"SELECT pg_try_advisory_lock({_LEAD}, hashtext(%s))", [key])
        row = await cur.fetchone()
        if row is not None and row[0]:
            self._leading.add(key)
            log.info("this process dispatches %s for %s", key, self._where)
            return True
        return False

    async def _drop_lead(self) -> None:
        """Close the lead connection: PostgreSQL releases its locks with the session."""
        conn, self._lead_conn = self._lead_conn, None
        self._leading.clear()
        if conn is not None:
            try:
                await conn.close()
            except (psycopg.Error, OSError) as exc:
                log.debug("closing the lead connection of %s: %s", self._where, exc)

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


async def _returned_ids(cur: psycopg.AsyncCursor[Any]) -> list[int]:
    """The ``RETURNING id`` of each statement of an ``executemany(returning=True)``."""
    ids = []
    while True:
        row = await cur.fetchone()
        assert row is not None
        ids.append(int(row[0]))
        if not cur.nextset():
            return ids


async def _upsert(conn: psycopg.AsyncConnection[Any], deliveries: Sequence[Delivery]) -> None:
    if not deliveries:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            _UPSERT_DELIVERY, [delivery_row(d, list(d.authors)) for d in deliveries]
        )
