#!/usr/bin/env python
"""What version history costs (issue #14): storage, load time and listing speed.

Three measurements on a real store (SQLite by default; ``--store
postgresql://...`` for PostgreSQL), each printed as one JSON line:

* ``storage``: five typists type into one document (one update per
  keystroke, round-robin, as five people typing at once do), with history
  on and off.  Reported: the log bytes per update kept as history, the bytes
  of the checkpoints, and from those the bytes one day of continuous typing
  adds (``--rate`` keystrokes per second per typist, a checkpoint every
  ``checkpoint_every`` seconds of that day).  The typing runs as fast as the
  store takes it, so the day is extrapolated from the measured bytes per
  update and per checkpoint, not waited for.
* ``load``: a document of ``--doc-mb`` MB built by many edits and compacted
  again and again with history on (its whole past kept: log rows plus
  checkpoints) against the same edits with history off; the median time of
  ``store.load`` over ``--repeat`` loads.  The target: within 10 %.
* ``listing``: ``--updates`` rows of one document by five authors, then the
  median time of the newest history page (``history_sessions``, 50
  sessions; the whole log is grouped by SQL window functions).  Target:
  under 100 ms for 100,000 updates.

    .venv/bin/python -m bench.history               # the figures (quiet machine!)
    .venv/bin/python -m bench.history --small       # a quick run that shows it works
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from collab.store import open_store

TYPISTS = 5


async def _store(url: str, *, history: bool, **options: Any) -> Any:
    store: Any = open_store(url, **options)
    await store.open()
    store.history_retention = 30 * 86400.0 if history else 0.0
    store.trash_retention = 0.0
    return store


async def _reset(url: str) -> None:
    """A PostgreSQL database is reused between runs: drop collab's tables."""
    if not url.startswith(("postgres://", "postgresql://")):
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'collab_%%'"
            " AND schemaname = current_schema()"
        )
        for (table,) in await cur.fetchall():
            await conn.execute(f"DROP TABLE {table} CASCADE")


def _url(base: str | None, folder: Path, name: str) -> str:
    return base or f"sqlite:///{folder / name}"


class Typists:
    """Five editors on one document, each of whose keystrokes is one update."""

    def __init__(self) -> None:
        self.docs: list[Doc[Any]] = [Doc() for _ in range(TYPISTS)]
        self.updates: list[bytes] = []
        for doc in self.docs:
            doc.observe(lambda event: self.updates.append(event.update))

    def keystroke(self, i: int) -> tuple[str, bytes]:
        """Typist ``i % 5`` types one character at their own place; everyone receives it."""
        who = i % TYPISTS
        doc = self.docs[who]
        text = doc.get("text", type=Text)
        # Each typist writes in their own paragraph-ish region of the text.
        at = (len(text) * who) // TYPISTS
        text.insert(at, "abcdefghij \n"[i % 12])
        update = self.updates[-1]
        self.updates.clear()
        for j, other in enumerate(self.docs):
            if j != who:
                other.apply_update(update)
        self.updates.clear()
        return f"typist{who}", update


async def _sizes(store: Any, name: str) -> dict[str, int]:
    """Bytes kept per table for ``name``."""
    queries = {
        "snapshot": "SELECT COALESCE(SUM(LENGTH(snapshot)), 0) FROM collab_snapshots"
        " WHERE name = ?",
        "live_log": "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM collab_updates WHERE name = ?",
        "history_log": "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM collab_history WHERE name = ?",
        "checkpoints": "SELECT COALESCE(SUM(LENGTH(state)), 0) FROM collab_checkpoints"
        " WHERE name = ?",
        "history_rows": "SELECT COUNT(*) FROM collab_history WHERE name = ?",
        "checkpoint_count": "SELECT COUNT(*) FROM collab_checkpoints WHERE name = ?",
    }
    out = {}
    for key, sql in queries.items():
        if hasattr(store, "_fetchone"):  # SQLite: its reader thread
            row = await store._read(store._fetchone, sql, (name,))
        else:
            rows = await store._fetch(
                "bench",
                sql.replace("LENGTH(", "octet_length(").replace("?", "%s"),
                [name],
            )
            row = rows[0]
        out[key] = int(row[0])
    return out


async def storage(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"bench": "storage", "updates": args.keystrokes}
    for history in (True, False):
        url = _url(args.store, folder, f"storage-{history}.db")
        await _reset(url)
        store = await _store(url, history=history)
        store.checkpoint_every = 0.0  # keep every compaction's snapshot: bytes per checkpoint
        typists = Typists()
        try:
            for i in range(args.keystrokes):
                author, update = typists.keystroke(i)
                store.append("doc", update, author)
                if i % 500 == 499:  # as --compact-updates 500 does
                    await store.compact("doc")
            await store.compact("doc")
            sizes = await _sizes(store, "doc")
        finally:
            await store.close()
        results["history" if history else "no_history"] = sizes
    on = results["history"]
    per_update = on["history_log"] / max(1, on["history_rows"])
    per_checkpoint = on["checkpoints"] / max(1, on["checkpoint_count"])
    day_updates = TYPISTS * args.rate * 86400
    day_checkpoints = 86400 / args.checkpoint_every
    results["bytes_per_update"] = round(per_update, 1)
    results["bytes_per_checkpoint"] = round(per_checkpoint)
    results["per_day"] = {
        "typists": TYPISTS,
        "keystrokes_per_second_each": args.rate,
        "log_mb": round(day_updates * per_update / 1e6, 1),
        "checkpoints_mb": round(day_checkpoints * per_checkpoint / 1e6, 1),
        "note": "checkpoint size is that of the document typed here; a bigger document "
        "costs its size per checkpoint (one per checkpoint_every of activity)",
    }
    return results


def _big_update(megabytes: float) -> list[bytes]:
    """Edits that build a document of about ``megabytes`` MB (1 KB lines, 64 per update)."""
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    line = ("x" * 1023) + "\n"
    for _ in range(int(megabytes * 1024 / 64)):
        with doc.transaction():
            text.insert(len(text), line * 64)
    return updates


async def load(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    updates = _big_update(args.doc_mb)
    editor: Doc[Any] = Doc()
    for u in updates:
        editor.apply_update(u)
    text = editor.get("text", type=Text)
    edits: list[bytes] = []
    editor.observe(lambda event: edits.append(event.update))
    for i in range(args.edits):  # the "30 days": many small edits all over the document
        at = (i * 7919) % max(1, len(text))
        text.insert(at, "e")
    results: dict[str, Any] = {"bench": "load", "doc_mb": args.doc_mb, "edits": args.edits}
    for history in (True, False):
        url = _url(args.store, folder, f"load-{history}.db")
        await _reset(url)
        store = await _store(url, history=history, compact_updates=500)
        store.checkpoint_every = 0.0
        try:
            for u in updates:
                store.append("doc", u, "builder")
            await store.flush()
            await store.compact("doc")
            for i, u in enumerate(edits):
                store.append("doc", u, f"typist{i % TYPISTS}")
                if i % 500 == 499:
                    await store.flush()
                    await store.compact("doc")
            await store.flush()
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                state = await store.load("doc")
                times.append(time.perf_counter() - started)
            assert state is not None
            sizes = await _sizes(store, "doc")
        finally:
            await store.close()
        results["history" if history else "no_history"] = {
            "load_ms_median": round(statistics.median(times) * 1000, 1),
            "state_mb": round(len(state) / 1e6, 2),
            **sizes,
        }
    on, off = results["history"]["load_ms_median"], results["no_history"]["load_ms_median"]
    results["ratio"] = round(on / off, 3) if off else None
    return results


async def listing(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    url = _url(args.store, folder, "listing.db")
    await _reset(url)
    store = await _store(url, history=True, compact_updates=1000)
    store.checkpoint_every = 600.0
    typists = Typists()
    try:
        for i in range(args.updates):
            author, update = typists.keystroke(i)
            store.append("doc", update, author)
            if i % 2000 == 1999:
                await store.flush()
        await store.flush()
        await store.compact("doc")
        _, latest, _ = await store.history_bounds("doc")
        by_gap = {}
        # 1 ms: every commit its own session; 60 s: the whole log is one session.
        for gap in (0.001, 60.0):
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                sessions = await store.history_sessions("doc", latest + 1, gap, 51)
                times.append(time.perf_counter() - started)
            by_gap[f"gap_{gap:g}s"] = {
                "sessions_returned": len(sessions),
                "rows_in_them": sum(s.updates for s in sessions),
                "ms_median": round(statistics.median(times) * 1000, 1),
                "ms_max": round(max(times) * 1000, 1),
            }
    finally:
        await store.close()
    return {"bench": "listing", "updates": args.updates, "target_ms": 100, **by_gap}


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="collab-bench-history-") as tmp:
        folder = Path(tmp)
        for name in args.only or ("storage", "load", "listing"):
            result = await {"storage": storage, "load": load, "listing": listing}[name](
                args, folder
            )
            print(json.dumps(result), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--store", metavar="URL", help="PostgreSQL URL (default: SQLite files)")
    parser.add_argument("--small", action="store_true", help="tiny sizes: shows it works")
    parser.add_argument("--only", action="append", choices=("storage", "load", "listing"))
    parser.add_argument("--keystrokes", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=3.0, help="keystrokes/s per typist")
    parser.add_argument("--checkpoint-every", type=float, default=600.0)
    parser.add_argument("--doc-mb", type=float, default=10.0)
    parser.add_argument("--edits", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.small:
        args.keystrokes, args.doc_mb, args.edits, args.updates, args.repeat = (
            2000,
            0.5,
            1000,
            5000,
            3,
        )
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
