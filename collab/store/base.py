"""The contract every document store fulfils.

A store keeps, per document name, a log of Yjs updates that it compacts
into one snapshot from time to time.  Names are opaque keys, never file
paths.

Ordering and durability: ``append`` returns at once and never blocks the
event loop; appends are group-committed, so an update becomes durable
within the backend's commit window (also while the document is being
compacted), and at the latest when ``flush`` returns.  ``load`` sees
every update appended before it was called (also those not yet
committed), merged into one update.  A commit that fails is retried with
backoff; the updates stay queued in memory meanwhile, never dropped.

Each log row keeps who made it (``author``: a principal id such as
``"alice"`` or a server origin such as ``"server:assistant"``; None when
unknown) and when it was appended.  The SQLite and PostgreSQL stores also
write a change feed in the same transactions (``collab.store.events``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StoreError(Exception):
    """A store cannot do what was asked (unreachable, unwritable, corrupt data)."""


class CorruptDocument(StoreError):
    """One document's stored data cannot be decoded; other documents are fine."""


class StoreInUse(StoreError):
    """Another process serves the store alone (a SQLite file without Redis)."""


@dataclass(frozen=True, slots=True)
class DocInfo:
    name: str
    #: Bytes of stored updates and snapshot.
    size: int
    #: Updates in the log since the last compaction (a snapshot counts as one).
    updates: int
    #: Unix time of the last change.
    updated_at: float


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One committed row of a document's log (what version history reads)."""

    #: The store's sequence number: ids only grow (per store, across documents).
    id: int
    #: Who made it (a principal id or a server origin); None when unknown.
    author: str | None
    #: Unix time it was appended (its commit followed within the commit window,
    #: or, while the database was unreachable, once it was back).
    at: float
    #: Bytes of the update.
    size: int


class Store(Protocol):
    async def open(self) -> None:
        """Connect / create files and schema; raise ``StoreError`` naming the cause."""

    async def load(self, name: str) -> bytes | None:
        """The document's whole state as one update, or None if it never existed."""

    def append(self, name: str, update: bytes, author: str | None = None) -> None:
        """Queue an update for the document's log; ``author`` says who made it."""

    async def flush(self) -> None:
        """Wait until every appended update is durable."""

    async def compact(self, name: str) -> None:
        """Replace the document's log by one snapshot, atomically."""

    async def delete(self, name: str, author: str | None = None) -> None:
        """Forget the document and its log; ``author`` says who deleted it."""

    async def list(self) -> list[DocInfo]:
        """Every stored document."""

    async def info(self, name: str) -> DocInfo | None:
        """One document's size and counts, or None if it is not stored."""

    @property
    def healthy(self) -> bool:
        """False while commits are failing (reported by the health endpoints)."""

    async def close(self) -> None:
        """Flush and release resources; the store is unusable afterwards."""
