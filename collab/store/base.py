"""The contract every document store fulfils.

A store keeps, per document name, a log of Yjs updates (possibly compacted
into one snapshot).  Names are opaque keys, never file paths.

Ordering and durability: ``append`` returns at once and never blocks the
event loop; the update becomes durable no later than the next ``flush``
(or the backend's commit window).  ``load`` returns everything appended
before it was called, merged into one update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DocInfo:
    name: str
    size: int
    updates: int
    updated_at: float


class Store(Protocol):
    async def load(self, name: str) -> bytes | None:
        """The document's whole state as one update, or None if it never existed."""

    def append(self, name: str, update: bytes) -> None:
        """Queue an update for the document's log."""

    async def flush(self) -> None:
        """Wait until every appended update is durable."""

    async def delete(self, name: str) -> None:
        """Forget the document and its log."""

    async def list(self) -> list[DocInfo]:
        """Every stored document."""

    async def close(self) -> None:
        """Flush and release resources; the store is unusable afterwards."""
