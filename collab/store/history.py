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
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CHECKPOINT_EVERY",
    "THIN_HOURLY",
    "Checkpoint",
    "HistoryUnavailable",
    "PointRead",
    "Session",
    "TrashEntry",
    "Version",
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
