"""Documents read from their Yjs update (as JSON, as text, as a length) away from the event loop.

Reading a document means applying its update to a fresh ``Doc``: a
fragmented 3 MB update takes most of a second, and pycrdt holds the GIL
all that time, so a worker *thread* would still stall the event loop
(issue #18, finding 4: one JSON GET of a 4 MB document held the loop for
707 ms).  ``Renderer`` therefore runs these functions in worker processes;
only updates too small to matter are read inline.  A worker also contains
what a hostile document can do to a reader: yrs overflows its stack (the
process dies) converting values nested 100,000 deep, which here breaks one
worker, not the server.

The functions below are pure: bytes in, plain values out; each builds its
own ``Doc``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from . import text as ytext
from .protocol import MAX_DEPTH

log = logging.getLogger("collab.render")

T = TypeVar("T")

#: Updates up to this size are read on the event loop: a worker round trip
#: costs more, and values this small cannot nest deep enough to hurt yrs.
INLINE_LIMIT = 4096


class RenderError(ValueError):
    """The document cannot be shown the way it was asked for; ``code`` says why."""

    code = "unrenderable"
    status = 422


class TooDeep(RenderError):
    code = "too_deep"


class NotText(RenderError):
    code = "not_text"
    status = 409


class BadStateVector(RenderError):
    code = "invalid_state_vector"
    status = 400


class RenderCrashed(RenderError):
    """A worker died reading the document (yrs overflowed its stack)."""

    code = "unrenderable"


class RendererBusy(Exception):
    """Every worker slot is taken: try again shortly."""


# -- pure functions, run in a worker --------------------------------------------------


def load(update: bytes) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    if update:
        doc.apply_update(update)
    return doc


def document_content(update: bytes) -> dict[str, Any]:
    """Each root as JSON: ``Text`` as a string, ``Map``/``Array`` as JSON, XML as a string.

    A Yjs update does not record root types, so each root is read as every
    kind and the reading that finds content wins (an empty root reads as "").
    Values nested deeper than ``MAX_DEPTH`` raise ``TooDeep``.
    """
    doc = load(update)
    return {key: _root_value(doc, key) for key in sorted(doc.keys())}


def document_json(update: bytes) -> bytes:
    """``document_content`` encoded, so the worker does the encoding too."""
    return json.dumps(document_content(update), ensure_ascii=False).encode()


def text_content(update: bytes, root: str) -> str:
    """The ``Text`` root ``root`` ("" when absent); ``NotText`` if it holds a map or list."""
    doc = load(update)
    if root not in doc.keys():  # noqa: SIM118 (Doc has no __contains__ in its types)
        return ""
    return _text_root(doc, root)


def text_length(update: bytes | None, root: str = "text") -> int | None:
    """Characters of the ``Text`` root ``root``; None when it is something else."""
    if update is None:
        return None
    try:
        return len(text_content(update, root))
    except RenderError:
        return None


def replace_update(update: bytes, root: str, new: str) -> bytes | None:
    """The update that turns root ``root`` into ``new`` by ``collab.text.replace``.

    Computed on a copy: applied to the live document afterwards, it merges
    with whatever was typed meanwhile like any concurrent edit.  None when
    the text is ``new`` already.
    """
    doc = load(update)
    if root in doc.keys():  # noqa: SIM118
        _text_root(doc, root)  # refuses a map or list
    text = doc.get(root, type=Text)
    if str(text) == new:
        return None
    before = doc.get_state()
    ytext.replace(text, new)
    # Everything after ``before`` plus the whole delete set: deletions too.
    return doc.get_update(before)


def diff_update(update: bytes, state_vector: bytes) -> bytes:
    """What a peer at ``state_vector`` lacks; ``BadStateVector`` if it is not one."""
    doc = load(update)
    try:
        return doc.get_update(state_vector)
    except Exception as exc:
        raise BadStateVector(f"sv is not a Yjs state vector: {exc}") from None


def _text_root(doc: Doc[Any], root: str) -> str:
    value = str(doc.get(root, type=Text))
    if not value and (len(doc.get(root, type=Map)) or len(doc.get(root, type=Array))):
        raise NotText(f"root {root!r} holds a map or a list, not text")
    return value


def _root_value(doc: Doc[Any], key: str) -> Any:
    as_map = doc.get(key, type=Map)
    if len(as_map):
        return _json(as_map, 1)
    value = str(doc.get(key, type=Text))
    if value:
        return value
    as_array = doc.get(key, type=Array)
    if not len(as_array):
        return ""
    items = list(as_array)
    if any(isinstance(item, (XmlElement, XmlText)) for item in items):
        return str(doc.get(key, type=XmlFragment))  # XML has no JSON form: show the markup
    return [_json(item, 2) for item in items]


def _json(value: Any, depth: int) -> Any:
    """``value`` as JSON, refusing nesting beyond ``MAX_DEPTH`` (never a RecursionError)."""
    if depth > MAX_DEPTH:
        raise TooDeep(f"values nested deeper than {MAX_DEPTH} levels cannot be shown as JSON")
    if isinstance(value, Map):
        return {key: _json(item, depth + 1) for key, item in value.items()}
    if isinstance(value, Array):
        return [_json(item, depth + 1) for item in value]
    if isinstance(value, (Text, XmlFragment, XmlElement, XmlText)):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _json(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(item, depth + 1) for item in value]
    if isinstance(value, float):
        # Yjs numbers are doubles: whole ones print as integers, as in
        # JavaScript, and NaN/Infinity as null, as JSON.stringify does.
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


# -- running them ---------------------------------------------------------------------


def default_workers() -> int:
    """Half the cores (at least one, at most four): the rest serve the editors."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class Renderer:
    """Runs the functions above in worker processes, started on first use.

    At most ``4 * workers`` renders wait or run at once; beyond that
    ``RendererBusy`` is raised rather than letting a queue grow without
    bound.  A worker that dies is replaced, and its render raises
    ``RenderCrashed``.
    """

    def __init__(self, workers: int | None = None, inline_limit: int = INLINE_LIMIT) -> None:
        self.workers = workers or default_workers()
        self.inline_limit = inline_limit
        self._pool: ProcessPoolExecutor | None = None
        self._slots = 4 * self.workers
        self._busy = 0

    async def run(self, fn: Callable[..., T], update: bytes, *args: Any) -> T:
        """``fn(update, *args)``: inline when ``update`` is tiny, else in a worker."""
        if len(update) <= self.inline_limit:
            return fn(update, *args)
        if self._busy >= self._slots:
            raise RendererBusy(f"{self._busy} documents are being read already")
        self._busy += 1
        pool = self._executor()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, update, *args)
        except BrokenProcessPool:
            log.error("a render worker died reading a %d-byte update; replacing it", len(update))
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise RenderCrashed(
                "the document cannot be read (its values nest too deeply?): "
                "export it as a Yjs update instead"
            ) from None
        finally:
            self._busy -= 1

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a fork of a multi-threaded server (store threads) may deadlock.
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    async def close(self) -> None:
        """Stop the workers; a render still running is abandoned, not waited for."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # A shutdown waits for running renders (seconds, for a big document),
        # and shutdown must not: end the workers first (Python 3.14 has
        # terminate_workers(); before it, only the private process table).
        processes = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            process.terminate()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
