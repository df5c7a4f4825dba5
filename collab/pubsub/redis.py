"""Redis Streams between server processes that serve the same documents.

Why Streams and not pub/sub: pub/sub delivers at most once, so a process
that blinks (a Redis restart, a slow subscriber, a network hiccup) silently
misses updates.  A stream keeps its entries; each process remembers the
last id it read per document and resumes from there, so a short outage
costs nothing.  What no position can cover (Redis restarted empty, or a
process away longer than the stream keeps) is repaired by a resync on every
(re)connection: the process publishes its full state and a state vector,
and every peer answers with what that vector lacks.  A CRDT makes all the
duplicates this produces harmless.

One stream per document, ``{prefix}:doc:{name}``, trimmed to about
``maxlen`` entries.  Entry fields: ``node`` (who wrote it), ``kind``
(``update``, ``awareness`` or ``sv``) and ``data`` (bytes).

One task reads every subscribed stream with a single blocking XREAD; one
task writes what ``publish`` queued, pipelined.  While Redis is
unreachable both retry with exponential backoff, ``ready`` is False and the
process keeps serving its own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from .base import Message

log = logging.getLogger("collab.pubsub")

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - depends on the install
    aioredis = None  # type: ignore[assignment]
    RedisError = OSError  # type: ignore[assignment,misc]

_RETRY_MIN = 0.1
_RETRY_MAX = 5.0
#: How long one XREAD waits for news; new subscriptions join after at most this.
_BLOCK_MS = 250


class RedisBroker:
    """Carries updates, awareness and state vectors between processes."""

    def __init__(
        self,
        url: str,
        node: str,
        *,
        prefix: str = "collab",
        maxlen: int = 10_000,
    ) -> None:
        if aioredis is None:
            raise RuntimeError("the redis package is missing: pip install 'collab[redis]'")
        self.url = url
        self.node = node
        self.ready = False
        #: (Re)connections so far; each one resyncs every subscribed document.
        self.connects = 0
        self._deliver: Callable[[Message], None] = _nowhere
        self._prefix = prefix
        self._maxlen = maxlen
        self._redis: Any = aioredis.from_url(url, socket_connect_timeout=2)
        self._positions: dict[str, str] = {}
        self._outbox: deque[tuple[str, str, bytes]] = deque()
        self._wake_writer = asyncio.Event()
        self._wake_reader = asyncio.Event()
        self._resync: Callable[[str], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: Messages published and messages written (or given up) so far: flush() compares.
        self._published = 0
        self._written = 0
        self._progress = asyncio.Event()

    def key(self, doc: str) -> str:
        return f"{self._prefix}:doc:{doc}"

    async def start(
        self, deliver: Callable[[Message], None], resync: Callable[[str], None]
    ) -> None:
        """Start reading and writing: ``deliver`` gets the other processes' messages,
        ``resync(doc)`` runs after every reconnection."""
        self._deliver = deliver
        self._resync = resync
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="collab-redis-reader"),
            asyncio.create_task(self._write_loop(), name="collab-redis-writer"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: redis-py can sit on a cancelled blocking XREAD until its
            # connection is closed (below), and shutdown must not wait for it.
            _, stuck = await asyncio.wait(self._tasks, timeout=2)
            if stuck:
                log.debug("redis tasks still stopping: %s", [t.get_name() for t in stuck])
        # What was queued last (a departing client's presence removal) still goes out.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(2):
                while self._outbox and self.ready:
                    await self._send_batch()
        await self._redis.aclose()
        for task in self._tasks:
            if not task.done():
                with contextlib.suppress(asyncio.CancelledError, Exception, TimeoutError):
                    async with asyncio.timeout(2):
                        await task

    async def subscribe(self, doc: str) -> None:
        """Start following ``doc`` from the stream's current end.

        Called *before* the document is loaded from the store: whatever is
        published from now on reaches us, so nothing slips between the two.
        """
        position = "0-0"
        with contextlib.suppress(RedisError, OSError):
            info = await self._redis.xinfo_stream(self.key(doc))
            position = _text(info["last-generated-id"])
        self._positions[doc] = position
        self._wake_reader.set()

    def unsubscribe(self, doc: str) -> None:
        self._positions.pop(doc, None)

    def publish(self, doc: str, kind: str, data: bytes) -> None:
        """Queue a message for the other processes; never blocks, never raises."""
        if not self.ready:
            return  # the resync after reconnecting carries it
        self._outbox.append((doc, kind, data))
        self._published += 1
        self._wake_writer.set()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was published so far is in Redis.

        Returns early while Redis is unreachable: the resync after
        reconnecting carries those messages.
        """
        target = self._published
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.ready and self._written < target:
                    self._progress.clear()
                    await self._progress.wait()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(1):
                return bool(await self._redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    # -- tasks -----------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._outbox:
                try:
                    await self._send_batch()
                except (RedisError, OSError) as exc:
                    # The reader reconnects, and the resync that follows sends
                    # everything these messages carried.
                    log.warning("publishing to redis failed: %r", exc)
                    self._outbox.clear()
                    self._written = self._published
                    self.ready = False
                    self._progress.set()
                    break

    async def _send_batch(self) -> None:
        batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 512))]
        async with self._redis.pipeline(transaction=False) as pipe:
            for doc, kind, data in batch:
                pipe.xadd(
                    self.key(doc),
                    {"node": self.node, "kind": kind, "data": data},
                    maxlen=self._maxlen,
                    approximate=True,
                )
            await pipe.execute()
        self._written += len(batch)
        self._progress.set()

    async def _read_loop(self) -> None:
        delay = _RETRY_MIN
        while True:
            try:
                await self._redis.ping()
                if not self.ready:
                    self.ready = True
                    self.connects += 1
                    log.info("connected to redis %s as node %s", self.url, self.node)
                    if self.connects > 1:
                        self._resync_all()
                delay = _RETRY_MIN
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if self.ready:
                    log.warning("lost redis %s: %r; serving local clients only", self.url, exc)
                self.ready = False
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _RETRY_MAX)

    async def _read_once(self) -> None:
        if not self._positions:
            self._wake_reader.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_BLOCK_MS / 1000):
                    await self._wake_reader.wait()
            return
        streams = {self.key(doc): pos for doc, pos in self._positions.items()}
        reply = await self._redis.xread(streams, block=_BLOCK_MS, count=1000)
        docs = {self.key(doc): doc for doc in self._positions}
        for raw_key, entries in reply or []:
            doc = docs.get(_text(raw_key))
            if doc is None:
                continue
            for entry_id, fields in entries:
                if doc not in self._positions:
                    break  # unsubscribed meanwhile
                self._positions[doc] = _text(entry_id)
                node = _text(fields.get(b"node", b""))
                if node == self.node:
                    continue
                self._deliver(
                    Message(
                        doc=doc,
                        kind=_text(fields.get(b"kind", b"")),
                        data=bytes(fields.get(b"data", b"")),
                        node=node,
                    )
                )

    def _resync_all(self) -> None:
        if self._resync is None:
            return
        for doc in list(self._positions):
            self._resync(doc)


def _nowhere(message: Message) -> None:
    """Messages before start() have nobody to go to (there are none: nothing is read yet)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
