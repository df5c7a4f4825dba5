"""What travels between server processes, and the broker interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: A document update (Yjs v1), applied by every peer.
UPDATE = "update"
#: An awareness update payload, relayed to every peer's local clients.
AWARENESS = "awareness"
#: A state vector: every peer answers with an update holding what it lacks.
STATE_VECTOR = "sv"
#: The document was deleted: every peer closes its connections and forgets it.
DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Message:
    doc: str
    kind: str
    data: bytes
    #: The process that published it.
    node: str


class Broker(Protocol):
    node: str
    #: False while the broker is unreachable (reported by /readyz).
    ready: bool

    async def start(
        self, deliver: Callable[[Message], None], resync: Callable[[str], None]
    ) -> None:
        """Start: ``deliver`` gets other processes' messages, ``resync(doc)`` runs after
        every reconnection."""

    async def close(self) -> None: ...

    async def subscribe(self, doc: str) -> None: ...

    def unsubscribe(self, doc: str) -> None: ...

    def publish(self, doc: str, kind: str, data: bytes) -> None: ...

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was published so far reached the other processes' stream."""
