"""The notes app's own data: users, who may open which document, webhooks received.

Plain ``sqlite3`` in a file of its own (collab keeps its documents in
another).  Every call opens a short-lived connection in a worker thread
(``asyncio.to_thread``): SQLite calls block, and the event loop also runs
every collab room of this process.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from .passwords import DUMMY_HASH, check_password, hash_password

Role = Literal["owner", "editor", "viewer"]
ROLES: tuple[Role, ...] = ("owner", "editor", "viewer")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    login TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    password TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS access (
    doc TEXT NOT NULL,
    login TEXT NOT NULL REFERENCES users(login),
    role TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    PRIMARY KEY (doc, login)
);
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,            -- webhook-id: a retried delivery is recorded once
    type TEXT NOT NULL,
    doc TEXT,
    payload TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class User:
    login: str
    name: str


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    type: str
    doc: str | None
    payload: dict[str, Any]
    received_at: float


class AppDB:
    """Users, access and received webhooks in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._connect() as conn:
                return work(conn)

        return await asyncio.to_thread(call)

    async def setup(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)

        await self._run(create)

    # -- users ------------------------------------------------------------------

    async def add_user(self, login: str, name: str, password: str) -> User:
        hashed = await asyncio.to_thread(hash_password, password)
        await self._run(
            lambda c: c.execute(
                "INSERT INTO users (login, name, password) VALUES (?, ?, ?)",
                (login, name, hashed),
            )
        )
        return User(login, name)

    async def user(self, login: str) -> User | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT login, name FROM users WHERE login = ?", (login,)
            ).fetchone()
        )
        return User(*row) if row else None

    async def users(self) -> list[User]:
        rows = await self._run(
            lambda c: c.execute("SELECT login, name FROM users ORDER BY login").fetchall()
        )
        return [User(*row) for row in rows]

    async def sign_in(self, login: str, password: str) -> User | None:
        """The user, if ``password`` is theirs (a wrong name costs as long as a wrong password)."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT login, name, password FROM users WHERE login = ?", (login,)
            ).fetchone()
        )
        ok = await asyncio.to_thread(check_password, password, row[2] if row else DUMMY_HASH)
        return User(row[0], row[1]) if row and ok else None

    # -- access -----------------------------------------------------------------

    async def roles(self, login: str) -> dict[str, Role]:
        """Document -> role, for every document ``login`` may open."""
        rows = await self._run(
            lambda c: c.execute("SELECT doc, role FROM access WHERE login = ?", (login,)).fetchall()
        )
        return {doc: role for doc, role in rows}

    async def members(self, doc: str) -> dict[str, Role]:
        """Login -> role, for everyone who may open ``doc``."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT login, role FROM access WHERE doc = ? ORDER BY login", (doc,)
            ).fetchall()
        )
        return {login: role for login, role in rows}

    async def set_role(self, doc: str, login: str, role: Role | None) -> None:
        """Give ``login`` a role on ``doc``, or (None) take their access away."""

        def write(c: sqlite3.Connection) -> None:
            if role is None:
                c.execute("DELETE FROM access WHERE doc = ? AND login = ?", (doc, login))
            else:
                c.execute(
                    "INSERT INTO access (doc, login, role) VALUES (?, ?, ?) "
                    "ON CONFLICT (doc, login) DO UPDATE SET role = excluded.role",
                    (doc, login, role),
                )

        await self._run(write)

    async def create_document(self, doc: str, owner: str) -> bool:
        """Record ``owner`` as the owner of a new ``doc``; False when the name is taken."""

        def create(c: sqlite3.Connection) -> bool:
            if c.execute("SELECT 1 FROM access WHERE doc = ?", (doc,)).fetchone():
                return False
            c.execute("INSERT INTO access (doc, login, role) VALUES (?, ?, 'owner')", (doc, owner))
            return True

        return await self._run(create)

    # -- webhooks received --------------------------------------------------------

    async def record_webhook(self, msg_id: str, payload: dict[str, Any]) -> bool:
        """Keep a verified delivery; False when this ``webhook-id`` was already recorded."""
        data = payload.get("data") or {}
        doc = data.get("doc") if isinstance(data, dict) else None
        row = (msg_id, str(payload.get("type")), doc, json.dumps(payload), time.time())
        return await self._run(
            lambda c: (
                c.execute(
                    "INSERT OR IGNORE INTO webhook_events (id, type, doc, payload, received_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    row,
                ).rowcount
                == 1
            )
        )

    async def webhook_events(self, docs: set[str], limit: int = 100) -> list[WebhookEvent]:
        """The latest events about ``docs``, newest first."""
        wanted = json.dumps(sorted(docs))
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id, type, doc, payload, received_at FROM webhook_events "
                "WHERE doc IN (SELECT value FROM json_each(?)) "
                "ORDER BY received_at DESC LIMIT ?",
                (wanted, limit),
            ).fetchall()
        )
        return [
            WebhookEvent(msg_id, kind, doc, json.loads(payload), at)
            for msg_id, kind, doc, payload, at in rows
        ]
