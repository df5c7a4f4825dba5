"""Version history: a document's past, read, compared and restored (issue #14).

The store keeps the log of the last ``--history-retention`` seconds and
checkpoints (``collab.store.history``); this module turns them into

* the state at a point (a seq, an ISO time or a version id): the newest
  checkpoint at or before it plus the log rows up to it;
* a diff between two points: a text diff per root for plain clients, and a
  Yjs snapshot pair from a replay into a ``Doc(skip_gc=True)`` for editors
  that render one (``YText.toDelta(snapTo, snapFrom)``).  Only that replay
  document keeps deleted content: live documents keep gc on, and
  ``Doc.from_snapshot`` (which panics on gc'd documents) is never called;
* a restore: a *forward* update computed on a fork with pycrdt's
  ``UndoManager`` (undo everything after the point, or only the listed
  authors' changes) and applied to the live room with a ``RestoreOrigin``,
  so it is broadcast, replicated, stored as one log row by
  ``restore:<principal>``, seen by hooks and reported as a ``doc.restored``
  event.  Because it is computed from item identities, edits the fork has
  not seen (someone typing meanwhile, an offline client) merge with it.

pycrdt holds the GIL while it applies updates, so replays of
``PROCESS_BYTES`` or more run in a worker process (diffs and restores here,
merges in the store's, JSON in the API's renderers) and smaller ones in a
thread; every pycrdt call here is wrapped so that a Rust panic
(``PanicException``, a ``BaseException``) becomes a ``HistoryError``.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import json
import logging
import math
import multiprocessing
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pycrdt import Array, Doc, Map, Snapshot, Text, UndoManager, XmlElement, XmlFragment, XmlText

from . import render
from .origins import ServerOrigin
from .store.events import EventDraft
from .store.history import PointRead, Session, TrashEntry, Version

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("collab.history")

T = TypeVar("T")

__all__ = [
    "History",
    "HistoryError",
    "RestoreOrigin",
    "iso",
    "parse_point",
]

#: The root whose text ``at`` reports as ``text`` (the browser editor's).
MAIN_ROOT = "text"
#: Texts longer than this are compared line by line only.
CHAR_DIFF_LIMIT = 20_000
#: Replays of this many bytes or more run in a worker process, not a thread:
#: pycrdt holds the GIL while it applies updates (as ``collab.store.merge``).
PROCESS_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class RestoreOrigin(ServerOrigin):
    """A restore made for ``principal``: its log row's author is ``restore:<principal>``."""

    principal: str = "server"

    @property
    def author(self) -> str:
        return f"restore:{self.principal}"


class HistoryError(Exception):
    """A history request that cannot be answered: HTTP ``status``, stable ``code``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def iso(t: float | None) -> str | None:
    """Unix time as ISO 8601 in UTC with milliseconds (``2026-12-02T12:00:00.123Z``)."""
    if t is None:
        return None
    # Rounded up: the time shown names the same seq when it is asked for.
    t = math.ceil(t * 1000) / 1000
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Point:
    """A point in a document's history as asked: exactly one of the three is set."""

    seq: int | None = None
    time: float | None = None
    version: str | None = None


def parse_point(raw: str | int | float | None) -> Point:
    """A seq (integer), a version id (``v_...``) or an ISO 8601 time (naive: UTC)."""
    if isinstance(raw, bool) or raw is None:
        raise HistoryError(400, "invalid_point", "a point is a seq, an ISO time or a version id")
    if isinstance(raw, int):
        return Point(seq=raw)
    if isinstance(raw, float):
        raise HistoryError(400, "invalid_point", "a seq is a whole number")
    text = raw.strip()
    if text.isdigit():
        return Point(seq=int(text))
    if text.startswith("v_"):
        return Point(version=text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise HistoryError(
            400,
            "invalid_point",
            f"{raw!r} is not a seq, an ISO 8601 time or a version id (v_...)",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Point(time=when.timestamp())


@contextmanager
def _panics(what: str) -> Iterator[None]:
    """pycrdt's Rust panics (``BaseException``) and errors as a ``HistoryError``."""
    try:
        yield
    except HistoryError:
        raise
    except Exception as exc:
        raise HistoryError(500, "history_failed", f"{what} failed: {exc}") from None
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        log.error("%s: pycrdt panicked: %s", what, exc)
        raise HistoryError(
            500, "history_failed", f"{what} failed (the CRDT library panicked)"
        ) from None


@dataclass(frozen=True, slots=True)
class State:
    """A document at a point: its seq, time and whole state as one update."""

    seq: int
    at: float | None
    update: bytes


class History:
    """The history engine of one ``Server`` (``server.history(...)`` and the HTTP API)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._pool: ProcessPoolExecutor | None = None

    async def close(self) -> None:
        """Stop the replay worker (a replay still running is abandoned)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def _replay(self, what: str, read: PointRead, fn: Callable[..., T], *args: Any) -> T:
        """``fn(read, *args)``: in a thread for small replays, else in a worker process."""
        if sum(len(data) for _, data in read.parts) < PROCESS_BYTES:
            return await self._run(what, fn, read, *args)
        if self._pool is None:
            # spawn: a fork of a multi-threaded server (store threads) may deadlock.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        pool = self._pool
        with _panics(what):
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, fn, read, *args)
            except BrokenProcessPool:
                if self._pool is pool:
                    self._pool = None
                raise HistoryError(500, "history_failed", f"{what}: the worker died") from None

    @property
    def store(self) -> Any:
        store = self.server.store
        if not hasattr(store, "point"):
            raise HistoryError(
                501,
                "history_unavailable",
                f"{type(store).__name__} keeps no history: use a SQLite or PostgreSQL store",
            )
        return store

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        with _panics(what):
            return await asyncio.to_thread(fn, *args)

    async def _merge(self, name: str, parts: list[tuple[str, bytes]]) -> bytes:
        with _panics(f"replaying {name!r}"):
            merged: bytes | None = await self.store.merger.merge(name, parts)
        return merged or b""

    async def _settle(self, name: str) -> None:
        """Make what the room holds durable, so that the log has it."""
        room = self.server.manager.rooms.get(name)
        if room is not None:
            room.flush()
        await self.store.flush()

    # -- points ---------------------------------------------------------------------------

    async def resolve(self, name: str, raw: str | int | Point) -> tuple[int, float | None]:
        """The seq (and its time) a point names; 404 when it names nothing of ``name``."""
        point = raw if isinstance(raw, Point) else parse_point(raw)
        store = self.store
        oldest, latest, pruned = await store.history_bounds(name)
        if latest is None:
            raise HistoryError(404, "not_found", f"no document named {name!r} has a history")
        if point.version is not None:
            version = await store.version(point.version)
            if version is None or version.name != name:
                raise HistoryError(404, "unknown_point", f"{name!r} has no version {point.version}")
            return version.seq, await store.at_of(name, version.seq) or version.at
        if point.time is not None:
            seq = await store.seq_at(name, point.time)
            if seq is None:
                raise HistoryError(
                    404, "unknown_point", f"{name!r} has no history as early as {iso(point.time)}"
                )
            if seq < pruned:
                nearest = await store.at_of(name, seq)
                raise HistoryError(
                    409,
                    "history_thinned",
                    f"the history of {name!r} around {iso(point.time)} was thinned; "
                    f"the nearest point kept is seq {seq}",
                    nearest={"seq": seq, "at": iso(nearest)},
                )
            return seq, point.time
        assert point.seq is not None
        if oldest is not None and 0 < point.seq < oldest and point.seq <= pruned:
            raise HistoryError(
                409,
                "history_thinned",
                f"the history of {name!r} before seq {oldest} was thinned away",
                nearest={"seq": oldest, "at": iso(await store.at_of(name, oldest))},
            )
        if point.seq > latest or (oldest is not None and point.seq < oldest):
            raise HistoryError(
                404,
                "unknown_point",
                f"{name!r} has no seq {point.seq} (its history spans {oldest} to {latest})",
            )
        return point.seq, await store.at_of(name, point.seq)

    async def _read(self, name: str, seq: int, base_max: int | None = None) -> PointRead:
        read: PointRead = await self.store.point(name, seq, base_max)
        return read

    def _check_exact(self, name: str, read: PointRead, seq: int) -> None:
        if read.exact or (read.base is not None and read.base.seq == seq):
            return
        nearest = read.base
        raise HistoryError(
            409,
            "history_thinned",
            f"the history of {name!r} at seq {seq} was thinned"
            + (f"; the nearest point kept is seq {nearest.seq}" if nearest else ""),
            nearest=None if nearest is None else {"seq": nearest.seq, "at": iso(nearest.at)},
        )

    async def state(self, name: str, point: str | int | Point) -> State:
        """The document ``name`` at ``point`` as one update (409 if thinning took it)."""
        seq, at = await self.resolve(name, point)
        read = await self._read(name, seq)
        self._check_exact(name, read, seq)
        return State(seq, at, await self._merge(name, read.parts))

    async def at(self, name: str, point: str | int | Point) -> dict[str, Any]:
        """``{"doc", "seq", "at", "roots", "text"}``: the document at ``point`` as JSON."""
        state = await self.state(name, point)
        roots = await self._content(name, state.update)
        text = roots.get(MAIN_ROOT)
        return {
            "doc": name,
            "seq": state.seq,
            "at": iso(state.at),
            "roots": roots,
            "text": text if isinstance(text, str) else None,
        }

    async def _content(self, name: str, update: bytes) -> dict[str, Any]:
        """Each root as JSON, decoded in the HTTP API's worker processes when it has them
        (decoding holds the GIL: a big document in a thread would stall the loop)."""
        from .http_api import API

        try:
            renderer = self.server.app[API].renderer
        except KeyError:
            return await self._run(f"reading {name!r}", render.document_content, update)
        with _panics(f"reading {name!r}"):
            try:
                content: dict[str, Any] = await renderer.run(render.document_content, update)
            except render.RenderError as exc:
                raise HistoryError(exc.status, exc.code, str(exc)) from None
            except render.RendererBusy as exc:
                raise HistoryError(
                    503, "busy", f"too many documents are being read: {exc}"
                ) from None
        return content

    # -- the timeline -----------------------------------------------------------------------

    async def history(
        self, name: str, *, limit: int = 50, before: int | None = None, gap_ms: float = 60_000
    ) -> dict[str, Any]:
        """Editing sessions newest first (a pause over ``gap_ms`` starts a new one), the
        thinned checkpoints beyond the log, and the named versions."""
        store = self.store
        oldest, latest, _ = await store.history_bounds(name)
        if latest is None:
            raise HistoryError(404, "not_found", f"no document named {name!r} has a history")
        upper = before if before is not None else latest + 1
        sessions: list[Session] = await store.history_sessions(
            name, upper, gap_ms / 1000, limit + 1
        )
        # Checkpoints older than every row left: what thinning kept of the past.
        first_row = min((s.from_seq for s in sessions), default=upper)
        if len(sessions) <= limit:
            checkpoints = await store.history_checkpoints(name)
            sessions += [
                Session(cp.seq, cp.seq, cp.at, cp.at, (), 0, 0, thinned=True)
                for cp in reversed(checkpoints)
                if cp.seq < first_row and cp.seq < upper and cp.seq > 0
            ]
        more = len(sessions) > limit
        sessions = sessions[:limit]
        versions = await store.versions(name)
        return {
            "doc": name,
            "sessions": [_session_json(s) for s in sessions],
            "next": sessions[-1].from_seq if more and sessions else None,
            "versions": [version_json(v) for v in versions],
            "oldest_seq": oldest,
            "latest_seq": latest,
        }

    # -- diff -------------------------------------------------------------------------------

    async def diff(
        self, name: str, from_point: str | int | Point, to_point: str | int | Point | None = None
    ) -> dict[str, Any]:
        """Text diff per root and the Yjs snapshot pair between two points (``to``: now)."""
        await self._settle(name)
        from_seq, from_at = await self.resolve(name, from_point)
        if to_point is None:
            _, latest, _ = await self.store.history_bounds(name)
            to_seq, to_at = int(latest), await self.store.at_of(name, int(latest))
        else:
            to_seq, to_at = await self.resolve(name, to_point)
        if to_seq < from_seq:
            raise HistoryError(400, "invalid_range", "'to' is before 'from'")
        read = await self._read(name, to_seq, base_max=from_seq)
        self._check_exact(name, read, from_seq)
        result = await self._replay(f"comparing {name!r}", read, compute_diff, from_seq)
        result["from"] = {"seq": from_seq, "at": iso(from_at)}
        result["to"] = {"seq": to_seq, "at": iso(to_at)}
        return result

    # -- restore ----------------------------------------------------------------------------

    async def restore(
        self,
        name: str,
        to: str | int | Point,
        *,
        by: Sequence[str] | None = None,
        principal: str = "server",
        key: str | None = None,
    ) -> dict[str, Any]:
        """Bring ``name`` back to ``to`` (or undo only ``by``'s changes since) as a forward
        update through the live room; ``key`` makes a retry answer the first result."""
        store = self.store
        if key is not None:
            done = await store.claim(f"{name}\x1f{key}", name)
            if done:
                result: dict[str, Any] = json.loads(done)
                return result
            if done == "":
                raise HistoryError(
                    409, "restore_in_progress", "a restore with this Idempotency-Key is running"
                )
        try:
            result = await self._restore(name, to, by, principal)
        except BaseException:
            if key is not None:
                await store.settle(f"{name}\x1f{key}", None)
            raise
        if key is not None:
            await store.settle(f"{name}\x1f{key}", json.dumps(result))
        return result

    async def _restore(
        self, name: str, to: str | int | Point, by: Sequence[str] | None, principal: str
    ) -> dict[str, Any]:
        store = self.store
        to_seq, to_at = await self.resolve(name, to)
        origin = RestoreOrigin("restore", principal)
        size = 0
        async with self.server.open_document(name, origin=origin) as handle:
            await self._settle(name)
            _, latest, _ = await store.history_bounds(name)
            read = await self._read(name, int(latest), base_max=to_seq)
            self._check_exact(name, read, to_seq)
            live_state = handle.doc.get_state()
            revert = await self._replay(
                f"restoring {name!r}", read, compute_revert, to_seq, by, live_state
            )
            if revert is not None:
                size = len(revert)
                with _panics(f"applying the restore of {name!r}"), handle.transaction():
                    handle.doc.apply_update(revert)
        seq = None
        if revert is not None:
            mine = [e.id for e in await store.entries(name) if e.author == origin.author]
            seq = max(mine) if mine else None
            await store.record_event(
                EventDraft(
                    "doc.restored",
                    name,
                    seq or to_seq,
                    seq or to_seq,
                    (origin.author,),
                    1,
                    size,
                    time.time(),
                )
            )
        log.info(
            "restored %r to seq %d%s for %s (%d bytes)",
            name,
            to_seq,
            f" undoing {', '.join(by)}" if by else "",
            principal,
            size,
            extra={"doc": name, "user": principal},
        )
        return {"seq": seq, "bytes": size, "restored_to": {"seq": to_seq, "at": iso(to_at)}}

    # -- versions ----------------------------------------------------------------------------

    async def versions(self, name: str) -> list[Version]:
        result: list[Version] = await self.store.versions(name)
        return result

    async def create_version(self, name: str, label: str, created_by: str | None) -> Version:
        """Name the document's current state; it survives thinning."""
        store = self.store
        await self._settle(name)
        _, latest, _ = await store.history_bounds(name)
        if latest is None:
            raise HistoryError(404, "not_found", f"no document named {name!r}")
        read = await self._read(name, int(latest))
        state = await self._merge(name, read.parts)
        version = Version(
            "v_" + secrets.token_urlsafe(9), name, int(latest), time.time(), label, created_by
        )
        await store.add_version(version, state)
        return version

    async def delete_version(self, name: str, version_id: str) -> bool:
        result: bool = await self.store.delete_version(name, version_id)
        return result

    # -- trash -------------------------------------------------------------------------------

    async def trash(self) -> list[TrashEntry]:
        result: list[TrashEntry] = await self.store.trash()
        return result

    async def untrash(self, name: str) -> None:
        """Bring a deleted document back with its history (409 if the name is taken)."""
        store = self.store
        entries = await store.trash(name)
        if not entries:
            raise HistoryError(404, "not_found", f"no document named {name!r} is in the trash")
        entry = entries[0]
        read = await store.point(name, entry.seq)
        state = await self._merge(name, read.parts)
        outcome = await store.untrash(name, entry.seq, state)
        if outcome == "taken":
            raise HistoryError(
                409, "name_taken", f"a document named {name!r} exists again; rename it first"
            )
        if outcome == "gone":
            raise HistoryError(404, "not_found", f"{name!r} left the trash meanwhile")

    async def purge(self, name: str) -> bool:
        result: bool = await self.store.purge(name)
        return result


def version_json(v: Version) -> dict[str, Any]:
    return {
        "id": v.id,
        "seq": v.seq,
        "at": iso(v.at),
        "label": v.label,
        "created_by": v.created_by,
    }


def _session_json(s: Session) -> dict[str, Any]:
    out: dict[str, Any] = {
        "from_seq": s.from_seq,
        "to_seq": s.to_seq,
        "from_at": iso(s.from_at),
        "to_at": iso(s.to_at),
        "authors": list(s.authors),
        "updates": s.updates,
        "bytes": s.size,
    }
    if s.thinned:
        out["thinned"] = True
    return out


# -- pure functions, run in a thread ----------------------------------------------------------


def _split(read: PointRead, seq: int) -> tuple[list[bytes], list[tuple[str | None, bytes]]]:
    """The parts up to ``seq`` (checkpoint included) and ``(author, update)`` after it."""
    before: list[bytes] = []
    after: list[tuple[str | None, bytes]] = []
    offset = len(read.parts) - len(read.rows)
    before += [data for _, data in read.parts[:offset]]
    for (row_seq, _, author), (_, data) in zip(read.rows, read.parts[offset:], strict=True):
        if row_seq <= seq:
            before.append(data)
        else:
            after.append((author, data))
    return before, after


def _root_types(docs: Sequence[Doc[Any]]) -> dict[str, type]:
    """Each root's type, probed on documents holding it (a Yjs update has no types)."""
    kinds: dict[str, type] = {}
    for doc in docs:
        for key in doc.keys():  # noqa: SIM118 (Doc has no __iter__ in its types)
            if kinds.get(key, Text) is not Text:
                continue
            if len(doc.get(key, type=Map)):
                kinds[key] = Map
            elif str(doc.get(key, type=Text)):
                kinds[key] = Text
            elif len(array := doc.get(key, type=Array)):
                xml = any(isinstance(i, (XmlElement, XmlText)) for i in array)
                kinds[key] = XmlFragment if xml else Array
            else:
                kinds.setdefault(key, Text)
    return kinds


def _apply_all(doc: Doc[Any], updates: Sequence[bytes]) -> None:
    for update in updates:
        doc.apply_update(update)


def compute_revert(
    read: PointRead, to_seq: int, by: Sequence[str] | None, live_state: bytes
) -> bytes | None:
    """The forward update that undoes every change after ``to_seq`` (or ``by``'s only).

    A fork replays the document up to ``to_seq``, then the later rows
    under an ``UndoManager`` (each with its author as transaction origin),
    undoes them all, and hands over what it has that the live document
    (at ``live_state``) lacks: the undo's items and deletions.  None when
    there is nothing to undo.
    """
    before, after = _split(read, to_seq)
    if not after:
        return None
    probe_then: Doc[Any] = Doc()
    _apply_all(probe_then, before)
    probe_now: Doc[Any] = Doc()
    _apply_all(probe_now, before)
    _apply_all(probe_now, [u for _, u in after])
    kinds = _root_types([probe_then, probe_now])
    fork: Doc[Any] = Doc()
    _apply_all(fork, before)
    scopes = [fork.get(key, type=kind) for key, kind in sorted(kinds.items())]
    if not scopes:
        return None
    manager = UndoManager(scopes=scopes, capture_timeout_millis=0)
    manager.exclude_origin(None)
    authors = set(by) if by else {a for a, _ in after}
    for author in authors:
        manager.include_origin(author if author is not None else "")
    for author, update in after:
        with fork.transaction(origin=author if author is not None else ""):
            fork.apply_update(update)
    if not manager.can_undo():
        return None
    while manager.can_undo():
        manager.undo()
    revert: bytes = fork.get_update(live_state)
    return revert


def compute_diff(read: PointRead, from_seq: int) -> dict[str, Any]:
    """Replay into a ``Doc(skip_gc=True)``: snapshots at ``from_seq`` and at the end, the
    update that holds both, and a text diff of every root."""
    before, after = _split(read, from_seq)
    doc: Doc[Any] = Doc(skip_gc=True)
    _apply_all(doc, before)
    snapshot_from = Snapshot.from_doc(doc).encode()
    then = render.document_content(doc.get_update())
    _apply_all(doc, [u for _, u in after])
    snapshot_to = Snapshot.from_doc(doc).encode()
    update = doc.get_update()
    now = render.document_content(update)
    roots = {
        key: text_diff(_as_text(then.get(key)), _as_text(now.get(key)))
        for key in sorted(set(then) | set(now))
    }
    return {
        "roots": roots,
        "update": _b64(update),
        "snapshot_from": _b64(snapshot_from),
        "snapshot_to": _b64(snapshot_to),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


def text_diff(old: str, new: str) -> list[dict[str, str]]:
    """``[{"op": "equal"|"insert"|"delete", "text"}]`` turning ``old`` into ``new``:
    by line, then by character within changed lines (short texts)."""
    ops: list[dict[str, str]] = []

    def emit(op: str, text: str) -> None:
        if not text:
            return
        if ops and ops[-1]["op"] == op:
            ops[-1]["text"] += text
        else:
            ops.append({"op": op, "text": text})

    # What did not change at either end is one "equal" run: only the middle is
    # compared (an edit is local; difflib on thousands of alike lines is slow).
    head = _common_prefix(old, new)
    tail = _common_prefix(old[head:][::-1], new[head:][::-1])
    emit("equal", old[:head])
    old_mid, new_mid = old[head : len(old) - tail], new[head : len(new) - tail]
    a, b = old_mid.splitlines(keepends=True), new_mid.splitlines(keepends=True)
    lines = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in lines.get_opcodes():
        left, right = "".join(a[i1:i2]), "".join(b[j1:j2])
        if tag == "equal":
            emit("equal", left)
        elif tag == "replace" and len(left) + len(right) <= CHAR_DIFF_LIMIT:
            chars = difflib.SequenceMatcher(None, left, right, autojunk=False)
            for ctag, c1, c2, d1, d2 in chars.get_opcodes():
                if ctag == "equal":
                    emit("equal", left[c1:c2])
                else:
                    emit("delete", left[c1:c2])
                    emit("insert", right[d1:d2])
        else:
            emit("delete", left)
            emit("insert", right)
    emit("equal", old[len(old) - tail :])
    return ops


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix (binary search over C-speed slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
