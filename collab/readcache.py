"""What the HTTP API read from a document, kept per version of the document.

A live room's ``Doc`` gets a change counter (one observer, added the first
time the API reads it), so reading an unchanged open document again costs
neither an encode on the event loop nor a render; a stored document's
version is a digest of its bytes.  Entries are kept least recently used
first, within a byte budget; concurrent reads of one version share one
render (single flight).
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from pycrdt import Doc, TransactionEvent

T = TypeVar("T")

#: Bytes of rendered output and encoded updates kept.
DEFAULT_BUDGET = 64 * 1024 * 1024


class _Counter:
    """A live document's version: bumped by every transaction that changed it."""

    __slots__ = ("__weakref__", "value")

    def __init__(self) -> None:
        self.value = 0

    def bump(self, event: TransactionEvent) -> None:
        self.value += 1


class ReadCache:
    """Values by key, LRU within ``budget`` bytes, computed once per key at a time."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}
        self._counters: weakref.WeakKeyDictionary[Doc[Any], _Counter] = weakref.WeakKeyDictionary()

    def version(self, doc: Doc[Any]) -> tuple[_Counter, int]:
        """A key for the current content of ``doc``: it changes whenever the document does."""
        counter = self._counters.get(doc)
        if counter is None:
            counter = self._counters[doc] = _Counter()
            # The subscription lives as long as the document: nothing to undo.
            doc.observe(counter.bump)
        return counter, counter.value

    def update_of(self, doc: Doc[Any]) -> tuple[bytes, Hashable]:
        """The document's whole state and its version, encoded once per version."""
        version = self.version(doc)
        key = ("update", version)
        hit = self.get(key)
        if hit is None:
            hit = doc.get_update()
            self.put(key, hit)
        return hit, version

    def get(self, key: Hashable) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = _size_of(value)
        if size > self.budget // 4:
            return  # one huge value must not flush everything else
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old[1]
        self._entries[key] = (value, size)
        self._size += size
        while self._size > self.budget:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._size -= dropped

    async def compute(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """The cached value of ``key``, or ``make()``'s, shared by concurrent callers."""
        hit = self.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        try:
            value = await make()
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._flights[key]
        flight.set_result(value)
        self.put(key, value)
        return value


def _size_of(value: Any) -> int:
    if isinstance(value, (bytes, str)):
        return len(value) + 64
    return sys.getsizeof(value) + 64
