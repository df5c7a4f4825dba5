"""collab: a real-time collaborative editing backend speaking the Yjs protocol.

The client side (``connect``, ``Session``) imports only what a bot needs;
the server side (``Server``, ``Settings``, hooks, ``create_app``) is
imported on first use, so a bot does not pay for aiohttp's server.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .client import CannotConnect, ConnectionClosed, Session, SharedText, UpgradeRefused, connect
from .closecodes import CloseCode

if TYPE_CHECKING:
    from .app import create_app
    from .auth import issue_token
    from .config import Settings
    from .document import DocumentHandle
    from .hooks import (
        Change,
        ConnectionEvent,
        ConnectRequest,
        Hooks,
        IncomingAwareness,
        IncomingUpdate,
        Persisted,
        Principal,
        Reject,
        Unload,
    )
    from .origins import ServerOrigin
    from .server import Server
    from .webhooks import Webhook

__all__ = [
    "CannotConnect",
    "Change",
    "CloseCode",
    "ConnectRequest",
    "ConnectionClosed",
    "ConnectionEvent",
    "DocumentHandle",
    "Hooks",
    "IncomingAwareness",
    "IncomingUpdate",
    "Persisted",
    "Principal",
    "Reject",
    "Server",
    "ServerOrigin",
    "Session",
    "Settings",
    "SharedText",
    "Unload",
    "UpgradeRefused",
    "Webhook",
    "__version__",
    "connect",
    "create_app",
    "issue_token",
]

#: Server-side names and the module each comes from (imported on first use).
_LAZY = {
    "create_app": "app",
    "issue_token": "auth",
    "Settings": "config",
    "DocumentHandle": "document",
    "Change": "hooks",
    "ConnectionEvent": "hooks",
    "ConnectRequest": "hooks",
    "Hooks": "hooks",
    "IncomingAwareness": "hooks",
    "IncomingUpdate": "hooks",
    "Persisted": "hooks",
    "Principal": "hooks",
    "Reject": "hooks",
    "Unload": "hooks",
    "ServerOrigin": "origins",
    "Server": "server",
    "Webhook": "webhooks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'collab' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
