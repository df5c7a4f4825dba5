"""Micro-bench of ingest (issue #16): appending to a big document, one update at a time or merged.

yrs spends time in proportion to the document on every update appended to
it, so the room merges what a connection sends in one event-loop turn
before applying it (``Room.receive``), and the store merges a long log in
groups before applying it (``collab/store/worker.py merge_parts``).  This
measures both against applying one update at a time::

    .venv/bin/python -m bench.ingest                       # 5,000 appends of 100 B to 2 MB
    .venv/bin/python -m bench.ingest --updates 500 --base 0  # small, to show it works

Run it on a quiet machine for figures: it measures CPU time of one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from pycrdt import Doc, Text

from collab import protocol
from collab.channel import Kind, Received
from collab.connection import Connection
from collab.room import Room
from collab.store.worker import merge_parts


class _Sink:
    """A channel that takes every frame at once (what the bench measures is the room)."""

    async def send(self, frame: bytes) -> None:
        return None

    def receive(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def classify(self, raw: Any) -> Received:
        return Received(Kind.CLOSED)

    async def pong(self, data: bytes) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self, code: int, reason: str) -> None:
        return None

    def abort(self) -> None:
        return None


def appends(base: int, count: int, size: int) -> tuple[bytes, list[bytes]]:
    """A document of ``base`` bytes of text and ``count`` updates each appending ``size`` bytes."""
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    line = "x" * (size - 1) + "\n"
    chunk = line * max(1, 64 * 1024 // size)
    while len(text) < base:
        text += chunk
    initial = doc.get_update()
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(event.update))
    for _ in range(count):
        text += line
    doc.unobserve(sub)
    return initial, updates


async def room_ingest(initial: bytes, updates: Sequence[bytes], batch: int) -> float:
    """Seconds to take ``updates`` from one connection, ``batch`` per event-loop turn
    (0: one by one, applied as they come, as before issue #16)."""
    room = Room("bench")
    room.load(initial)
    conn = Connection(_Sink(), doc="bench", peer="bench")
    room.join(conn)
    frames = [protocol.sync_update(u) for u in updates]
    started = time.perf_counter()
    if batch == 0:
        for frame in frames:
            room.handle(conn, frame)
            await asyncio.sleep(0)
    else:
        for i, frame in enumerate(frames, 1):
            room.receive(conn, frame)
            if i % batch == 0:
                await asyncio.sleep(0)
        room.flush()
    elapsed = time.perf_counter() - started
    expected: Doc[Any] = Doc()
    expected.apply_update(initial)
    for update in updates:
        expected.apply_update(update)
    assert str(room.doc.get("text", type=Text)) == str(expected.get("text", type=Text))
    await room.close()
    return elapsed


def store_load(initial: bytes, updates: Sequence[bytes]) -> tuple[float, float]:
    """Seconds to build the document from snapshot + log: one by one, and ``merge_parts``."""
    started = time.perf_counter()
    doc: Doc[Any] = Doc()
    doc.apply_update(initial)
    for update in updates:
        doc.apply_update(update)
    one_by_one = time.perf_counter() - started
    started = time.perf_counter()
    parts = [("snapshot", initial), *((f"log {i}", u) for i, u in enumerate(updates))]
    merged = merge_parts(parts)
    grouped = time.perf_counter() - started
    assert merged is not None
    check: Doc[Any] = Doc()
    check.apply_update(merged)
    assert str(check.get("text", type=Text)) == str(doc.get("text", type=Text))
    return one_by_one, grouped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=int, default=2 * 1024 * 1024, help="bytes of text first")
    parser.add_argument("--updates", type=int, default=5000, help="appended updates")
    parser.add_argument("--size", type=int, default=100, help="bytes per appended update")
    parser.add_argument("--batch", type=int, nargs="*", default=[10, 64], help="updates per turn")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    initial, updates = appends(args.base, args.updates, args.size)
    results: dict[str, float] = {}
    results["room one by one s"] = asyncio.run(room_ingest(initial, updates, 0))
    for batch in args.batch:
        results[f"room {batch} per turn s"] = asyncio.run(room_ingest(initial, updates, batch))
    one, grouped = store_load(initial, updates)
    results["store load one by one s"] = one
    results["store load merge_parts s"] = grouped
    if args.json:
        shape = {"base": args.base, "updates": args.updates, "size": args.size}
        print(json.dumps({**shape, **results}))
        return 0
    print(f"{args.updates} appends of {args.size} B to a document of {args.base} B:")
    for name, seconds in results.items():
        per = seconds / args.updates * 1e6
        print(f"  {name[:-2]:<28} {seconds:8.3f} s  {per:8.1f} us/update")
    return 0


if __name__ == "__main__":
    sys.exit(main())
