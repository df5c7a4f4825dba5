"""In-memory channels for testing rooms and connections without sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from collab import protocol
from collab.channel import Kind, Received


class MemoryChannel:
    """A ``Channel`` without a socket: records what a connection sends, and
    ``deliver``s what the client would send; ``block()`` makes sends hang
    like a full socket."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Received] = asyncio.Queue()
        self.pongs: list[bytes] = []
        self.frames: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None
        self._open = asyncio.Event()
        self._open.set()
        self.sent = asyncio.Event()
        self.pings = 0
        self.aborted = False

    def block(self) -> None:
        self._open.clear()

    def unblock(self) -> None:
        self._open.set()

    async def send(self, frame: bytes) -> None:
        await self._open.wait()
        self.frames.append(frame)
        self.sent.set()

    async def ping(self) -> None:
        self.pings += 1

    def deliver(self, frame: bytes | str | None) -> None:
        """What the client sends next: bytes, a text frame, or None for its goodbye."""
        if frame is None:
            self.inbox.put_nowait(Received(Kind.CLOSED, code=1000))
        elif isinstance(frame, str):
            self.inbox.put_nowait(Received(Kind.TEXT, frame.encode()))
        else:
            self.inbox.put_nowait(Received(Kind.BINARY, frame))

    def receive(self) -> Awaitable[Received]:
        return self.inbox.get()

    def classify(self, raw: Received) -> Received:
        return raw

    async def pong(self, data: bytes) -> None:
        self.pongs.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def abort(self) -> None:
        self.aborted = True

    def messages(self) -> list[protocol.Message]:
        return [protocol.decode(f) for f in self.frames]

    def updates(self) -> list[bytes]:
        return [
            m.update
            for m in self.messages()
            if isinstance(m, (protocol.SyncUpdate, protocol.SyncStep2))
        ]
