"""Waiting without sleeping: re-check a condition until it holds or time runs out."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence

import pytest
from pycrdt import Text

from collab.client import Session
from collab.store import open_store
from collab.store.sqlite import SQLiteStore
from collab.testing import converged as collab_converged
from collab.testing.converge import text_view


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Retry ``check`` until it is true; fail with a clear message after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        await asyncio.sleep(interval)


def sqlite_store(url: str) -> SQLiteStore:
    """``open_store(url)`` for a ``sqlite://`` URL, typed as the ``SQLiteStore`` it
    returns: that one is an async context manager, the ``Store`` protocol is not."""
    store = open_store(url)
    assert isinstance(store, SQLiteStore), store
    return store


def text_of(session: Session, key: str = "text") -> str:
    return str(session.doc.get(key, type=Text))


async def converged(sessions: Sequence[Session], key: str = "text", timeout: float = 20.0) -> str:
    """Wait until every session holds the same document; return the text of ``key``.

    collab.testing's own check: text and state vectors, woken by changes.
    """
    return await collab_converged(sessions, timeout=timeout, view=text_view(key))


async def logged(caplog: pytest.LogCaptureFixture, *parts: str, timeout: float = 5.0) -> None:
    """Wait until one log line contains every part (the close line comes after the close)."""

    def found() -> bool:
        return any(all(p in r.getMessage() for p in parts) for r in caplog.records)

    try:
        await eventually(found, timeout)
    except AssertionError:
        lines = "\n".join(r.getMessage() for r in caplog.records)
        raise AssertionError(f"no log line with {parts}; got:\n{lines}") from None


async def random_marker_edits(
    session: Session,
    tag: str,
    ops: int,
    rng: random.Random,
    marker: re.Pattern[str],
    pauses: Sequence[float] = (0, 0.001, 0.003),
) -> tuple[set[str], set[str]]:
    """Insert unique markers ``[tag.k]`` between markers, or delete a whole one.

    Inserting only at marker boundaries never splits a marker, so the final
    text must consist of exactly the surviving markers.  Returns the markers
    inserted and deleted.
    """
    text = session.doc.get("text", type=Text)
    inserted: set[str] = set()
    deleted: set[str] = set()
    for k in range(ops):
        current = str(text)
        markers = list(marker.finditer(current))
        if markers and rng.random() < 0.3:
            m = rng.choice(markers)
            del text[m.start() : m.end()]
            deleted.add(m.group())
        else:
            new = f"[{tag}.{k}]"
            text.insert(rng.choice([0, *(m.end() for m in markers)]), new)
            inserted.add(new)
        # Pacing, not waiting: let remote edits cross ours in flight.
        await asyncio.sleep(rng.choice(pauses))
    return inserted, deleted
