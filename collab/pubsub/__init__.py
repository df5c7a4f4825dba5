"""Scale-out: server processes sharing documents through a broker (Redis)."""

from __future__ import annotations

import os
import socket
import uuid

from .base import AWARENESS, DELETED, STATE_VECTOR, UPDATE, Broker, Message

__all__ = ["AWARENESS", "DELETED", "STATE_VECTOR", "UPDATE", "Broker", "Message", "open_broker"]


def open_broker(url: str, *, prefix: str = "collab") -> Broker:
    """The broker a URL names (``redis://`` or ``rediss://``)."""
    node = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisBroker

        return RedisBroker(url, node, prefix=prefix)
    raise ValueError(f"unsupported broker URL {url!r} (expected redis://HOST:PORT/N)")
