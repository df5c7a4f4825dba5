"""Document administration for the CLI: list, export, import, compact.

Each command works either on a store directly (``--store``, the default:
the server may be stopped) or on a running server through its HTTP API
(``--server``: an import then reaches every open editor at once).
"""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from pycrdt import Doc

from .store import DocInfo, Store


class Target(Protocol):
    async def list(self) -> list[DocInfo]: ...

    async def export(self, name: str) -> bytes | None: ...

    async def import_update(self, name: str, update: bytes) -> None: ...

    async def close(self) -> None: ...


class StoreTarget:
    """Work on the store's files or database directly."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def list(self) -> list[DocInfo]:
        return await self.store.list()

    async def export(self, name: str) -> bytes | None:
        return await self.store.load(name)

    async def import_update(self, name: str, update: bytes) -> None:
        _check_update(update)
        self.store.append(name, update)
        await self.store.flush()

    async def compact(self, name: str) -> None:
        await self.store.compact(name)

    async def close(self) -> None:
        await self.store.close()


class ServerTarget:
    """Work through a running server's HTTP API."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.http = aiohttp.ClientSession(raise_for_status=False)

    def _url(self, name: str, suffix: str = "") -> str:
        return f"{self.base}/api/docs/{quote(name, safe='')}{suffix}"

    async def list(self) -> list[DocInfo]:
        async with self.http.get(f"{self.base}/api/docs") as resp:
            await _ok(resp)
            body: dict[str, Any] = await resp.json()
        return [
            DocInfo(d["name"], d["size"], d["updates"], d["updated_at"] or 0.0)
            for d in body["docs"]
        ]

    async def export(self, name: str) -> bytes | None:
        async with self.http.get(self._url(name, "/update")) as resp:
            if resp.status == 404:
                return None
            await _ok(resp)
            return await resp.read()

    async def import_update(self, name: str, update: bytes) -> None:
        async with self.http.post(self._url(name, "/update"), data=update) as resp:
            await _ok(resp)

    async def close(self) -> None:
        await self.http.close()


async def _ok(resp: aiohttp.ClientResponse) -> None:
    if resp.status >= 400:
        raise SystemExit(f"server answered {resp.status}: {(await resp.text()).strip()}")


def _check_update(update: bytes) -> None:
    try:
        Doc().apply_update(update)
    except Exception as exc:
        raise SystemExit(f"not a Yjs update: {exc}") from None


def format_table(docs: list[DocInfo]) -> str:
    """The ``collab ls`` table."""
    rows = [("NAME", "SIZE", "UPDATES", "CHANGED")]
    for d in docs:
        changed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.updated_at))
        rows.append((d.name, str(d.size), str(d.updates), changed))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    )
