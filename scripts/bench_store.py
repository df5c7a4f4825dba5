#!/usr/bin/env python
"""Updates per second through the real server: SQLite store vs memory store.

Starts ``collab.app.create_app`` in this process on a free port, once per
store, and drives it with ``--clients`` ``collab.client.Session``s spread
over ``--docs`` documents, each typing ``--updates`` small strings as fast
as it can.  A run ends when the server's documents hold every character
and ``store.flush()`` has returned (for SQLite: everything is committed).
Clients and server share one event loop, so the figures are for the whole
system on one core; what matters is the ratio between the stores.

    .venv/bin/python scripts/bench_store.py                 # ~20 s
    .venv/bin/python scripts/bench_store.py --clients 16 --updates 5000 --out bench-results/big.json

Writes the results as JSON to ``--out`` and one Markdown table row to the
same path with ``.md``, and prints the row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from pycrdt import Text

from collab import __version__
from collab.app import create_app
from collab.client import Session
from collab.config import Settings
from collab.keys import MANAGER, STORE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def type_fast(session: Session, count: int, piece: str) -> None:
    text = session.doc.get("text", type=Text)
    for i in range(count):
        text += piece
        if i % 32 == 31:
            await asyncio.sleep(0)  # let the socket writer run
    await session.drain(timeout=120)


async def one_run(store_url: str, args: argparse.Namespace) -> dict[str, Any]:
    # No rate limit: the clients send as fast as they can on purpose.
    settings = Settings(port=free_port(), store=store_url, rate_messages=1e12, rate_bytes=1e15)
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    url = f"ws://127.0.0.1:{settings.port}/ws"
    names = [f"bench-{i}" for i in range(args.docs)]
    sessions = [Session(url, names[i % args.docs], heartbeat=None) for i in range(args.clients)]
    try:
        for session in sessions:
            await session.start()
        await asyncio.gather(*(s.wait_synced(10) for s in sessions))
        store = app[STORE]
        rooms = app[MANAGER].rooms
        per_doc = {name: 0 for name in names}
        for i in range(args.clients):
            per_doc[names[i % args.docs]] += args.updates * len(args.piece)

        def applied() -> bool:
            return all(
                len(rooms[name].doc.get("text", type=Text)) == size
                for name, size in per_doc.items()
            )

        # Checked after every transaction the server applies: no polling.
        all_applied = asyncio.Event()

        check_scheduled = False

        def check() -> None:
            nonlocal check_scheduled
            check_scheduled = False
            if applied():
                all_applied.set()

        def on_change(_event: object) -> None:
            # Not inside the server's transaction: check once the loop is free.
            nonlocal check_scheduled
            if not check_scheduled:
                check_scheduled = True
                loop.call_soon(check)

        loop = asyncio.get_running_loop()

        subscriptions = [(rooms[name].doc, rooms[name].doc.observe(on_change)) for name in names]

        commits_before = getattr(store, "commits", 0)
        start = time.perf_counter()
        writers = [asyncio.create_task(type_fast(s, args.updates, args.piece)) for s in sessions]
        try:
            async with asyncio.timeout(args.timeout):
                await all_applied.wait()
        except TimeoutError:
            errors = {str(s.error) for s in sessions if s.error is not None}
            raise SystemExit(
                f"the server did not apply every update in {args.timeout}s {errors}"
            ) from None
        applied_at = time.perf_counter()
        for doc, subscription in subscriptions:
            doc.unobserve(subscription)
        await store.flush()
        done = time.perf_counter()
        await asyncio.gather(*writers)
        total = args.clients * args.updates
        load_start = time.perf_counter()
        await store.load(names[0])
        load_s = time.perf_counter() - load_start
        return {
            "updates": total,
            "seconds": done - start,
            "applied_seconds": applied_at - start,
            "updates_per_s": total / (done - start),
            "commits": getattr(store, "commits", 0) - commits_before,
            "load_ms": load_s * 1000,
        }
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await runner.cleanup()


async def bench(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"memory": [], "sqlite": []}
    for round_ in range(args.rounds):
        # Alternate the order so warm-up effects do not favour one store.
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
        for name in order:
            # A fresh database file for every SQLite run.
            url = "memory://" if name == "memory" else f"sqlite:///{folder}/bench-{round_}.db"
            result = await one_run(url, args)
            runs[name].append(result)
            print(
                f"  round {round_ + 1} {name:6}: {result['updates_per_s']:9.0f} updates/s"
                f" ({result['seconds']:.2f}s, {result['commits']} commits)",
                file=sys.stderr,
            )
    summary = {
        name: {
            "median_updates_per_s": statistics.median(r["updates_per_s"] for r in results),
            "best_updates_per_s": max(r["updates_per_s"] for r in results),
            "runs": results,
        }
        for name, results in runs.items()
    }
    ratio = summary["sqlite"]["median_updates_per_s"] / summary["memory"]["median_updates_per_s"]
    return {
        "benchmark": "store",
        "collab": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workload": {
            "clients": args.clients,
            "docs": args.docs,
            "updates_per_client": args.updates,
            "piece": args.piece,
            "rounds": args.rounds,
        },
        "results": summary,
        "sqlite_vs_memory": ratio,
        "sqlite_vs_memory_best": (
            summary["sqlite"]["best_updates_per_s"] / summary["memory"]["best_updates_per_s"]
        ),
    }


def markdown_row(report: dict[str, Any]) -> str:
    w = report["workload"]
    r = report["results"]
    return (
        f"| store | {w['clients']} clients / {w['docs']} docs x {w['updates_per_client']} updates"
        f" | memory {r['memory']['median_updates_per_s']:.0f}/s"
        f" | sqlite {r['sqlite']['median_updates_per_s']:.0f}/s"
        f" | sqlite/memory {report['sqlite_vs_memory']:.2f}"
        f" (best runs {report['sqlite_vs_memory_best']:.2f}) |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="sessions (default 8)")
    parser.add_argument("--docs", type=int, default=2, help="documents they share (default 2)")
    parser.add_argument(
        "--updates", type=int, default=8000, help="updates per client (default 8000)"
    )
    parser.add_argument("--piece", default="ab", help="string each update inserts")
    parser.add_argument("--rounds", type=int, default=3, help="runs per store (median reported)")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/store.json"))
    args = parser.parse_args(argv)
    if args.clients < 1 or args.docs < 1 or args.updates < 1 or args.rounds < 1 or not args.piece:
        parser.error("--clients, --docs, --updates and --rounds must be >= 1, --piece non-empty")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("collab.app").setLevel(logging.ERROR)  # "no --auth-secret" is expected
    folder = Path(tempfile.mkdtemp(prefix="collab-bench-"))
    try:
        report = asyncio.run(bench(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    row = markdown_row(report)
    report["markdown"] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(row + "\n")
    print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
