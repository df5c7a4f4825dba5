"""A fault-injecting network between Yjs clients and a server.

    proxy = NetemProxy("ws://127.0.0.1:8080/ws", seed=7, restart=server.restart)
    await proxy.start()
    alice = Session(await proxy.endpoint("alice"), "doc")   # alice's traffic is labelled
    proxy.set_latency(0.2, jitter=0.05)                      # everyone, both directions
    async with proxy.partition(["alice"]):                   # alice is cut off ...
        ...                                                  # ... and healed on exit
    proxy.drop(["bob"])                                      # reset bob's connections
    await proxy.restart_server()                             # the test's own callable

How it works, and why at this level.  The proxy is a TCP proxy that
understands WebSocket framing (RFC 6455) but never re-encodes anything: it
passes the HTTP upgrade through, then cuts each direction's byte stream at
frame boundaries and decides *when* (and whether) each frame goes on.

* Not a WebSocket-terminating proxy (aiohttp on both sides): that one would
  answer pings itself, renegotiate extensions, pick its own close codes and
  hide the very behaviours a fault test is about (heartbeat timeouts during
  a partition, 1001 on restart, a handshake refused with 401), and it would
  only work for clients and servers that agree with aiohttp.  Bytes through
  this proxy are exactly what the client and the server sent.
* Not a blind byte pipe: delays and holds then split messages at arbitrary
  read boundaries, so "this update arrives late" could not be said.  Whole
  frames are the unit of latency, holding and statistics here.
* TCP never loses bytes silently, so neither does the proxy: a frame is
  delayed, held or its connection is reset, never skipped in a live stream.
  Dropping single messages is what a *broken server* does; that is what the
  chaos checker catches (see ``collab.testing.chaos``).

Each client gets its own listening port (``await proxy.endpoint(label)``), so
the proxy knows whose connection it carries across reconnects without
touching the request; faults name labels (a *group* is a set of labels).

Everything random (the jitter of each frame) comes from ``random.Random``
seeded with ``(seed, label, connection number, direction)``, so the same seed
gives every connection the same sequence of delays, and every fault applied
is counted in ``faults`` and logged in ``log`` (time, kind, detail).  The
timing of the operating system is not replayed; the fault schedule is.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("collab.testing.netem")

__all__ = [
    "Direction",
    "FaultRecord",
    "FaultUnavailable",
    "NetemProxy",
    "ProxiedConnection",
    "Shape",
]

#: Stop reading from a side once this much waits to be delivered to the other
#: (a held or slow link pushes back on the sender, as TCP's window would).
MAX_BUFFERED = 4 * 1024 * 1024
#: The longest HTTP upgrade request or response accepted before giving up on
#: framing and passing bytes through as they come.
MAX_HEADERS = 64 * 1024

#: How long the other direction may still flow after one side closed cleanly.
CLOSE_GRACE = 2.0

RestartCallable = Callable[[], Awaitable[None]]


class Direction(enum.Flag):
    """Which way traffic flows: ``UP`` is client to server."""

    UP = enum.auto()
    DOWN = enum.auto()
    BOTH = UP | DOWN


class FaultUnavailable(RuntimeError):
    """A fault the proxy cannot inject here (``restart`` without a restart callable)."""


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One fault applied: seconds since ``start``, its kind and what it hit."""

    at: float
    kind: str
    detail: str


@dataclass(slots=True)
class Shape:
    """How a link behaves: one-way delay, its spread, and a throughput cap."""

    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None  # bytes per second; None is unlimited


@dataclass(slots=True)
class _Override:
    """Per-label settings; ``None`` inherits everyone's."""

    latency: float | None = None
    jitter: float | None = None
    bandwidth: float | None = None


@dataclass(slots=True)
class _Partition:
    labels: frozenset[str]
    mode: str  # "blackhole" or "reset"


@dataclass(slots=True)
class _Stats:
    frames: int = 0
    bytes: int = 0


class _FrameCutter:
    """Splits a byte stream into the HTTP header block and then whole WebSocket frames."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_headers = True
        self.raw = False  # not (or no longer) WebSocket: pass chunks through
        self.status: int | None = None
        #: The first header block (a request going up, a response coming down).
        self.head: bytes | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self.raw:
            return [data] if data else []
        self._buf += data
        out: list[bytes] = []
        if self._in_headers:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEADERS:
                    self.raw = True
                    out.append(bytes(self._buf))
                    self._buf.clear()
                return out
            head = bytes(self._buf[: end + 4])
            del self._buf[: end + 4]
            self._in_headers = False
            out.append(head)
            first = head.split(b"\r\n", 1)[0].split()
            self.head = head
            if first and first[0].startswith(b"HTTP/"):
                self.status = int(first[1]) if len(first) > 1 and first[1].isdigit() else None
                if self.status != 101:
                    self.raw = True
            elif not is_upgrade(head):
                # A plain HTTP request (the HTTP fallback transport): its body
                # and the requests after it are not WebSocket frames.
                self.raw = True
        if self.raw:
            if self._buf:
                out.append(bytes(self._buf))
                self._buf.clear()
            return out
        while True:
            size = self._frame_size()
            if size is None or len(self._buf) < size:
                return out
            out.append(bytes(self._buf[:size]))
            del self._buf[:size]

    def _frame_size(self) -> int | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        length = buf[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            offset = 10
        if buf[1] & 0x80:  # masked (client to server): a 4-byte key follows
            offset += 4
        return offset + length

    def rest(self) -> bytes:
        """Bytes of an incomplete frame left at end of stream."""
        data = bytes(self._buf)
        self._buf.clear()
        return data


def is_upgrade(head: bytes) -> bool:
    """Whether an HTTP request's header block asks for a protocol upgrade."""
    return any(
        line.split(b":", 1)[0].strip().lower() == b"upgrade" for line in head.split(b"\r\n")[1:]
    )


#: What "refuse upgrade" answers, as a proxy that does not allow WebSockets would.
_REFUSAL_TEXT = b"WebSockets are not allowed here"
REFUSED_UPGRADE = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_REFUSAL_TEXT), _REFUSAL_TEXT)
)


class _Responses:
    """Finds where each HTTP response of a byte stream ends (a buffering proxy
    releases a response once it is complete): Content-Length, chunked, or EOF."""

    def __init__(self) -> None:
        self._state = "head"
        self._head = bytearray()
        self._left = 0  # body bytes of the current part still to come
        self._line = bytearray()
        self.passthrough = False  # a 101: WebSocket frames from here on

    def feed(self, data: bytes) -> list[int]:
        """Offsets in ``data`` just after each response that completes in it."""
        ends: list[int] = []
        pos = 0
        while pos < len(data) and not self.passthrough:
            state = self._state
            if state == "head":
                end = (bytes(self._head[-3:]) + data[pos:]).find(b"\r\n\r\n")
                if end < 0:
                    self._head += data[pos:]
                    return ends
                take = end + 4 - min(3, len(self._head))
                self._head += data[pos : pos + take]
                pos += take
                self._start(bytes(self._head))
                self._head.clear()
                if self._state == "head":
                    ends.append(pos)
            elif state == "body":
                step = min(self._left, len(data) - pos)
                pos += step
                self._left -= step
                if not self._left:
                    self._state = "head"
                    ends.append(pos)
            elif state in ("size", "trailer"):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._line += data[pos:]
                    return ends
                self._line += data[pos : nl + 1]
                pos = nl + 1
                line = bytes(self._line).strip()
                self._line.clear()
                if state == "trailer":
                    if not line:
                        self._state = "head"
                        ends.append(pos)
                    continue
                size = int(line.split(b";")[0] or b"0", 16)
                if size:
                    self._left = size + 2  # the data and its CRLF
                    self._state = "chunk"
                else:
                    self._state = "trailer"
            elif state == "chunk":
                step = min(self._left, len(data) - pos)
                pos += step
                self._left -= step
                if not self._left:
                    self._state = "size"
            else:  # "eof": the body lasts until the connection ends
                return ends
        return ends

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = lines[0].split()
        code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if code == 101:
            self.passthrough = True
        elif code in (204, 304) or 100 <= code < 200:
            self._state = "head"
        elif b"chunked" in headers.get(b"transfer-encoding", b""):
            self._state = "size"
        elif b"content-length" in headers:
            self._left = int(headers[b"content-length"] or b"0")
            self._state = "body" if self._left else "head"
        else:
            self._state = "eof"


class ProxiedConnection:
    """One client connection through the proxy and its upstream twin."""

    def __init__(self, proxy: NetemProxy, label: str, number: int) -> None:
        self.proxy = proxy
        self.label = label
        self.number = number
        self.stats = {Direction.UP: _Stats(), Direction.DOWN: _Stats()}
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()
        #: When a byte last went either way (for "kill idle connections").
        self.last_activity = 0.0

    def __repr__(self) -> str:
        return f"<ProxiedConnection {self.label}#{self.number}>"

    def abort(self) -> None:
        """Reset both sides at once, as a dead link or a crashed middlebox would."""
        for writer in self._writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        self.closed.set()

    async def run(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        self._writers = [client_writer, upstream_writer]
        self.last_activity = asyncio.get_running_loop().time()
        up = self._pipe(client_reader, upstream_writer, Direction.UP)
        buffering = self.proxy.buffers_responses(self.label)
        down = (
            self._buffered_pipe(upstream_reader, client_writer, buffering)
            if buffering
            else self._pipe(upstream_reader, client_writer, Direction.DOWN)
        )
        self._tasks = [
            asyncio.create_task(up, name=f"netem-{self.label}-up"),
            asyncio.create_task(down, name=f"netem-{self.label}-down"),
        ]
        watchdog = asyncio.create_task(self._kill_when_idle(), name=f"netem-{self.label}-idle")
        self._tasks.append(watchdog)
        try:
            done, pending = await asyncio.wait(self._tasks[:2], return_when=asyncio.FIRST_COMPLETED)
            if pending and not any(t.cancelled() or t.exception() for t in done):
                # One side finished cleanly (EOF): let the other deliver its last
                # frames (the server's close frame, say) before tearing down.
                await asyncio.wait(pending, timeout=CLOSE_GRACE)
        finally:
            self.abort()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _kill_when_idle(self) -> None:
        """Reset the connection once nothing went either way for the proxy's idle limit."""
        loop = asyncio.get_running_loop()
        while True:
            limit = self.proxy.idle_limit(self.label)
            if limit is None:
                await self.proxy.wait_change()
                continue
            idle = loop.time() - self.last_activity
            if idle >= limit:
                self.proxy._record("kill idle", f"{self!r} after {idle:.1f} s idle")
                self.abort()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit - idle):
                    await self.proxy.wait_change()

    async def _buffered_pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int
    ) -> None:
        """Downstream through a buffering proxy: a response's bytes are held until
        it is complete or ``limit`` bytes wait (then all of them go at once)."""
        loop = asyncio.get_running_loop()
        responses = _Responses()
        held = bytearray()
        while True:
            data = await reader.read(65536)
            if not data:
                if held:
                    writer.write(bytes(held))
                with contextlib.suppress(Exception):
                    await writer.drain()
                    writer.write_eof()
                return
            self.last_activity = loop.time()
            ends = responses.feed(data)
            start = len(held)
            held += data
            if responses.passthrough or len(held) >= limit:
                cut = len(held)
            else:
                cut = start + ends[-1] if ends else 0
            if cut:
                if cut < len(held) or not ends or responses.passthrough:
                    self.proxy._record("buffer", f"{self!r} released {cut} bytes")
                writer.write(bytes(held[:cut]))
                del held[:cut]
                await writer.drain()
                stats = self.stats[Direction.DOWN]
                stats.frames += 1
                stats.bytes += cut

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        rng = random.Random(f"{proxy.seed}/{self.label}/{self.number}/{direction.name}")
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        buffered = 0
        space = asyncio.Event()
        space.set()
        last_due = 0.0

        async def deliver() -> None:
            nonlocal buffered
            link_free = 0.0
            while True:
                item = await queue.get()
                if item is None:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                due, frame = item
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                while proxy.is_held(self.label, direction):
                    await proxy.wait_change()
                bandwidth = proxy.shape_for(self.label).bandwidth
                if bandwidth:
                    # Serialization delay: the link carries one frame at a time.
                    link_free = max(link_free, loop.time()) + len(frame) / bandwidth
                    wait = link_free - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                writer.write(frame)
                await writer.drain()
                stats = self.stats[direction]
                stats.frames += 1
                stats.bytes += len(frame)
                buffered -= len(frame)
                if buffered < MAX_BUFFERED:
                    space.set()

        delivery = asyncio.create_task(deliver(), name=f"netem-{self.label}-{direction.name}")
        cutter = _FrameCutter()
        try:
            while True:
                await space.wait()
                data = await reader.read(65536)
                if data:
                    self.last_activity = loop.time()
                chunks = cutter.feed(data) if data else [cutter.rest()]
                if (
                    direction is Direction.UP
                    and cutter.head is not None
                    and chunks
                    and chunks[0] is cutter.head
                    and is_upgrade(cutter.head)
                    and proxy.refuses_upgrade(self.label)
                ):
                    proxy._record("refuse upgrade", f"{self!r}")
                    client = self._writers[0]
                    client.write(REFUSED_UPGRADE)
                    with contextlib.suppress(Exception):
                        await client.drain()
                    self.abort()
                    return
                for chunk in chunks:
                    if not chunk:
                        continue
                    shape = proxy.shape_for(self.label)
                    delay = shape.latency
                    if shape.jitter:
                        delay = max(0.0, delay + rng.uniform(-shape.jitter, shape.jitter))
                    # Later frames never overtake earlier ones: it is one TCP stream.
                    last_due = max(last_due, loop.time() + delay)
                    buffered += len(chunk)
                    queue.put_nowait((last_due, chunk))
                if buffered >= MAX_BUFFERED:
                    space.clear()
                if not data:
                    queue.put_nowait(None)
                    await delivery
                    return
        finally:
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await delivery


class NetemProxy:
    """A seeded, scriptable fault-injecting proxy in front of one Yjs server."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        restart: RestartCallable | None = None,
        host: str = "127.0.0.1",
        connect_timeout: float = 5.0,
    ) -> None:
        parts = urlsplit(upstream if "://" in upstream else f"ws://{upstream}")
        if parts.scheme not in ("ws", "http"):
            raise ValueError(
                f"{parts.scheme}:// is not supported: the proxy must see WebSocket frames, "
                "so point it at the server's plain ws:// address (terminate TLS elsewhere)"
            )
        if parts.hostname is None:
            raise ValueError(f"no host in {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.path = parts.path
        self.seed = seed
        self.host = host
        self.faults: Counter[str] = Counter()
        self.log: list[FaultRecord] = []
        self._restart = restart
        self._connect_timeout = connect_timeout
        self._servers: dict[str, asyncio.Server] = {}
        self._ports: dict[str, int] = {}
        self._connections: set[ProxiedConnection] = set()
        self._accepted: Counter[str] = Counter()
        self._default = Shape()
        self._overrides: dict[str, _Override] = {}
        self._holds: dict[str, Direction] = {}
        self._hold_all = Direction(0)
        self._partitions: dict[str, _Partition] = {}
        #: Middlebox faults, by label (None: everyone).
        self._refuse_upgrade: set[str | None] = set()
        self._buffer: dict[str | None, int] = {}
        self._idle: dict[str | None, float] = {}
        self._change = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._started_at: float | None = None
        self._partition_names = 0

    # -- lifecycle -------------------------------------------------------------

    @property
    def can_restart(self) -> bool:
        return self._restart is not None

    async def start(self) -> NetemProxy:
        self._started_at = asyncio.get_running_loop().time()
        return self

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        for server in self._servers.values():
            server.close()
        for conn in list(self._connections):
            conn.abort()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._servers.values():
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> NetemProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def endpoint(self, label: str = "default") -> str:
        """The ``ws://`` URL through which ``label``'s connections go (created on first use)."""
        if label not in self._servers:
            server = await asyncio.start_server(
                lambda r, w: self._accept(label, r, w), self.host, 0
            )
            self._servers[label] = server
            self._ports[label] = server.sockets[0].getsockname()[1]
        return f"ws://{self.host}:{self._ports[label]}{self.path}"

    def connections(self, labels: Iterable[str] | str | None = None) -> list[ProxiedConnection]:
        """Live connections, all or those of ``labels``."""
        wanted = _labels(labels)
        return [c for c in self._connections if wanted is None or c.label in wanted]

    # -- faults ----------------------------------------------------------------

    def set_latency(
        self,
        latency: float | None,
        jitter: float = 0.0,
        *,
        labels: Iterable[str] | str | None = None,
    ) -> None:
        """Delay every frame by ``latency`` ± ``jitter`` seconds, each way.

        Without ``labels`` it applies to everyone (``0`` clears it); with
        ``labels`` it overrides theirs (``None`` gives them everyone's again).
        """
        wanted = _labels(labels)
        if wanted is None:
            self._default.latency, self._default.jitter = latency or 0.0, jitter
            for override in self._overrides.values():
                override.latency = override.jitter = None
        else:
            for label in wanted:
                override = self._overrides.setdefault(label, _Override())
                override.latency = latency
                override.jitter = None if latency is None else jitter
        if latency or jitter:
            latency = latency or 0.0
            self._record("latency", f"{latency * 1000:.0f}±{jitter * 1000:.0f} ms {_who(labels)}")

    def set_bandwidth(
        self, bytes_per_second: float | None, *, labels: Iterable[str] | str | None = None
    ) -> None:
        """Cap throughput per connection and direction.

        Without ``labels`` for everyone (``None`` lifts the cap); with
        ``labels`` for them (``None`` gives them everyone's again).
        """
        wanted = _labels(labels)
        if wanted is None:
            self._default.bandwidth = bytes_per_second
            for override in self._overrides.values():
                override.bandwidth = None
        else:
            for label in wanted:
                override = self._overrides.setdefault(label, _Override())
                override.bandwidth = bytes_per_second
        if bytes_per_second:
            self._record("bandwidth", f"{bytes_per_second:.0f} B/s {_who(labels)}")

    def drop(self, labels: Iterable[str] | str | None = None) -> int:
        """Reset the live connections of ``labels`` (all when ``None``); returns how many."""
        victims = self.connections(labels)
        for conn in victims:
            conn.abort()
        self._record("drop", f"{len(victims)} connections {_who(labels)}")
        return len(victims)

    def hold(
        self, labels: Iterable[str] | str | None = None, direction: Direction = Direction.BOTH
    ) -> None:
        """Stop delivering frames of ``labels`` (queued in order) until ``release``."""
        wanted = _labels(labels)
        if wanted is None:
            self._hold_all |= direction
        else:
            for label in wanted:
                self._holds[label] = self._holds.get(label, Direction(0)) | direction
        self._record("hold", f"{_direction(direction)} {_who(labels)}")
        self._changed()

    def release(
        self, labels: Iterable[str] | str | None = None, direction: Direction = Direction.BOTH
    ) -> None:
        """Deliver what ``hold`` kept back, late but in order."""
        wanted = _labels(labels)
        if wanted is None:
            self._hold_all &= ~direction
            for label in list(self._holds):
                self._holds[label] &= ~direction
        else:
            for label in wanted:
                self._holds[label] = self._holds.get(label, Direction(0)) & ~direction
        self._changed()

    @contextlib.asynccontextmanager
    async def holding(
        self, labels: Iterable[str] | str | None = None, direction: Direction = Direction.BOTH
    ) -> AsyncIterator[None]:
        """``hold`` for the duration of the block, then ``release``."""
        self.hold(labels, direction)
        try:
            yield
        finally:
            self.release(labels, direction)

    def cut(
        self, labels: Iterable[str] | str, *, name: str | None = None, mode: str = "blackhole"
    ) -> str:
        """Partition ``labels`` from the server until ``heal(name)``; returns the name.

        ``blackhole`` (the default) is a silent network: frames both ways
        wait, new connections hang before reaching the server, and only
        heartbeats notice.  ``reset`` resets the group's connections and
        refuses new ones at once, as a router sending RSTs would.
        """
        if mode not in ("blackhole", "reset"):
            raise ValueError(f"mode is blackhole or reset, not {mode!r}")
        wanted = _labels(labels)
        assert wanted is not None
        if name is None:
            self._partition_names += 1
            name = f"partition-{self._partition_names}"
        self._partitions[name] = _Partition(wanted, mode)
        self._record("partition", f"{name} ({mode}) cuts off {_who(wanted)}")
        if mode == "reset":
            for conn in self.connections(wanted):
                conn.abort()
        self._changed()
        return name

    def heal(self, name: str | None = None) -> None:
        """End partition ``name`` (every partition when ``None``)."""
        if name is None:
            self._partitions.clear()
        else:
            self._partitions.pop(name, None)
        self._changed()

    @contextlib.asynccontextmanager
    async def partition(
        self, labels: Iterable[str] | str, *, name: str | None = None, mode: str = "blackhole"
    ) -> AsyncIterator[str]:
        """Cut ``labels`` off for the duration of the block, then heal."""
        name = self.cut(labels, name=name, mode=mode)
        try:
            yield name
        finally:
            self.heal(name)

    async def restart_server(self) -> None:
        """Restart the server through the callable given as ``restart=``."""
        if self._restart is None:
            raise FaultUnavailable(
                "restart needs a way to restart the server: pass restart= to NetemProxy"
            )
        self._record("restart", f"{self.upstream_host}:{self.upstream_port}")
        await self._restart()

    def refuse_upgrade(self, labels: Iterable[str] | str | None = None, *, on: bool = True) -> None:
        """Answer WebSocket upgrades of ``labels`` with 403, as a proxy that blocks
        WebSockets does (plain HTTP passes); the first request of each connection
        is checked."""
        keys = _keys(labels)
        if on:
            self._refuse_upgrade.update(keys)
            self._record("refuse upgrade", f"on {_who(labels)}")
        else:
            self._refuse_upgrade.difference_update(keys)

    def buffer_responses(
        self,
        labels: Iterable[str] | str | None = None,
        *,
        limit: int | None = 64 * 1024,
        on: bool = True,
    ) -> None:
        """Hold each HTTP response of ``labels``' new connections until it is complete
        or ``limit`` bytes wait, as a buffering proxy does (a stream then never
        arrives in time; long-poll answers, which complete, pass)."""
        for key in _keys(labels):
            if on and limit:
                self._buffer[key] = limit
            else:
                self._buffer.pop(key, None)
        if on and limit:
            self._record("buffer responses", f"up to {limit} bytes {_who(labels)}")

    def kill_idle(self, seconds: float | None, labels: Iterable[str] | str | None = None) -> None:
        """Reset connections of ``labels`` after ``seconds`` without a byte either way
        (``None`` stops it), as idle-killing proxies and NATs do."""
        for key in _keys(labels):
            if seconds is None:
                self._idle.pop(key, None)
            else:
                self._idle[key] = seconds
        if seconds is not None:
            self._record("kill idle", f"after {seconds:g} s {_who(labels)}")
        self._changed()

    def refuses_upgrade(self, label: str) -> bool:
        return label in self._refuse_upgrade or None in self._refuse_upgrade

    def buffers_responses(self, label: str) -> int:
        return self._buffer.get(label) or self._buffer.get(None) or 0

    def idle_limit(self, label: str) -> float | None:
        return self._idle.get(label, self._idle.get(None))

    def heal_all(self) -> None:
        """A perfect network again: no latency, no cap, nothing held, no partition,
        no middlebox fault."""
        self._refuse_upgrade.clear()
        self._buffer.clear()
        self._idle.clear()
        self._default = Shape()
        self._overrides.clear()
        self._holds.clear()
        self._hold_all = Direction(0)
        self._partitions.clear()
        self._changed()

    # -- used by connections -----------------------------------------------------

    def shape_for(self, label: str) -> Shape:
        """The link ``label``'s frames see now."""
        override = self._overrides.get(label)
        base = self._default
        if override is None:
            return base
        return Shape(
            base.latency if override.latency is None else override.latency,
            base.jitter if override.jitter is None else override.jitter,
            base.bandwidth if override.bandwidth is None else override.bandwidth,
        )

    def is_cut(self, label: str) -> _Partition | None:
        for partition in self._partitions.values():
            if label in partition.labels:
                return partition
        return None

    def is_held(self, label: str, direction: Direction) -> bool:
        if direction & (self._hold_all | self._holds.get(label, Direction(0))):
            return True
        return self.is_cut(label) is not None

    async def wait_change(self) -> None:
        await self._change.wait()

    # -- internals -----------------------------------------------------------------

    def _changed(self) -> None:
        # Wake everyone waiting on the old state; later waiters get a fresh event.
        self._change.set()
        self._change = asyncio.Event()

    def _record(self, kind: str, detail: str) -> None:
        now = asyncio.get_running_loop().time()
        at = now - self._started_at if self._started_at is not None else 0.0
        self.faults[kind] += 1
        self.log.append(FaultRecord(round(at, 3), kind, detail))
        log.debug("fault %s: %s", kind, detail)

    def _accept(
        self, label: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.create_task(self._serve(label, reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve(
        self, label: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while (partition := self.is_cut(label)) is not None:
                if partition.mode == "reset":
                    writer.transport.abort()
                    return
                await self.wait_change()  # a black hole: the client's connect hangs
            try:
                async with asyncio.timeout(self._connect_timeout):
                    up_reader, up_writer = await asyncio.open_connection(
                        self.upstream_host, self.upstream_port
                    )
            except (OSError, TimeoutError):
                # Server down (restarting): the client sees its connection reset.
                writer.transport.abort()
                return
            self._accepted[label] += 1
            conn = ProxiedConnection(self, label, self._accepted[label])
            self._connections.add(conn)
            try:
                await conn.run(reader, writer, up_reader, up_writer)
            finally:
                self._connections.discard(conn)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise


def _labels(labels: Iterable[str] | str | None) -> frozenset[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        return frozenset([labels])
    return frozenset(labels)


def _keys(labels: Iterable[str] | str | None) -> frozenset[str | None]:
    wanted = _labels(labels)
    return frozenset([None]) if wanted is None else frozenset(wanted)


def _who(labels: Iterable[str] | str | None) -> str:
    wanted = _labels(labels)
    if wanted is None:
        return "for everyone"
    return "for " + ",".join(sorted(wanted))


def _direction(direction: Direction) -> str:
    return {Direction.UP: "upstream", Direction.DOWN: "downstream"}.get(direction, "both ways")
