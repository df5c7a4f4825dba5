"""One client socket on one document, with its bounded send queue.

The room never awaits a socket: it hands frames to ``Connection.send_*``,
which only appends to a queue that a single writer task drains, so frames
of one socket keep their order and a slow reader never slows the room.

A reader that falls behind loses nothing: once its queue holds
``queue_limit`` frames, the pending document updates are merged into one
update and the pending awareness updates into one awareness update (each
client's newest record), so the backlog costs about one document's size.
Only a connection whose backlog still exceeds ``max_queue_bytes``, or
whose socket has accepted nothing for ``stall_timeout`` seconds, is
closed with 1013 (try again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from pycrdt import merge_updates

from . import protocol
from .closecodes import CloseCode
from .metrics import Traffic

log = logging.getLogger("collab.connection")

_ids = itertools.count(1)


class Channel(Protocol):
    """The transport seam: a WebSocket, or an in-memory pair in tests."""

    async def send(self, frame: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class _Kind(enum.Enum):
    UPDATE = enum.auto()
    AWARENESS = enum.auto()
    OTHER = enum.auto()


@dataclass(slots=True)
class _Item:
    kind: _Kind
    frame: bytes
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class SendLimits:
    """How far a connection may fall behind before it is merged, then dropped."""

    queue_limit: int = 64
    max_queue_bytes: int = 64 * 1024 * 1024
    stall_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What a connection may send: messages and bytes per second, with bursts."""

    messages: float = 500.0
    bytes: float = 8 * 1024 * 1024
    burst_seconds: float = 2.0
    #: A burst always admits at least one message of this size.
    max_message_size: int = 16 * 1024 * 1024


class TokenBucket:
    """Refills at ``rate`` per second up to ``capacity``; ``take`` spends."""

    __slots__ = ("_level", "_rate", "_stamp", "capacity")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self._rate = rate
        self.capacity = capacity
        self._level = capacity
        self._stamp = now

    def take(self, amount: float, now: float) -> bool:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now
        if amount > self._level:
            return False
        self._level -= amount
        return True


@dataclass(slots=True)
class Counters:
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    collapses: int = 0
    opened_at: float = field(default_factory=lambda: asyncio.get_running_loop().time())


class Connection:
    """Owns one channel, its send queue and its writer task; closes exactly once."""

    def __init__(
        self,
        channel: Channel,
        *,
        doc: str,
        peer: str,
        limits: SendLimits | None = None,
        rate: RateLimits | None = None,
        traffic: Traffic | None = None,
        can_write: bool = True,
    ) -> None:
        self.id = next(_ids)
        self.doc = doc
        self.peer = peer
        self.can_write = can_write
        self.counters = Counters()
        self.close_code: int | None = None
        self.close_reason = ""
        self._channel = channel
        self._limits = limits or SendLimits()
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._sending_since: float | None = None
        self._loop = asyncio.get_running_loop()
        self._traffic = traffic or Traffic()
        now = self._loop.time()
        self._rate_messages: TokenBucket | None = None
        self._rate_bytes: TokenBucket | None = None
        if rate is not None:
            self._rate_messages = TokenBucket(
                rate.messages, rate.messages * rate.burst_seconds, now
            )
            self._rate_bytes = TokenBucket(
                rate.bytes, max(rate.bytes * rate.burst_seconds, rate.max_message_size), now
            )
        self._writer = self._loop.create_task(self._write_loop(), name=f"collab-writer-{self.id}")
        self._closed = self._loop.create_future()

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.peer} doc={self.doc!r}>"

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    async def wait_closed(self) -> int:
        """Wait until the connection is closed; return the close code."""
        return await asyncio.shield(self._closed)

    # -- receiving ------------------------------------------------------------

    def received(self, size: int) -> bool:
        """Count an incoming frame; False when it breaks the rate limit."""
        self.counters.frames_in += 1
        self.counters.bytes_in += size
        self._traffic.messages_in += 1
        self._traffic.bytes_in += size
        if self._rate_messages is None or self._rate_bytes is None:
            return True
        now = self._loop.time()
        return self._rate_messages.take(1, now) and self._rate_bytes.take(size, now)

    # -- sending --------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue a frame that must arrive as it is (sync steps, replies)."""
        self._enqueue(_Item(_Kind.OTHER, frame))

    def send_update(self, frame: bytes, update: bytes) -> None:
        """Queue a document update frame; ``update`` lets a backlog be merged."""
        self._enqueue(_Item(_Kind.UPDATE, frame, update))

    def send_awareness(self, frame: bytes, payload: bytes) -> None:
        """Queue an awareness frame; ``payload`` lets a backlog be merged."""
        self._enqueue(_Item(_Kind.AWARENESS, frame, payload))

    def _enqueue(self, item: _Item) -> None:
        if self.closed:
            return
        self._queue.append(item)
        self._queued_bytes += len(item.frame)
        if len(self._queue) >= self._limits.queue_limit:
            self._check_stalled()
            if not self.closed:
                self._collapse()
        if not self._wakeup.is_set():
            self._wakeup.set()

    def _check_stalled(self) -> None:
        since = self._sending_since
        if since is not None and self._loop.time() - since > self._limits.stall_timeout:
            self.close(
                CloseCode.TRY_AGAIN_LATER,
                f"socket accepted nothing for {self._limits.stall_timeout:g}s",
            )

    def _collapse(self) -> None:
        """Merge queued updates and awareness so the backlog stops growing."""
        updates = [i.payload for i in self._queue if i.kind is _Kind.UPDATE]
        awareness = [i.payload for i in self._queue if i.kind is _Kind.AWARENESS]
        items = [i for i in self._queue if i.kind is _Kind.OTHER]
        if updates:
            merged = updates[0] if len(updates) == 1 else merge_updates(*updates)
            items.append(_Item(_Kind.UPDATE, protocol.sync_update(merged), merged))
        if awareness:
            payload = protocol.merge_awareness(awareness)
            items.append(_Item(_Kind.AWARENESS, protocol.awareness(payload), payload))
        self._queue = deque(items)
        self._queued_bytes = sum(len(i.frame) for i in items)
        self.counters.collapses += 1
        if self._queued_bytes > self._limits.max_queue_bytes:
            self.close(
                CloseCode.TRY_AGAIN_LATER,
                f"send backlog of {self._queued_bytes} bytes after merging",
            )
        elif len(self._queue) >= self._limits.queue_limit:
            # Only unmergeable frames are left (sync replies): a client that
            # keeps asking for them without reading is not worth keeping.
            self.close(CloseCode.TRY_AGAIN_LATER, f"{len(self._queue)} unmergeable frames queued")

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                item = self._queue.popleft()
                self._queued_bytes -= len(item.frame)
                self._sending_since = self._loop.time()
                await self._channel.send(item.frame)
                self._sending_since = None
                self.counters.frames_out += 1
                self.counters.bytes_out += len(item.frame)
                self._traffic.messages_out += 1
                self._traffic.bytes_out += len(item.frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away mid-send
            log.debug("send to %s failed: %r", self.peer, exc)
            self.close(CloseCode.GOING_AWAY, "send failed", abnormal=True)

    # -- closing --------------------------------------------------------------

    def close(self, code: int, reason: str = "", *, abnormal: bool = False) -> None:
        """Close the socket with ``code`` and log why; later calls do nothing.

        ``abnormal`` means the socket is already gone (or closed by aiohttp
        itself), so there is nothing left to send.
        """
        if self.closed:
            return
        self.close_code = code
        self.close_reason = reason
        self._queue.clear()
        self._queued_bytes = 0
        self._loop.create_task(self._close(code, reason, abnormal), name=f"collab-close-{self.id}")

    async def _close(self, code: int, reason: str, abnormal: bool) -> None:
        if self._writer is not asyncio.current_task():
            self._writer.cancel()
            with contextlib.suppress(BaseException):
                await self._writer
        if not abnormal:
            with contextlib.suppress(Exception):
                await self._channel.close(code, reason)
        if not self._closed.done():
            self._closed.set_result(code)

    def mark_closed(self, code: int | None) -> None:
        """Record that the peer closed the socket (called by the transport)."""
        if not self.closed:
            self.close(code if code is not None else 1006, "peer closed", abnormal=True)
