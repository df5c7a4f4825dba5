"""Document stores: one interface, one module per backend."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import DocInfo, Store
from .memory import MemoryStore

__all__ = ["DocInfo", "MemoryStore", "Store", "open_store"]


def open_store(url: str) -> Store:
    """Create the store a URL names (``memory://``)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    raise ValueError(f"unsupported store URL {url!r} (expected memory://)")
