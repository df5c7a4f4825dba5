"""The chaos runner: many clients editing through a faulty network, then a verdict.

    collab chaos --serve --clients 20 --duration 60 --seed 7
    collab chaos ws://127.0.0.1:1234/ws --faults latency,partition,drop --seed 7

Each client is a ``collab.client.Session`` connected through a
``NetemProxy`` (its own endpoint, labelled ``c0``, ``c1``...).  For
``--duration`` seconds every client edits at random: it inserts a unique
marker ``[client.n]`` between two markers, deletes a whole marker, or sets
a key of the map ``"map"``.  Meanwhile faults from a schedule drawn from
``--seed`` hit the network: latency with jitter, bandwidth caps, partitions,
dropped connections, frames held and released late, server restarts.

Then everything heals and the runner checks:

* **convergence**: every client, and a late joiner syncing from the server
  afterwards, holds the same text, map and state vector;
* **no lost edit**: a marker that reached another client (it was
  *acknowledged*) is in every final replica unless some client deleted it
  (deletes are logged).  Markers never seen by anyone else are reported but
  are not losses: nothing promised they had left the client.

The same seed gives the same fault schedule and the same random choices
by each client, so a failing run can be replayed; the timing of the network
is not replayed, and what a choice does (which marker a delete picks) depends
on the text the client sees at that moment.  Exit status: 0 pass, 1 divergence or loss, 2 the run
could not be made (bad arguments, unreachable server, unavailable fault).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from pycrdt import Doc, Map, Text, TextEvent

from collab.client import Session
from collab.client_links import http_urls

from .converge import ConvergenceError, converged
from .netem import Direction, NetemProxy
from .server import ServerProcess

__all__ = [
    "FAULT_KINDS",
    "ChaosConfig",
    "ChaosReport",
    "ChaosUnavailable",
    "FaultEvent",
    "LostEdit",
    "add_arguments",
    "main",
    "make_schedule",
    "run_chaos",
]

FAULT_KINDS = ("latency", "bandwidth", "partition", "drop", "hold", "restart")
MARKER = re.compile(r"\[(\d+)\.(\d+)\]")
#: Client heartbeat: a partition or hold longer than about 1.5 times this
#: makes clients give up on their socket and reconnect, as browsers would.
CLIENT_HEARTBEAT = 3.0

RestartCallable = Callable[[], Awaitable[None]]


class ChaosUnavailable(Exception):
    """The run cannot be made as asked (exit status 2)."""


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One scheduled fault: when (seconds from the start), what, for how long, on whom."""

    at: float
    kind: str
    duration: float
    targets: tuple[str, ...] | None  # None: everyone
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        who = "everyone" if self.targets is None else ",".join(self.targets)
        extra = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.at:7.2f}s {self.kind:<9} {self.duration:5.2f}s {who} {extra}".rstrip()


def make_schedule(
    seed: int, duration: float, kinds: Sequence[str], labels: Sequence[str]
) -> list[FaultEvent]:
    """The fault schedule for ``seed``: the same arguments always give the same list.

    Every kind appears at least once; faults start every ``duration / (3 * kinds)``
    seconds on average (2.5 s at most) and all end by ``duration``.
    """
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    if not kinds or not labels or duration <= 0:
        return []
    rng = random.Random(f"{seed}/schedule")
    gap = max(0.2, min(2.5, duration / (3 * len(kinds))))
    todo = rng.sample(list(kinds), len(kinds))
    events: list[FaultEvent] = []
    at = rng.uniform(0.2, 1.0) * gap
    latest = max(0.0, duration - 0.5)
    while at < latest:
        kind = todo.pop(0) if todo else rng.choice(list(kinds))
        events.append(_event(rng, kind, at, duration, labels))
        at += rng.uniform(0.3, 1.7) * gap
    for kind in todo:  # a short run: squeeze in the kinds not drawn yet
        events.append(_event(rng, kind, rng.uniform(0, latest), duration, labels))
    events.sort(key=lambda e: e.at)
    return events


def _event(
    rng: random.Random, kind: str, at: float, duration: float, labels: Sequence[str]
) -> FaultEvent:
    n = len(labels)

    def some(most: int) -> tuple[str, ...]:
        return tuple(sorted(rng.sample(list(labels), rng.randint(1, max(1, most)))))

    params: dict[str, Any] = {}
    targets: tuple[str, ...] | None
    if kind == "latency":
        latency = rng.uniform(0.02, 0.25)
        params = {"latency": round(latency, 3), "jitter": round(rng.uniform(0, latency / 2), 3)}
        targets = None if rng.random() < 0.4 else some(n)
        length = rng.uniform(1.0, 4.0)
    elif kind == "bandwidth":
        params = {"bytes_per_second": rng.choice((4096, 16384, 65536))}
        targets = None if rng.random() < 0.3 else some(n)
        length = rng.uniform(1.0, 3.0)
    elif kind == "partition":
        params = {"mode": "blackhole" if rng.random() < 0.7 else "reset"}
        targets = some(n // 2)
        length = rng.uniform(0.5, 4.0)
    elif kind == "drop":
        targets = None if rng.random() < 0.3 else some(n)
        length = 0.0
    elif kind == "hold":
        params = {"direction": rng.choice(("up", "down", "both"))}
        targets = some(max(1, n // 3))
        length = rng.uniform(0.2, 2.0)
    elif kind == "restart":
        params = {"hard": rng.random() < 0.5}
        targets = None
        length = 0.0
    else:
        raise ValueError(kind)
    length = max(0.0, min(length, duration - at))
    return FaultEvent(round(at, 3), kind, round(length, 3), targets, params)


@dataclass(slots=True)
class ChaosConfig:
    """What to run; the command line's flags one to one."""

    url: str | None = None
    clients: int = 20
    duration: float = 60.0
    faults: tuple[str, ...] | None = None  # None: every kind available
    seed: int = 0
    doc: str | None = None
    rate: float = 5.0
    converge_timeout: float = 60.0
    progress: bool | None = None  # None: when stderr is a terminal
    #: Clients over the HTTP fallback (half SSE, half long-poll); None: a quarter
    #: of them when the server offers it (/transport/probe), else none.
    http_clients: int | None = None


@dataclass(frozen=True, slots=True)
class LostEdit:
    marker: str
    author: str
    seen_by: tuple[str, ...]
    missing_at: tuple[str, ...]


@dataclass(slots=True)
class ChaosReport:
    """What happened and the verdict; ``format()`` is the summary the CLI prints."""

    url: str
    doc: str
    seed: int
    clients: int
    duration: float
    faults_requested: tuple[str, ...]
    replay: str = ""
    edits: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    schedule: list[FaultEvent] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    reconnects: int = 0
    #: Clients by the transport they ended on (websocket, sse, poll).
    transports: Counter[str] = field(default_factory=Counter)
    converged: bool = False
    converge_seconds: float | None = None
    final_chars: int = 0
    divergence: str | None = None
    acknowledged: int = 0
    deleted: int = 0
    lost: list[LostEdit] = field(default_factory=list)
    unacknowledged_missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.converged
            and not self.lost
            and not self.duplicated
            and not self.corrupted
            and not self.errors
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["edits"] = dict(self.edits)
        data["faults"] = dict(self.faults)
        data["transports"] = dict(self.transports)
        data["lost_count"] = len(self.lost)
        return data

    def format(self) -> str:
        edits = sum(self.edits.values())
        faults = sum(self.faults.values())
        rows = [
            f"collab chaos: seed {self.seed}, {self.clients} clients, {self.duration:g}s "
            f"against {self.url} (doc {self.doc!r})",
            f"edits        {edits:>6}  ({_counts(self.edits, ('insert', 'delete', 'map'))})",
            f"faults       {faults:>6}  ({_counts(self.faults, FAULT_KINDS)})",
        ]
        for kind, why in self.skipped.items():
            rows.append(f"               {kind}: not injected: {why}")
        rows.append(f"reconnects   {self.reconnects:>6}")
        if self.transports:
            rows.append(
                f"transports   {sum(self.transports.values()):>6}  "
                f"({_counts(self.transports, ('websocket', 'sse', 'poll'))})"
            )
        if self.converged:
            rows.append(
                f"converged       yes  in {self.converge_seconds:.2f}s after healing "
                f"({self.clients} clients and a late joiner, {self.final_chars} chars)"
            )
        else:
            rows.append("converged        NO")
            if self.divergence:
                rows.extend("    " + line for line in self.divergence.splitlines()[:40])
        rows.append(
            f"lost edits   {len(self.lost):>6}  ({self.acknowledged} acknowledged inserts "
            f"checked, {self.deleted} deleted on purpose)"
        )
        for lost in self.lost[:10]:
            rows.append(
                f"    {lost.marker} by {lost.author}, seen by {_short(lost.seen_by)}, "
                f"missing at {_short(lost.missing_at)}"
            )
        if len(self.lost) > 10:
            rows.append(f"    ... and {len(self.lost) - 10} more")
        if self.unacknowledged_missing:
            rows.append(
                f"unacked      {len(self.unacknowledged_missing):>6}  inserts never seen by "
                "another client are missing somewhere (not counted as lost)"
            )
        if self.duplicated:
            rows.append(f"duplicated   {len(self.duplicated):>6}  {_short(self.duplicated)}")
        if self.corrupted:
            rows.append(f"corrupted    {len(self.corrupted):>6}  {_short(self.corrupted)}")
        for error in self.errors:
            rows.append(f"error        {error}")
        rows.append(f"result       {'PASS' if self.ok else 'FAIL'}")
        if self.replay:
            rows.append(f"replay       {self.replay}")
        return "\n".join(rows)


def _counts(counter: Counter[str], order: Sequence[str]) -> str:
    keys = [k for k in order if counter.get(k)] + sorted(set(counter) - set(order))
    return ", ".join(f"{k} {counter[k]}" for k in keys) or "none"


def _short(items: Sequence[str], limit: int = 6) -> str:
    shown = " ".join(items[:limit])
    return shown + (f" +{len(items) - limit}" if len(items) > limit else "")


class _Ledger:
    """Who inserted, deleted and saw which marker."""

    def __init__(self) -> None:
        self.author: dict[str, str] = {}
        self.deleted_by: dict[str, list[str]] = {}
        self.seen_by: dict[str, set[str]] = {}
        self.edits: Counter[str] = Counter()


class _Client:
    def __init__(
        self, index: int, session: Session, rng: random.Random, ledger: _Ledger, rate: float
    ) -> None:
        self.index = index
        self.label = f"c{index}"
        self.session = session
        self.rng = rng
        self.ledger = ledger
        self.rate = rate
        self.count = 0
        self.text = session.doc.get("text", type=Text)
        self.map: Map[Any] = session.doc.get("map", type=Map)
        self._sub = self.text.observe(self._on_text)

    def _on_text(self, event: TextEvent) -> None:
        # Every marker of someone else arriving here is acknowledged: it left
        # its author and reached a peer.
        delta: list[dict[str, Any]] = getattr(event, "delta", [])  # untyped in pycrdt
        for item in delta:
            inserted = item.get("insert")
            if not isinstance(inserted, str):
                continue
            for m in MARKER.finditer(inserted):
                if int(m.group(1)) != self.index:
                    self.ledger.seen_by.setdefault(m.group(), set()).add(self.label)

    def close(self) -> None:
        self.text.unobserve(self._sub)

    def edit_once(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.2:
            key = f"k{rng.randrange(8)}"
            self.map[key] = f"{self.index}.{self.count}"
            self.count += 1
            self.ledger.edits["map"] += 1
            return
        current = str(self.text)
        markers = list(MARKER.finditer(current))
        if markers and roll < 0.4:
            m = rng.choice(markers)
            del self.text[m.start() : m.end()]
            self.ledger.deleted_by.setdefault(m.group(), []).append(self.label)
            self.ledger.edits["delete"] += 1
            return
        # Between two markers, so no marker is ever split.
        at = rng.choice([0, *(m.end() for m in markers)])
        marker = f"[{self.index}.{self.count}]"
        self.count += 1
        self.text.insert(at, marker)
        self.ledger.author[marker] = self.label
        self.ledger.edits["insert"] += 1

    async def edit_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pause = self.rng.expovariate(self.rate)
            if loop.time() + pause >= deadline:
                return
            await asyncio.sleep(pause)
            self.edit_once()


def _view(doc: Doc[Any]) -> str:
    """One marker per line, then the map: a diff then names missing markers."""
    text = str(doc.get("text", type=Text))
    lines = [m.group() for m in MARKER.finditer(text)]
    residue = MARKER.sub("", text)
    if residue:
        lines.append(f"(not markers: {residue!r})")
    mapping: Map[Any] = doc.get("map", type=Map)
    lines.extend(f"map {k} = {v}" for k, v in sorted(mapping.items()))
    return "\n".join(lines)


_view.__name__ = "markers of 'text' and entries of 'map'"


async def run_chaos(
    config: ChaosConfig,
    *,
    restart: RestartCallable | None = None,
    restart_hard: Callable[[bool], Awaitable[None]] | None = None,
    stream: TextIO | None = None,
) -> ChaosReport:
    """Run one chaos session against ``config.url`` and return the report.

    ``restart`` (or ``restart_hard``, which is told whether to crash or stop
    gracefully) makes the ``restart`` fault available.  Raises
    ``ChaosUnavailable`` when the run cannot be made as asked.
    """
    if config.url is None:
        raise ChaosUnavailable("no server URL")
    if config.clients < 1:
        raise ChaosUnavailable("--clients must be at least 1")
    stream = stream if stream is not None else sys.stderr
    if restart is not None and restart_hard is None:
        given = restart

        async def restart_any(hard: bool) -> None:
            await given()

        restart_hard = restart_any
    requested = tuple(config.faults) if config.faults is not None else FAULT_KINDS
    unknown = set(requested) - set(FAULT_KINDS)
    if unknown:
        raise ChaosUnavailable(
            f"unknown fault kinds: {', '.join(sorted(unknown))} (known: {', '.join(FAULT_KINDS)})"
        )
    skipped: dict[str, str] = {}
    if "restart" in requested and restart_hard is None:
        why = (
            "the runner can only restart a server it started itself (use --serve "
            "instead of a URL; from Python, pass restart= to run_chaos)"
        )
        if config.faults is not None:
            raise ChaosUnavailable(f"fault 'restart' is not available: {why}")
        skipped["restart"] = why
    kinds = tuple(k for k in requested if k not in skipped)

    labels = [f"c{i}" for i in range(config.clients)]
    doc_name = config.doc or f"chaos-{config.seed}-{uuid.uuid4().hex[:8]}"
    report = ChaosReport(
        url=config.url,
        doc=doc_name,
        seed=config.seed,
        clients=config.clients,
        duration=config.duration,
        faults_requested=kinds,
        skipped=skipped,
        schedule=make_schedule(config.seed, config.duration, kinds, labels),
    )
    restarting: list[asyncio.Task[None]] = []
    hard_next = [False]  # what the schedule asks of the next restart

    one_restart_at_a_time = asyncio.Lock()

    async def proxy_restart() -> None:
        assert restart_hard is not None
        hard = hard_next[0]
        async with one_restart_at_a_time:
            await restart_hard(hard)

    proxy = NetemProxy(
        config.url, seed=config.seed, restart=proxy_restart if restart_hard else None
    )
    await _probe(proxy)
    http_clients = config.http_clients
    if http_clients is None:
        http_clients = config.clients // 4 if await _offers_http(config.url) else 0
    # Spread over the labels: every k-th client, alternately on the stream and on polls.
    over_http = {
        round(j * config.clients / http_clients): ("sse", "poll")[j % 2]
        for j in range(min(http_clients, config.clients))
    }
    ledger = _Ledger()
    clients: list[_Client] = []
    observer: Session | None = None
    progress = _Progress(stream, config) if _show_progress(config, stream) else None
    await proxy.start()
    try:
        for i, label in enumerate(labels):
            session = Session(
                await proxy.endpoint(label),
                doc_name,
                min_backoff=0.05,
                max_backoff=1.0,
                heartbeat=CLIENT_HEARTBEAT,
                transport=over_http.get(i, "websocket"),
            )
            clients.append(
                _Client(i, session, random.Random(f"{config.seed}/client/{i}"), ledger, config.rate)
            )
        for client in clients:
            await client.session.start()
        try:
            await asyncio.gather(*(c.session.wait_synced(20) for c in clients))
        except Exception as exc:  # TimeoutError, or the server refused us
            raise ChaosUnavailable(f"cannot sync with {config.url}: {exc!r}") from None

        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + config.duration

        async def apply(event: FaultEvent) -> None:
            await asyncio.sleep(max(0.0, started + event.at - loop.time()))
            targets = event.targets
            p = event.params
            if event.kind == "latency":
                proxy.set_latency(p["latency"], p["jitter"], labels=targets)
                await asyncio.sleep(event.duration)
                proxy.set_latency(None if targets is not None else 0.0, labels=targets)
            elif event.kind == "bandwidth":
                proxy.set_bandwidth(p["bytes_per_second"], labels=targets)
                await asyncio.sleep(event.duration)
                proxy.set_bandwidth(None, labels=targets)
            elif event.kind == "partition":
                assert targets is not None
                async with proxy.partition(targets, mode=p["mode"]):
                    await asyncio.sleep(event.duration)
            elif event.kind == "drop":
                proxy.drop(targets)
            elif event.kind == "hold":
                direction = {"up": Direction.UP, "down": Direction.DOWN}.get(
                    p["direction"], Direction.BOTH
                )
                async with proxy.holding(targets, direction):
                    await asyncio.sleep(event.duration)
            elif event.kind == "restart":
                hard_next[0] = bool(p["hard"])
                task = asyncio.create_task(proxy.restart_server())
                restarting.append(task)

        fault_tasks = [asyncio.create_task(apply(e)) for e in report.schedule]
        progress_task = (
            asyncio.create_task(progress.run(started, ledger, proxy)) if progress else None
        )
        try:
            await asyncio.gather(*(c.edit_until(deadline) for c in clients))
            await asyncio.gather(*fault_tasks)
        finally:
            for task in fault_tasks:
                task.cancel()
            if progress_task is not None:
                progress_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress_task
            if progress is not None:
                progress.finish()

        # Heal: a perfect network, and the server up again.
        proxy.heal_all()
        for result in await asyncio.gather(*restarting, return_exceptions=True):
            if isinstance(result, BaseException):
                report.errors.append(f"restarting the server failed: {result!r}")
        healed = loop.time()
        observer = Session(
            await proxy.endpoint("late-joiner"), doc_name, min_backoff=0.05, max_backoff=1.0
        )
        await observer.start()
        replicas: list[Session] = [c.session for c in clients] + [observer]
        names = [*labels, "late-joiner"]
        try:
            await converged(replicas, timeout=config.converge_timeout, view=_view, labels=names)
            report.converged = True
            report.converge_seconds = round(loop.time() - healed, 3)
        except ConvergenceError as exc:
            report.divergence = str(exc)
        for client in clients:
            if client.session.error is not None:
                report.errors.append(f"{client.label} ended: {client.session.error}")
        _verdict(report, ledger, replicas, names)
        report.edits = ledger.edits
        report.faults = Counter(proxy.faults)
        report.reconnects = sum(max(0, c.session.connects - 1) for c in clients)
        report.transports = Counter(c.session.transport or "none" for c in clients)
        return report
    finally:
        for client in clients:
            client.close()
        sessions = [c.session for c in clients] + ([observer] if observer else [])
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await proxy.close()


async def _probe(proxy: NetemProxy, timeout: float = 5.0) -> None:
    """Fail fast (exit 2) when nothing listens at the server's address."""
    where = f"{proxy.upstream_host}:{proxy.upstream_port}"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(proxy.upstream_host, proxy.upstream_port)
    except (OSError, TimeoutError) as exc:
        raise ChaosUnavailable(f"cannot reach the server at {where}: {exc}") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _offers_http(url: str) -> bool:
    """Whether the server speaks collab's HTTP fallback (any other Yjs server does not)."""
    urls = http_urls(f"{url.rstrip('/')}/probe")
    if urls is None:
        return False
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{urls[0]}transport/probe", timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            return r.status == 200 and bool((await r.json()).get("ok"))
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return False


def _verdict(
    report: ChaosReport, ledger: _Ledger, replicas: Sequence[Session], names: Sequence[str]
) -> None:
    finals: list[tuple[str, set[str]]] = []
    for name, session in zip(names, replicas, strict=True):
        text = str(session.doc.get("text", type=Text))
        found = [m.group() for m in MARKER.finditer(text)]
        counts = Counter(found)
        for marker, n in counts.items():
            if n > 1 and marker not in report.duplicated:
                report.duplicated.append(marker)
        residue = MARKER.sub("", text)
        if residue:
            report.corrupted.append(f"{name}: {residue[:40]!r}")
        finals.append((name, set(found)))
    report.final_chars = len(str(replicas[0].doc.get("text", type=Text)))
    report.deleted = len(ledger.deleted_by)
    acknowledged = [m for m in ledger.seen_by if m in ledger.author]
    report.acknowledged = len(acknowledged)
    for marker in sorted(acknowledged, key=_marker_key):
        if marker in ledger.deleted_by:
            continue
        missing = tuple(name for name, found in finals if marker not in found)
        if missing:
            report.lost.append(
                LostEdit(
                    marker, ledger.author[marker], tuple(sorted(ledger.seen_by[marker])), missing
                )
            )
    for marker in sorted(ledger.author, key=_marker_key):
        if marker in ledger.seen_by or marker in ledger.deleted_by:
            continue
        if any(marker not in found for _, found in finals):
            report.unacknowledged_missing.append(marker)


def _marker_key(marker: str) -> tuple[int, int]:
    m = MARKER.fullmatch(marker)
    assert m is not None
    return int(m.group(1)), int(m.group(2))


def _show_progress(config: ChaosConfig, stream: TextIO) -> bool:
    if config.progress is not None:
        return config.progress
    return stream.isatty()


class _Progress:
    """A one-line progress bar on a terminal, redrawn four times a second."""

    def __init__(self, stream: TextIO, config: ChaosConfig) -> None:
        self.stream = stream
        self.duration = config.duration
        self.width = max(10, min(30, shutil.get_terminal_size((80, 20)).columns - 60))
        self.tty = stream.isatty()

    async def run(self, started: float, ledger: _Ledger, proxy: NetemProxy) -> None:
        loop = asyncio.get_running_loop()
        last_line = -1.0
        while True:
            elapsed = min(self.duration, loop.time() - started)
            done = elapsed / self.duration if self.duration else 1.0
            filled = int(done * self.width)
            line = (
                f"chaos [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{elapsed:5.1f}/{self.duration:g}s  edits {sum(ledger.edits.values())}  "
                f"faults {sum(proxy.faults.values())}  links {len(proxy.connections())}"
            )
            if self.tty:
                self.stream.write("\r" + line)
                self.stream.flush()
            elif elapsed - last_line >= max(1.0, self.duration / 10):
                # Not a terminal (a CI log): a line now and then instead.
                self.stream.write(line + "\n")
                self.stream.flush()
                last_line = elapsed
            await asyncio.sleep(0.25)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# -- command line ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``collab chaos``."""
    parser.add_argument(
        "url",
        nargs="?",
        help="WebSocket base URL of any Yjs server, e.g. ws://127.0.0.1:8080/ws "
        "(documents at URL/NAME); omit with --serve",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start a collab server (a child process on a free port, SQLite store in a "
        "temporary folder) and run against it; makes the restart fault available",
    )
    parser.add_argument(
        "--store", metavar="URL", help="store of the --serve server (default: a temporary SQLite)"
    )
    parser.add_argument("--clients", type=int, default=20, metavar="N", help="default 20")
    parser.add_argument(
        "--duration", type=float, default=60.0, metavar="SECONDS", help="of editing, default 60"
    )
    parser.add_argument(
        "--faults",
        metavar="KINDS",
        help=f"comma-separated, from {','.join(FAULT_KINDS)} (default: all; restart "
        "only with --serve); 'none' for a calm network",
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="fault schedule and edits (default: random, printed)"
    )
    parser.add_argument("--doc", metavar="NAME", help="document (default: chaos-SEED-RANDOM)")
    parser.add_argument(
        "--rate", type=float, default=5.0, metavar="N", help="edits per second per client (5)"
    )
    parser.add_argument(
        "--converge-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="after healing (60)",
    )
    parser.add_argument(
        "--http-clients",
        type=int,
        metavar="N",
        help="clients over the HTTP fallback, half SSE and half long-poll (default: a "
        "quarter when the server offers it)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument(
        "--schedule", action="store_true", help="print the fault schedule before running"
    )
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show"
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def main(args: argparse.Namespace) -> int:
    """``collab chaos``: run, print the summary, return the exit status."""
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    if args.faults is None:
        faults: tuple[str, ...] | None = None
    elif args.faults.strip() in ("", "none"):
        faults = ()
    elif args.faults.strip() == "all":
        faults = FAULT_KINDS
    else:
        faults = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = set(faults or ()) - set(FAULT_KINDS)
    if unknown:
        print(
            f"collab chaos: unknown fault kinds: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(FAULT_KINDS)})",
            file=sys.stderr,
        )
        return 2
    if bool(args.url) == bool(args.serve):
        print("collab chaos: give a server URL or --serve (not both)", file=sys.stderr)
        return 2
    if args.store and not args.serve:
        print("collab chaos: --store goes with --serve", file=sys.stderr)
        return 2
    config = ChaosConfig(
        url=args.url,
        clients=args.clients,
        duration=args.duration,
        faults=faults,
        seed=args.seed,
        doc=args.doc,
        rate=args.rate,
        converge_timeout=args.converge_timeout,
        progress=args.progress,
        http_clients=args.http_clients,
    )
    try:
        report = asyncio.run(_main(config, args))
    except ChaosUnavailable as exc:
        print(f"collab chaos: {exc}", file=sys.stderr)
        return 2
    report.replay = _replay_command(args)
    print(report.format())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
    return 0 if report.ok else 1


async def _main(config: ChaosConfig, args: argparse.Namespace) -> ChaosReport:
    if args.schedule:
        kinds = config.faults if config.faults is not None else FAULT_KINDS
        if not args.serve:
            kinds = tuple(k for k in kinds if k != "restart")
        labels = [f"c{i}" for i in range(config.clients)]
        for event in make_schedule(config.seed, config.duration, kinds, labels):
            print(event.describe())
    if not args.serve:
        return await run_chaos(config)
    folder = Path(tempfile.mkdtemp(prefix="collab-chaos-"))
    store = args.store or f"sqlite:///{folder / 'chaos.db'}"
    server = ServerProcess(
        "--store",
        store,
        "--log-level",
        "warning",
        "--unload-grace",
        "2",
        log_path=folder / "server.log",
    )
    try:
        await server.start()
    except (RuntimeError, TimeoutError) as exc:
        raise ChaosUnavailable(f"could not start collab serve: {exc}") from None
    config.url = server.ws_url

    async def restart(hard: bool) -> None:
        await server.restart(hard=hard)

    try:
        return await run_chaos(config, restart_hard=restart)
    finally:
        await server.close()
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)


def _replay_command(args: argparse.Namespace) -> str:
    parts = ["collab chaos", args.url or "--serve"]
    if args.store:
        parts += ["--store", args.store]
    parts += [f"--clients {args.clients}", f"--duration {args.duration:g}"]
    if args.faults is not None:
        parts.append(f"--faults {args.faults}")
    parts += [f"--rate {args.rate:g}", f"--seed {args.seed}"]
    return " ".join(parts)
