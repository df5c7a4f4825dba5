"""An in-process store: explicit opt-in for tests and throwaway demos."""

from __future__ import annotations

import time
from typing import Any

from pycrdt import Doc

from .base import DocInfo


class _Entry:
    __slots__ = ("doc", "size", "updated_at", "updates")

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.updates = 0
        self.size = 0
        self.updated_at = time.time()

    def info(self, name: str) -> DocInfo:
        return DocInfo(name, self.size, self.updates, self.updated_at)


class MemoryStore:
    """Keeps each document as a live pycrdt ``Doc``, so loading is one encode."""

    def __init__(self) -> None:
        self._docs: dict[str, _Entry] = {}

    async def open(self) -> None:
        return None

    async def load(self, name: str) -> bytes | None:
        entry = self._docs.get(name)
        return None if entry is None else entry.doc.get_update()

    def append(self, name: str, update: bytes, author: str | None = None) -> None:
        entry = self._docs.get(name)
        if entry is None:
            entry = self._docs[name] = _Entry()
        entry.doc.apply_update(update)
        entry.updates += 1
        entry.size += len(update)
        entry.updated_at = time.time()

    async def flush(self) -> None:
        return None

    async def compact(self, name: str) -> None:
        entry = self._docs.get(name)
        if entry is not None:
            entry.size = len(entry.doc.get_update())
            entry.updates = 1

    async def delete(self, name: str, author: str | None = None) -> None:
        self._docs.pop(name, None)

    async def list(self) -> list[DocInfo]:
        return [entry.info(name) for name, entry in sorted(self._docs.items())]

    async def info(self, name: str) -> DocInfo | None:
        entry = self._docs.get(name)
        return None if entry is None else entry.info(name)

    @property
    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._docs.clear()
