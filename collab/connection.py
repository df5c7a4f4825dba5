"""One client socket on one document, with its bounded send queue.

The room never awaits a socket: it hands frames to ``Connection.send_*``.
A frame goes straight to the socket when nothing is in flight (the common
case: the transport takes it without suspending), so an idle or keeping-up
connection owns no task, no queue and no future.  Only when the socket
pushes back does a writer task finish that frame and drain a queue behind
it, so frames of one socket keep their order and a slow reader never slows
the room.

A reader that falls behind loses nothing: once its queue holds
``queue_limit`` frames, the pending document updates are merged into one
update and the pending awareness updates into one awareness update (each
client's newest record), so the backlog costs about one document's size.
Only a connection whose backlog still exceeds ``max_queue_bytes``, or
whose socket has accepted nothing for ``stall_timeout`` seconds, is
closed with 1013 (try again later).

The answer to a sync step 1 may come in pieces (a big document, issue #16):
each piece goes out only once the previous one was written, behind whatever
was queued meanwhile, so presence, live updates and keepalives still flow
while a joiner downloads a 70 MB document.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from pycrdt import merge_updates

from . import protocol
from .channel import Channel
from .closecodes import CloseCode
from .hooks import ANONYMOUS, Principal
from .metrics import Traffic

log = logging.getLogger("collab.connection")

_ids = itertools.count(1)


class _Kind(enum.Enum):
    UPDATE = enum.auto()
    AWARENESS = enum.auto()
    #: The answer to a sync step 1, encoded when it is sent (payload: the state vector).
    STEP2 = enum.auto()
    #: An answer in pieces, sent one at a time (``frames``, from ``next`` on).
    PIECES = enum.auto()
    OTHER = enum.auto()


#: The frames answering a sync step 1: one sync step 2 (a frame, or a list of
#: one), or sync updates ending with a sync step 2; a future when they are
#: being computed aside.
Pieces: TypeAlias = "Sequence[bytes] | asyncio.Future[Sequence[bytes]]"
Step2Answer: TypeAlias = "bytes | Pieces"

#: The no-op awareness update (no entries): keeps a stock client's 30 s
#: "nothing received" timer from firing while it uploads (y-websocket #203);
#: y-protocols applies it without an event.
KEEPALIVE = b"\x01\x01\x00"


@dataclass(slots=True)
class _Item:
    kind: _Kind
    frame: bytes
    payload: bytes = b""
    answer: Callable[[bytes], Step2Answer] | None = None
    frames: Pieces = ()
    next: int = 0


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


def _step(coro: Coroutine[Any, Any, None]) -> Awaitable[None] | None:
    """Run ``coro`` up to its first suspension, without a task.

    None when it finished (its exception propagates), else an awaitable for
    the rest: a socket that takes a frame at once needs no task at all.
    """
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return _resume(coro, waiting)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, None, None]:
    """Continue, inside a task, a coroutine that was started outside one.

    ``waiting`` is what its first step yielded (the future it waits on); the
    task waits on that, then steps the coroutine on, as ``await`` would have.
    """
    while True:
        try:
            yield waiting
        except BaseException as exc:  # the task was cancelled: pass it in
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = coro.send(None)
            except StopIteration:
                return


class Connection:
    """Owns one channel and, while the socket pushes back, a queue and a writer task.

    Ten thousand idle connections are ten thousand of these, so every field
    is a slot and everything transient is created only while it is needed.
    """

    __slots__ = (
        "_channel",
        "_closed",
        "_finished",
        "_keepalive",
        "_limits",
        "_loop",
        "_pinged_at",
        "_queue",
        "_queued_bytes",
        "_rate_bytes",
        "_rate_messages",
        "_sending_since",
        "_sent_at",
        "_traffic",
        "_writer",
        "can_write",
        "close_code",
        "close_reason",
        "collapses",
        "doc",
        "keepalives",
        "expires",
        "id",
        "last_seen",
        "peer",
        "principal",
    )

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
        principal: Principal = ANONYMOUS,
        keepalive: float | None = 10.0,
    ) -> None:
        self.id = next(_ids)
        #: Who the connection acts for (hooks, logs and attribution name it).
        self.principal = principal
        self.doc = doc
        self.peer = peer
        self.can_write = can_write
        #: When its token expires (Unix seconds): the room manager's tick closes it with 4401.
        self.expires: float | None = None
        #: How often a backlog was merged (a sign of a slow reader).
        self.collapses = 0
        #: No-op awareness frames sent to keep an idle client's timer alive.
        self.keepalives = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._channel = channel
        self._limits = limits or _DEFAULT_LIMITS
        #: Frames waiting behind one whose send suspended; None when there are none.
        self._queue: deque[_Item] | None = None
        self._queued_bytes = 0
        #: The task finishing a suspended send and draining the queue, if any.
        self._writer: asyncio.Task[None] | None = None
        self._sending_since: float | None = None
        self._loop = asyncio.get_running_loop()
        self._traffic = traffic or Traffic()
        now = self.last_seen = self._sent_at = self._loop.time()
        #: Seconds without a frame sent after which the no-op awareness frame goes out.
        self._keepalive = keepalive
        #: When the unanswered ping went out (None: none is outstanding).
        self._pinged_at: float | None = None
        self._rate_messages: TokenBucket | None = None
        self._rate_bytes: TokenBucket | None = None
        if rate is not None:
            self._rate_messages = TokenBucket(
                rate.messages, rate.messages * rate.burst_seconds, now
            )
            self._rate_bytes = TokenBucket(
                rate.bytes, max(rate.bytes * rate.burst_seconds, rate.max_message_size), now
            )
        #: Set once the socket is closed; created only for someone who waits.
        self._closed: asyncio.Future[int] | None = None
        self._finished = False

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.peer} doc={self.doc!r}>"

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    @property
    def backlog(self) -> int:
        """Bytes queued behind the frame in flight."""
        return self._queued_bytes

    @property
    def sending(self) -> bool:
        """Whether a frame is in flight or queued."""
        return self._writer is not None

    async def wait_closed(self) -> int:
        """Wait until the connection is closed; return the close code."""
        if not self._finished:
            if self._closed is None:
                self._closed = self._loop.create_future()
            await asyncio.shield(self._closed)
        assert self.close_code is not None
        return self.close_code

    # -- receiving ------------------------------------------------------------

    def received(self, size: int) -> bool:
        """Count an incoming frame; False when it breaks the rate limit."""
        self._traffic.messages_in += 1
        self._traffic.bytes_in += size
        now = self.last_seen = self._loop.time()
        self._pinged_at = None  # any message answers a ping
        if self._rate_messages is None or self._rate_bytes is None:
            return True
        return self._rate_messages.take(1, now) and self._rate_bytes.take(size, now)

    def alive(self, now: float | None = None) -> None:
        """The peer showed a sign of life (a message, a ping or a pong)."""
        self.last_seen = self._loop.time() if now is None else now
        self._pinged_at = None

    def check_alive(self, now: float, interval: float) -> None:
        """Ping a peer silent for ``interval``; drop one silent ``interval / 2`` after it.

        Called for every connection by one server-wide timer, so an idle
        connection costs no timer of its own.  Also drops a socket that has
        accepted nothing for ``stall_timeout`` even when no new frame comes.
        """
        if self.closed:
            return
        self._check_stalled()
        if self.closed:
            return
        if self._pinged_at is not None:
            if now - self._pinged_at >= interval / 2:
                # A half-open socket would never complete a closing handshake.
                self._channel.abort()
                self.close(CloseCode.GOING_AWAY, "no pong: peer unresponsive", abnormal=True)
        elif now - self.last_seen >= interval:
            self._pinged_at = now
            try:
                rest = _step(self._channel.ping())
            except Exception as exc:
                self._send_failed(exc)
                return
            if rest is not None:  # the socket pushed back; finish it aside
                self._loop.create_task(_ignore_errors(rest), name=f"collab-ping-{self.id}")

    def keep_alive(self, now: float) -> None:
        """Send the no-op awareness frame when nothing was sent for ``keepalive`` seconds.

        Pings never reach a browser's JavaScript: only a message resets the
        stock client's 30 s timer, and a client busy uploading a big update
        receives nothing else (issue #16).  Called by the server-wide tick,
        with or without a heartbeat.
        """
        keepalive = self._keepalive
        if (
            keepalive is not None
            and not self.closed
            and self._writer is None
            and now - self._sent_at >= keepalive
        ):
            self.send(KEEPALIVE)
            self.keepalives += 1

    # -- sending --------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Send a frame that must arrive as it is (sync steps, replies)."""
        self._enqueue(_Item(_Kind.OTHER, frame))

    def send_update(self, frame: bytes, update: bytes) -> None:
        """Send a document update frame; ``update`` lets a backlog be merged."""
        self._enqueue(_Item(_Kind.UPDATE, frame, update))

    def send_awareness(self, frame: bytes, payload: bytes) -> None:
        """Send an awareness frame; ``payload`` lets a backlog be merged."""
        self._enqueue(_Item(_Kind.AWARENESS, frame, payload))

    def send_step2(self, state_vector: bytes, answer: Callable[[bytes], Step2Answer]) -> None:
        """Answer a sync step 1 with ``answer(state_vector)``, computed when it can be sent.

        The answer may be several frames: they are sent one by one, each after
        the previous one was written and behind what was queued meanwhile.

        At most one answer waits per connection: a later step 1 replaces the
        state vector of the waiting one (a step 2 holds the whole difference,
        so the later answer covers the earlier), and a socket that never
        reads costs one encoding, not one per step 1 (issue #18).
        """
        queue = self._queue
        if queue is not None:
            for item in queue:
                if item.kind is _Kind.STEP2:
                    item.payload = state_vector
                    return
        self._enqueue(_Item(_Kind.STEP2, b"", state_vector, answer))

    def _enqueue(self, item: _Item) -> None:
        if self.closed:
            return
        if self._writer is None:
            if item.kind is _Kind.STEP2:
                item = _answered(item)
                if item.kind is _Kind.PIECES:
                    # In pieces or computed aside: a writer task sends them.
                    self._queue = deque([item])
                    self._sending_since = self._loop.time()
                    self._writer = self._loop.create_task(
                        self._drain(None, b""), name=f"collab-writer-{self.id}"
                    )
                    return
            self._send_now(item.frame)
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(item)
        self._queued_bytes += len(item.frame)
        # Bytes are counted at every enqueue: a few huge frames must not
        # wait for the frame count to be checked.
        if (
            len(queue) >= self._limits.queue_limit
            or self._queued_bytes > self._limits.max_queue_bytes
        ):
            self._check_stalled()
            if not self.closed:
                self._collapse(queue)

    def _send_now(self, frame: bytes) -> None:
        """Write ``frame`` without a task; start one only if the socket pushes back."""
        try:
            rest = _step(self._channel.send(frame))
        except Exception as exc:
            self._send_failed(exc)
            return
        if rest is None:
            self._sent(frame)
            return
        self._sending_since = self._loop.time()
        self._writer = self._loop.create_task(
            self._drain(rest, frame), name=f"collab-writer-{self.id}"
        )

    def _sent(self, frame: bytes) -> None:
        self._sent_at = self._loop.time()
        self._traffic.messages_out += 1
        self._traffic.bytes_out += len(frame)

    def _send_failed(self, exc: Exception) -> None:
        log.debug("send to %s failed: %r", self.peer, exc)
        self.close(CloseCode.GOING_AWAY, "send failed", abnormal=True)

    async def _drain(self, in_flight: Awaitable[None] | None, frame: bytes) -> None:
        """Finish the suspended send, then everything queued behind it."""
        try:
            if in_flight is not None:
                await in_flight
                self._sent(frame)
            while self._queue:
                item = self._queue.popleft()
                self._queued_bytes -= len(item.frame)
                self._sending_since = self._loop.time()
                more = False
                if item.kind is _Kind.STEP2:
                    item = _answered(item)
                if item.kind is _Kind.PIECES:
                    frames = item.frames
                    if isinstance(frames, asyncio.Future):
                        # Shared by the joiners of one version: never cancel it.
                        frames = item.frames = await asyncio.shield(frames)
                    frame = frames[item.next]
                    item.next += 1
                    more = item.next < len(frames)
                else:
                    frame = item.frame
                await self._channel.send(frame)
                self._sent(frame)
                if more and self._queue is not None and not self.closed:
                    # The next piece goes behind what was queued meanwhile.
                    self._queue.append(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away mid-send
            self._send_failed(exc)
        finally:
            self._writer = None
            self._queue = None
            self._queued_bytes = 0
            self._sending_since = None

    def _check_stalled(self) -> None:
        since = self._sending_since
        if since is not None and self._loop.time() - since > self._limits.stall_timeout:
            self.close(
                CloseCode.TRY_AGAIN_LATER,
                f"socket accepted nothing for {self._limits.stall_timeout:g}s",
            )

    def _collapse(self, queue: deque[_Item]) -> None:
        """Merge queued updates and awareness so the backlog stops growing."""
        updates = [i.payload for i in queue if i.kind is _Kind.UPDATE]
        awareness = [i.payload for i in queue if i.kind is _Kind.AWARENESS]
        items = [i for i in queue if i.kind is not _Kind.UPDATE and i.kind is not _Kind.AWARENESS]
        if updates:
            merged = updates[0] if len(updates) == 1 else merge_updates(*updates)
            items.append(_Item(_Kind.UPDATE, protocol.sync_update(merged), merged))
        if awareness:
            payload = protocol.merge_awareness(awareness)
            items.append(_Item(_Kind.AWARENESS, protocol.awareness(payload), payload))
        self._queue = deque(items)
        self._queued_bytes = sum(len(i.frame) for i in items)
        self.collapses += 1
        if self._queued_bytes > self._limits.max_queue_bytes:
            self.close(
                CloseCode.TRY_AGAIN_LATER,
                f"send backlog of {self._queued_bytes} bytes after merging",
            )
        elif len(self._queue) >= self._limits.queue_limit:
            # Only unmergeable frames are left (sync replies): a client that
            # keeps asking for them without reading is not worth keeping.
            self.close(CloseCode.TRY_AGAIN_LATER, f"{len(self._queue)} unmergeable frames queued")

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
        if self._queue is not None:
            self._queue.clear()
        self._queued_bytes = 0
        self._loop.create_task(self._close(code, reason, abnormal), name=f"collab-close-{self.id}")

    async def _close(self, code: int, reason: str, abnormal: bool) -> None:
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
        if not abnormal:
            with contextlib.suppress(Exception):
                await self._channel.close(code, reason)
        self._finished = True
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(code)

    def mark_closed(self, code: int | None) -> None:
        """Record that the peer closed the socket (called by the transport)."""
        if not self.closed:
            self.close(code if code is not None else 1006, "peer closed", abnormal=True)


def _answered(item: _Item) -> _Item:
    """A STEP2 item with its answer: one frame to send as it is, or pieces."""
    assert item.answer is not None
    frames = item.answer(item.payload)
    if isinstance(frames, bytes):
        return _Item(_Kind.OTHER, frames)
    if isinstance(frames, asyncio.Future):
        return _Item(_Kind.PIECES, b"", frames=frames)
    if len(frames) == 1:
        return _Item(_Kind.OTHER, frames[0])
    return _Item(_Kind.PIECES, b"", frames=frames)


async def _ignore_errors(rest: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):
        await rest


_DEFAULT_LIMITS = SendLimits()
