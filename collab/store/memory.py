"""An in-process store: explicit opt-in for tests and throwaway demos."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pycrdt import Doc

from .base import DocInfo

if TYPE_CHECKING:
    from ..webhooks import StoredEvent

log = logging.getLogger("collab.store")


class _Entry:
    __slots__ = ("doc", "size", "updated_at", "updates")

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.updates = 0
        self.size = 0
        self.updated_at = time.time()

    def info(self, name: str) -> DocInfo:
        return DocInfo(name, self.size, self.updates, self.updated_at)


class _Turn:
    """The appends to one document in one event-loop turn."""

    __slots__ = ("authors", "created", "creator", "first_size", "seqs", "size")

    def __init__(self, created: bool, creator: str | None, first_size: int) -> None:
        self.created = created
        self.creator = creator
        self.first_size = first_size
        self.seqs: list[int] = []
        self.authors: dict[str, None] = {}
        self.size = 0

    def add(self, seq: int, author: str | None, size: int) -> None:
        self.seqs.append(seq)
        if author is not None:
            self.authors[author] = None
        self.size += size


class MemoryStore:
    """Keeps each document as a live pycrdt ``Doc``, so loading is one encode."""

    def __init__(self) -> None:
        self._docs: dict[str, _Entry] = {}
        #: As ``GroupCommitStore.on_persisted``: the appends of one event-loop
        #: turn, reported at its end as ``doc.created``/``doc.persisted`` events
        #: (sequence numbers count appends; nothing is kept, no outbox).
        self.on_persisted: Callable[[list[StoredEvent]], None] | None = None
        self._seq = 0
        self._event_id = 0
        #: name -> this event-loop turn's appends.
        self._turn: dict[str, _Turn] = {}

    async def open(self) -> None:
        return None

    async def load(self, name: str) -> bytes | None:
        entry = self._docs.get(name)
        return None if entry is None else entry.doc.get_update()

    def append(self, name: str, update: bytes, author: str | None = None) -> None:
        entry = self._docs.get(name)
        created = entry is None
        if entry is None:
            entry = self._docs[name] = _Entry()
        entry.doc.apply_update(update)
        entry.updates += 1
        entry.size += len(update)
        entry.updated_at = time.time()
        self._seq += 1
        if self.on_persisted is not None:
            self._record(name, created, author, len(update))

    def _record(self, name: str, created: bool, author: str | None, size: int) -> None:
        first_of_turn = not self._turn
        turn = self._turn.get(name)
        if turn is None:
            turn = self._turn[name] = _Turn(created, author, size)
        turn.add(self._seq, author, size)
        if first_of_turn:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop: report at once
                self._report()
            else:
                loop.call_soon(self._report)

    def _report(self) -> None:
        from ..webhooks import StoredEvent

        turns, self._turn = self._turn, {}
        events = []
        now = time.time()
        for name, turn in turns.items():
            if turn.created:
                self._event_id += 1
                first = turn.seqs[0]
                creator = () if turn.creator is None else (turn.creator,)
                events.append(
                    StoredEvent(
                        self._event_id,
                        "doc.created",
                        name,
                        first,
                        first,
                        creator,
                        1,
                        turn.first_size,
                        now,
                    )
                )
            self._event_id += 1
            events.append(
                StoredEvent(
                    self._event_id,
                    "doc.persisted",
                    name,
                    turn.seqs[0],
                    turn.seqs[-1],
                    tuple(turn.authors),
                    len(turn.seqs),
                    turn.size,
                    now,
                )
            )
        if events and self.on_persisted is not None:
            try:
                self.on_persisted(events)
            except Exception:
                log.exception("on_persisted hook of the memory store failed")

    async def flush(self) -> None:
        return None

    async def compact(self, name: str) -> None:
        entry = self._docs.get(name)
        if entry is not None:
            entry.size = len(entry.doc.get_update())
            entry.updates = 1

    async def delete(self, name: str, author: str | None = None) -> None:
        self._docs.pop(name, None)
        self._turn.pop(name, None)

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
