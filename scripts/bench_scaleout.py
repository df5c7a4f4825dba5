#!/usr/bin/env python3
"""Deliveries per second for one document with its editors spread over 1, 2 and 3 processes.

    .venv/bin/python scripts/bench_scaleout.py [--readers 30] [--updates 2000]

One writer (on process 1) inserts ``--updates`` small strings as fast as
it can; ``--readers`` readers, spread round-robin over the processes,
count deliveries until each has seen the last one.  Readers do not keep a
Doc: they look for the writer's unique marker in the raw update bytes.
The baseline is one process without Redis.  Every process uses the same
PostgreSQL database and (when spread) a private Redis started here.

Writes a Markdown table and JSON to ``bench-results/scaleout.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pycrdt import Doc, Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collab import protocol  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def start_servers(
    count: int, store: str, redis_url: str | None
) -> list[tuple[subprocess.Popen[bytes], int]]:
    servers = []
    for _ in range(count):
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "collab",
            "serve",
            "--port",
            str(port),
            "--store",
            store,
            "--rate-messages",
            "1e9",
            "--rate-bytes",
            "1e12",
            "--log-level",
            "warning",
        ]
        if redis_url:
            args += ["--redis-url", redis_url]
        servers.append((subprocess.Popen(args, cwd=ROOT), port))  # noqa: ASYNC220 (a bench, not the server)
    for _, port in servers:
        await wait_port(port)
    return servers


async def reader(url: str, last: bytes, ready: asyncio.Event, done: list[float]) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        # Answer the server's step 1 with an empty state, like a fresh client.
        await ws.send_bytes(protocol.sync_step1(b"\x00"))
        ready.set()
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.BINARY:
                break
            if last in msg.data:
                done.append(time.perf_counter())
                return


async def run_once(
    processes: int, readers: int, updates: int, redis: bool, store: str, redis_url: str | None
) -> dict[str, float]:
    servers = await start_servers(processes, store, redis_url if redis else None)
    doc_name = f"bench-{secrets.token_hex(4)}"
    try:
        urls = [f"ws://127.0.0.1:{port}/ws/{doc_name}" for _, port in servers]
        marker = f"<{updates - 1}>".encode()
        done: list[float] = []
        readies = [asyncio.Event() for _ in range(readers)]
        tasks = [
            asyncio.create_task(reader(urls[i % processes], marker, readies[i], done))
            for i in range(readers)
        ]
        await asyncio.gather(*(r.wait() for r in readies))
        await asyncio.sleep(0.5)  # every process has the room open and subscribed
        doc: Doc = Doc()
        text = doc.get("text", type=Text)
        async with aiohttp.ClientSession() as http, http.ws_connect(urls[0]) as ws:
            start = time.perf_counter()
            for k in range(updates):
                before = doc.get_state()
                text.insert(len(text), f"<{k}>")
                await ws.send_bytes(protocol.sync_update(doc.get_update(before)))
            async with asyncio.timeout(120):
                await asyncio.gather(*tasks)
        elapsed = max(done) - start
        return {"seconds": elapsed, "deliveries_per_s": updates * readers / elapsed}
    finally:
        for proc, _ in servers:
            proc.terminate()
        for proc, _ in servers:
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=30)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "scaleout")
    args = parser.parse_args()

    import psycopg

    admin = psycopg.connect(POSTGRES, autocommit=True)
    db = f"collab_bench_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {db}")
    store = urlunsplit(urlsplit(POSTGRES)._replace(path="/" + db))
    workdir = tempfile.mkdtemp()
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    configs = [
        ("1 process, no Redis", 1, False),
        ("1 process + Redis", 1, True),
        ("2 processes + Redis", 2, True),
        ("3 processes + Redis", 3, True),
    ]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in configs}
    try:
        asyncio.run(wait_port(redis_port))
        for round_ in range(args.repeat):
            for label, processes, redis in configs:  # interleaved across rounds
                r = asyncio.run(
                    run_once(processes, args.readers, args.updates, redis, store, redis_url)
                )
                results[label].append(r)
                print(
                    f"round {round_ + 1} {label}: {r['deliveries_per_s']:,.0f} deliveries/s",
                    file=sys.stderr,
                )
    finally:
        redis_proc.terminate()
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    base = statistics.median(r["deliveries_per_s"] for r in results[configs[0][0]])
    rows = [
        "| setup | deliveries/s (median) | time to converge (s) | vs 1 process without Redis |",
        "| --- | ---: | ---: | ---: |",
    ]
    summary = {}
    for label, *_ in configs:
        rate = statistics.median(r["deliveries_per_s"] for r in results[label])
        secs = statistics.median(r["seconds"] for r in results[label])
        summary[label] = {"deliveries_per_s": rate, "seconds": secs, "runs": results[label]}
        rows.append(f"| {label} | {rate:,.0f} | {secs:.2f} | {rate / base:.2f}x |")
    table = "\n".join(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"1 writer, {args.readers} readers, {args.updates} updates, median of {args.repeat}\n\n"
    )
    args.out.with_suffix(".md").write_text(header + table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(header + table)


if __name__ == "__main__":
    main()
