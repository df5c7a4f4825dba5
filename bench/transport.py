"""What the HTTP fallback transport costs next to WebSockets (issue #15).

    .venv/bin/python -m bench.transport                  # the full run (a quiet machine)
    .venv/bin/python -m bench.transport --small          # a few seconds, to see it works

Three measurements, each against a fresh ``collab serve`` (memory store):

* latency: one edit from a client over SSE (and over long-poll) until a
  WebSocket client has it, p50 and p99, next to WebSocket to WebSocket;
* memory per idle session: the server's RSS grown by N idle SSE sessions
  (stream open, synced) against N idle WebSocket connections, each kind on its
  own fresh server (freed memory is not given back to the system, so one
  server for both would flatter the second);
* many sessions at once: N SSE sessions open together on one document, and
  how long one edit takes to reach every one of them.

Results go to stdout as a table and, with ``--json FILE``, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from collab.client import Session
from collab.testing.server import ServerProcess


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.asynccontextmanager
async def serving(*args: str) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(
        "--store",
        "memory://",
        "--log-level",
        "warning",
        "--max-connections",
        "100000",
        # N sessions and the writer on one document: past the default 1,000.
        "--max-connections-per-doc",
        "100000",
        *args,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def open_sessions(server: ServerProcess, transports: list[str], doc: str) -> list[Session]:
    sessions = []
    for transport in transports:
        session = Session(server.ws_url, doc, transport=transport)
        await session.start()
        await session.wait_synced(20)
        sessions.append(session)
    return sessions


async def latency(server: ServerProcess, sender_transport: str, edits: int) -> dict[str, float]:
    """Seconds from an edit on a ``sender_transport`` client until a WebSocket client has it."""
    doc = f"latency-{sender_transport}"
    sender, receiver = await open_sessions(server, [sender_transport, "websocket"], doc)
    try:
        text = sender.text()
        samples = []
        for i in range(edits):
            marker = f"<{i}>"
            started = time.perf_counter()
            text += marker
            await receiver.wait_for(lambda: marker in str(receiver.text()), timeout=30)  # noqa: B023
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)  # one edit at a time: latency, not throughput
        return {
            "p50_ms": round(percentile(samples, 0.5) * 1000, 2),
            "p99_ms": round(percentile(samples, 0.99) * 1000, 2),
            "edits": edits,
        }
    finally:
        await asyncio.gather(sender.close(), receiver.close())


async def idle_memory(kind: str, count: int) -> dict[str, float]:
    """Bytes of server RSS per idle ``kind`` ("websocket" or "sse") connection."""
    async with serving() as server:
        pid = server.pid
        assert pid is not None
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        held: list[Any] = []
        try:
            # Warm up the code paths (and the document) with one of each, closed again.
            for warm in await open_sessions(server, ["websocket", "sse"], "idle"):
                await warm.close()
            await asyncio.sleep(0.5)
            before = rss_bytes(pid)
            for _ in range(count):
                held.append(await _idle_connection(http, server, kind))
            await asyncio.sleep(1.0)  # let the server settle (pending frames written)
            after = rss_bytes(pid)
            return {
                "count": count,
                "bytes_per_connection": round((after - before) / count),
                "rss_mb": round(after / 2**20, 1),
            }
        finally:
            for item in held:
                item.close()
            await http.close()


async def _idle_connection(http: aiohttp.ClientSession, server: ServerProcess, kind: str) -> Any:
    """One connection that joined the document and then does nothing."""
    if kind == "websocket":
        ws = await http.ws_connect(f"{server.ws_url}/idle")
        await ws.receive()  # the server's sync step 1: it has joined the room

        class Closer:
            def close(self) -> None:
                asyncio.ensure_future(ws.close())

        return Closer()
    response = await http.get(f"{server.http_url}/sse/idle")
    buffer = b""
    while buffer.count(b"\n\n") < 2:  # the open event and the sync step 1
        buffer += await response.content.readany()
    return response


async def many_sessions(count: int) -> dict[str, float]:
    """``count`` SSE sessions on one document; one edit's time to reach them all."""
    async with serving() as server:
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        streams: list[aiohttp.ClientResponse] = []
        try:
            started = time.perf_counter()
            opened = await asyncio.gather(
                *(_idle_connection(http, server, "sse") for _ in range(count))
            )
            streams = list(opened)
            open_seconds = time.perf_counter() - started
            (writer,) = await open_sessions(server, ["websocket"], "idle")
            pid = server.pid
            assert pid is not None
            rss = rss_bytes(pid)
            started = time.perf_counter()
            writer.text().insert(0, "to everyone")
            await asyncio.gather(*(_until_update(s) for s in streams))
            fanout = time.perf_counter() - started
            await writer.close()
            return {
                "sessions": count,
                "open_all_s": round(open_seconds, 2),
                "edit_reaches_all_ms": round(fanout * 1000, 1),
                "rss_mb": round(rss / 2**20, 1),
            }
        finally:
            for stream in streams:
                stream.close()
            await http.close()


async def _until_update(stream: aiohttp.ClientResponse) -> None:
    # A sync update frame starts with bytes 0, 2: base64 "AAI".
    buffer = b""
    while b"data: AAI" not in buffer:
        chunk = await stream.content.readany()
        if not chunk:
            raise RuntimeError("stream ended")
        buffer = buffer[-16:] + chunk


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"latency": {}, "idle_memory": {}}
    async with serving() as server:
        for transport in ("websocket", "sse", "poll"):
            results["latency"][f"{transport}->websocket"] = await latency(
                server, transport, args.edits
            )
    for kind in ("websocket", "sse"):
        gc.collect()
        results["idle_memory"][kind] = await idle_memory(kind, args.idle)
    results["many_sessions"] = await many_sessions(args.sessions)
    ws = results["idle_memory"]["websocket"]["bytes_per_connection"]
    sse = results["idle_memory"]["sse"]["bytes_per_connection"]
    results["idle_memory"]["sse_vs_websocket"] = round(sse / ws, 2) if ws > 0 else None
    p50 = results["latency"]
    base = p50["websocket->websocket"]["p50_ms"]
    results["latency"]["sse_p50_vs_websocket"] = (
        round(p50["sse->websocket"]["p50_ms"] / base, 2) if base else None
    )
    return results


def report(results: dict[str, Any]) -> str:
    rows = ["latency of one edit to a WebSocket client:"]
    for name, figures in results["latency"].items():
        if isinstance(figures, dict):
            rows.append(
                f"  {name:<22} p50 {figures['p50_ms']:>8} ms  p99 {figures['p99_ms']:>8} ms"
            )
    rows.append(f"  SSE p50 / WebSocket p50: {results['latency']['sse_p50_vs_websocket']}")
    rows.append("server memory per idle connection:")
    for kind in ("websocket", "sse"):
        f = results["idle_memory"][kind]
        rows.append(
            f"  {kind:<10} {f['bytes_per_connection']:>8} B  "
            f"({f['count']} open, RSS {f['rss_mb']} MiB)"
        )
    rows.append(f"  SSE / WebSocket: {results['idle_memory']['sse_vs_websocket']}")
    m = results["many_sessions"]
    rows.append(
        f"{m['sessions']} SSE sessions at once: opened in {m['open_all_s']} s, one edit reached "
        f"all in {m['edit_reaches_all_ms']} ms, server RSS {m['rss_mb']} MiB"
    )
    return "\n".join(rows)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__)
    parser.add_argument("--edits", type=int, default=300, help="latency samples per sender")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections per kind")
    parser.add_argument("--sessions", type=int, default=1000, help="SSE sessions held at once")
    parser.add_argument("--small", action="store_true", help="a few seconds: 20 / 50 / 50")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.small:
        args.edits, args.idle, args.sessions = 20, 50, 50
    return args


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    outcome = asyncio.run(main(arguments))
    print(report(outcome))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(outcome, indent=1) + "\n")
