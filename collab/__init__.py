"""collab: a real-time collaborative editing backend speaking the Yjs protocol."""

from __future__ import annotations

__version__ = "0.1.0"

from .client import CannotConnect, ConnectionClosed, Session, SharedText, UpgradeRefused, connect
from .closecodes import CloseCode

__all__ = [
    "CannotConnect",
    "CloseCode",
    "ConnectionClosed",
    "Session",
    "SharedText",
    "UpgradeRefused",
    "__version__",
    "connect",
    "create_app",
]


def __getattr__(name: str) -> object:
    # The server side is imported lazily so a bot needs only the client.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
