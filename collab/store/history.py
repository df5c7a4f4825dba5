"""What the SQLite and PostgreSQL stores keep for version history, and the rules they share.

With ``history_retention`` > 0 a compaction no longer throws the log away:

* the log rows it folds into the new snapshot move to ``collab_history``
  (same id, author and time, plus ``folded``: the seq of the snapshot that
  contains them), so the log of the last ``history_retention`` seconds stays;
* the snapshot it replaces becomes a checkpoint ``collab_checkpoints(name,
  seq, at, state)`` when the newest checkpoint is ``checkpoint_every``
  seconds older (checkpoints only make replay shorter while the log is
  there; beyond the window they are all that is left);
* ``collab_snapshots.seq`` says which log rows the snapshot holds, so the
  snapshot is the newest checkpoint and loading a document still reads one
  snapshot plus the live log (the cost of today).

Beyond the window, history rows go once a checkpoint older than the window
holds them (``collab_history_meta.pruned_seq`` remembers up to where), and
checkpoints thin to the last one per hour for ``THIN_HOURLY`` seconds, then
to the last one per day.  Checkpoints that named versions point at are
never thinned.

A state at seq ``P`` is the newest checkpoint at or before ``P`` plus the
rows up to ``P`` it does not hold; it is exact when that checkpoint is at or
after ``pruned_seq`` (every row it would need is still there).  Applying a
Yjs update twice changes nothing, so a replay may include rows the
checkpoint already holds.

Deleting a document with ``trash_retention`` > 0 moves it to
``collab_trash``: its snapshot becomes a checkpoint and its live log moves
to the history, so it can be undeleted with its history until
``purge_at``.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHECKPOINT_EVERY",
    "THIN_HOURLY",
    "Checkpoint",
    "HistoryUnavailable",
    "PointRead",
    "Session",
    "TrashEntry",
    "Version",
    "list_sessions",
    "thin",
]

#: Seconds between checkpoints kept while the log is there (10 minutes).
CHECKPOINT_EVERY = 600.0
#: Seconds beyond the window during which one checkpoint per hour is kept; then one a day.
THIN_HOURLY = 30 * 86400.0


class HistoryUnavailable(Exception):
    """The store keeps no history (the memory store)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    at: float


@dataclass(frozen=True, slots=True)
class Session:
    """A run of log rows with no pause longer than the gap asked for."""

    from_seq: int
    to_seq: int
    from_at: float
    to_at: float
    authors: tuple[str, ...]
    updates: int
    size: int
    #: A checkpoint whose log was thinned away (no rows, no authors known).
    thinned: bool = False


@dataclass(frozen=True, slots=True)
class Version:
    id: str
    name: str
    seq: int
    at: float
    label: str
    created_by: str | None


@dataclass(frozen=True, slots=True)
class TrashEntry:
    name: str
    seq: int
    deleted_at: float
    deleted_by: str | None
    purge_at: float


@dataclass(frozen=True, slots=True)
class PointRead:
    """What replaying a document up to ``seq`` needs, read consistently."""

    seq: int
    #: The checkpoint the replay starts from (None: from the empty document).
    base: Checkpoint | None
    #: The checkpoint's state, then ``(label, update)`` of every row to apply, in order.
    parts: list[tuple[str, bytes]]
    #: ``(seq, at, author)`` of the rows in ``parts`` after the checkpoint.
    rows: list[tuple[int, float, str | None]]
    #: Whether every row up to ``seq`` is still there (thinning did not remove them).
    exact: bool


def thin(checkpoints: Sequence[Checkpoint], cutoff: float, keep: set[int]) -> list[int]:
    """The seqs of the checkpoints (all older than ``cutoff``) that thinning drops.

    Within ``THIN_HOURLY`` before ``cutoff`` the last checkpoint of each
    hour stays, before that the last of each day; ``keep`` (versions' seqs)
    always stays.
    """
    last: dict[tuple[str, int], Checkpoint] = {}
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        if cp.at >= cutoff:
            continue
        bucket = (
            ("h", math.floor(cp.at / 3600))
            if cp.at >= cutoff - THIN_HOURLY
            else (
                "d",
                math.floor(cp.at / 86400),
            )
        )
        last[bucket] = cp
    kept = {cp.seq for cp in last.values()} | keep
    return [cp.seq for cp in checkpoints if cp.at < cutoff and cp.seq not in kept]


#: A query the session lister asks for (``?`` placeholders) and the rows it gets back.
Query = tuple[str, tuple[Any, ...]]
Lister = Generator[Query, list[tuple[Any, ...]], list[Session]]

# History rows keep, besides their own time, size and author: ``gap`` (seconds
# since the row before; NULL for a document's first), and running totals
# ``cum_n`` / ``cum_bytes``.  A session starts at a row whose gap exceeds the one
# asked for, so a page needs the boundaries (one backward scan of a covering
# index, no table rows) and two totals per session, never the rows between:
# a 100,000-row session costs what a 10-row one does.
LIVE_ROWS = (
    "SELECT id, created_at, author, LENGTH(data) FROM collab_updates"
    " WHERE name = ? AND id < ? ORDER BY id"
)
_LAST_ROW = (
    "SELECT id, created_at, cum_n, cum_bytes, size FROM collab_history"
    " WHERE name = ? AND id < ? ORDER BY id DESC LIMIT 1"
)
# Only the ids: the scan stays in the covering index (name, id, gap).
_BOUNDARIES = (
    "SELECT id FROM collab_history"
    " WHERE name = ? AND id < ? AND (gap IS NULL OR gap > ?) ORDER BY id DESC LIMIT ?"
)
_ROWS_BY_ID = (
    "SELECT id, created_at, cum_n, cum_bytes, size FROM collab_history"
    " WHERE name = ? AND id IN ({}) ORDER BY id DESC"
)
_FIRST_ROW = (
    "SELECT id, created_at, cum_n, cum_bytes, size FROM collab_history"
    " WHERE name = ? ORDER BY id LIMIT 1"
)
_NEXT_AUTHOR = "SELECT MIN(author) FROM collab_history WHERE name = ? AND author > ?"
_AUTHOR_IN = (
    "SELECT 1 FROM collab_history WHERE name = ? AND author = ? AND id >= ? AND id <= ? LIMIT 1"
)
_NO_AUTHOR_IN = (
    "SELECT 1 FROM collab_history WHERE name = ? AND author IS NULL AND id >= ? AND id <= ? LIMIT 1"
)


def list_sessions(name: str, before: int, gap: float, limit: int) -> Lister:
    """Up to ``limit`` sessions below seq ``before``, newest first: a generator that
    yields queries and is sent their rows (each backend drives it its own way)."""
    live = yield LIVE_ROWS, (name, before)
    last = yield _LAST_ROW, (name, before)
    # The live log (at most a compaction's worth of rows), grouped here.
    groups: list[list[tuple[Any, ...]]] = []
    prev_at = float(last[0][1]) if last else None
    for row in live:
        at = float(row[1])
        if not groups or (prev_at is not None and at - prev_at > gap):
            groups.append([])
        groups[-1].append(row)
        prev_at = at
    joins_history = bool(last and live) and float(live[0][1]) - float(last[0][1]) <= gap
    live_sessions = [_live_session(g) for g in groups]
    # The history: boundaries newest first, each session up to the row before the next.
    history: list[Session] = []
    if last:
        ids = yield _BOUNDARIES, (name, before, gap, limit + 2)
        bounds: list[tuple[Any, ...]] = []
        if ids:
            marks = ", ".join("?" * len(ids))
            bounds = yield _ROWS_BY_ID.format(marks), (name, *(i for (i,) in ids))
        if len(ids) < limit + 2:
            first = yield _FIRST_ROW, (name,)
            if first and (not bounds or bounds[-1][0] != first[0][0]):
                bounds = [*bounds, first[0]]
        end = last[0]
        authors_all: list[str | None] = []
        if bounds:
            authors_all = yield from _authors(name)
        for start in bounds:
            names = yield from _present(name, authors_all, int(start[0]), int(end[0]))
            history.append(
                Session(
                    int(start[0]),
                    int(end[0]),
                    float(start[1]),
                    float(end[1]),
                    names,
                    int(end[2]) - int(start[2]) + 1,
                    int(end[3]) - int(start[3]) + int(start[4]),
                )
            )
            rows = yield _LAST_ROW, (name, int(start[0]))
            if not rows:
                break
            end = rows[0]
    if joins_history and history:
        # The oldest live group continues the newest history session.
        older, newer = history[0], live_sessions[0]
        history[0] = Session(
            older.from_seq,
            newer.to_seq,
            older.from_at,
            newer.to_at,
            tuple(sorted(set(older.authors) | set(newer.authors))),
            older.updates + newer.updates,
            older.size + newer.size,
        )
        live_sessions = live_sessions[1:]
    sessions = [*reversed(live_sessions), *history]
    return sessions[:limit]


def _live_session(rows: list[tuple[Any, ...]]) -> Session:
    return Session(
        int(rows[0][0]),
        int(rows[-1][0]),
        float(rows[0][1]),
        float(rows[-1][1]),
        tuple(sorted({r[2] for r in rows if r[2] is not None})),
        len(rows),
        sum(int(r[3]) for r in rows),
    )


def _authors(name: str) -> Generator[Query, list[tuple[Any, ...]], list[str | None]]:
    """Every author of the document's history rows (one index seek each)."""
    found: list[str | None] = []
    after = ""
    while True:
        rows = yield _NEXT_AUTHOR, (name, after)
        if not rows or rows[0][0] is None:
            break
        after = rows[0][0]
        found.append(after)
    rows = yield _NO_AUTHOR_IN, (name, 0, 2**62)
    if rows:
        found.append(None)
    return found


def _present(
    name: str, authors: list[str | None], lo: int, hi: int
) -> Generator[Query, list[tuple[Any, ...]], tuple[str, ...]]:
    """The authors with a row in ``[lo, hi]`` (one index seek each)."""
    present = []
    for author in authors:
        if author is None:
            continue
        rows = yield _AUTHOR_IN, (name, author, lo, hi)
        if rows:
            present.append(author)
    return tuple(sorted(present))
