"""The transport seam: what a connection needs of a socket, whatever carries it.

A WebSocket (``ws.py``), an in-memory pair in tests, and the HTTP fallback
transport each adapt their own I/O to this small protocol; the connection
loop (``loop.py``) and ``Connection`` know nothing else about them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from typing import Any, NamedTuple, Protocol


class Kind(enum.Enum):
    """What ``Channel.receive`` got."""

    #: A binary frame: one Yjs protocol message.
    BINARY = enum.auto()
    #: A text frame (not part of the Yjs protocol).
    TEXT = enum.auto()
    #: A sign of life without content (a pong).
    ALIVE = enum.auto()
    #: A ping: answer it with ``Channel.pong(data)``.
    PING = enum.auto()
    #: The peer closed, or the socket is gone.
    CLOSED = enum.auto()
    #: The transport failed (and has closed the socket with ``code``).
    ERROR = enum.auto()


class Received(NamedTuple):
    kind: Kind
    data: bytes = b""
    #: For CLOSED and ERROR: the close code, when the transport knows it.
    code: int | None = None
    reason: str = ""


class Channel(Protocol):
    """Send and receive frames of one client; ``receive`` is called by one task only.

    Receiving is split in two so that an idle connection waits in the
    transport's own coroutine, not in one more of ours (ten thousand idle
    connections: every suspended frame counts): ``receive()`` returns the
    transport's awaitable as it is, and ``classify`` says what came.
    """

    async def send(self, frame: bytes) -> None: ...

    def receive(self) -> Awaitable[Any]:
        """The transport's next message, as the transport has it."""

    def classify(self, raw: Any) -> Received:
        """What ``raw`` (a result of ``receive``) is."""

    async def pong(self, data: bytes) -> None: ...

    async def ping(self) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None:
        """Drop the socket without a goodbye (the peer is gone or unresponsive)."""
