"""Document stores: one interface, one module per backend."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .base import CorruptDocument, DocInfo, Store, StoreError, StoreInUse
from .memory import MemoryStore

__all__ = [
    "CorruptDocument",
    "DocInfo",
    "MemoryStore",
    "Store",
    "StoreError",
    "StoreInUse",
    "open_store",
]

SCHEMES = "memory://, sqlite:///PATH (sqlite:////ABSOLUTE/PATH), postgresql://..."

#: Options a ``sqlite:`` URL may carry in its query string, and their types.
_SQLITE_QUERY: dict[str, type] = {
    "commit_window": float,
    "compact_updates": int,
    "compact_bytes": int,
    "synchronous": str,
    "busy_timeout": float,
}


def open_store(url: str, **options: Any) -> Store:
    """Create (not open) the store a URL names; ``options`` go to its constructor.

    ``memory://``; ``sqlite:///data/collab.db`` (relative to the working
    directory) or ``sqlite:////var/lib/collab.db`` (absolute), optionally
    with ``?commit_window=0.05&compact_updates=1000``; ``postgresql://`` or
    ``postgres://`` (a libpq URI, needs ``collab[postgres]``).  Backends
    are imported only when used.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if options:
            raise ValueError(f"the memory store takes no options (got {', '.join(options)})")
        return MemoryStore()
    if scheme == "sqlite":
        if parts.netloc or not parts.path.strip("/"):
            raise ValueError(
                f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        for key, raw in parse_qsl(parts.query, keep_blank_values=True):
            kind = _SQLITE_QUERY.get(key)
            if kind is None:
                raise ValueError(
                    f"unknown option {key!r} in {url!r} (known: {', '.join(_SQLITE_QUERY)})"
                )
            try:
                options.setdefault(key, kind(raw))
            except ValueError:
                raise ValueError(
                    f"option {key}={raw!r} in {url!r} is not a {kind.__name__}"
                ) from None
        from .sqlite import SQLiteStore

        # "sqlite:///a.db" has the path "/a.db": the first slash separates it from the host.
        return SQLiteStore(unquote(parts.path[1:]), **options)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url, **options)
    raise ValueError(f"unsupported store URL {url!r} (expected {SCHEMES})")
