"""Document administration for the CLI: list, export, import, compact.

Each command works either on a store directly (``--store``, the default:
the server may be stopped) or on a running server through its HTTP API
(``--server``: an import then reaches every open editor at once).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
from pycrdt import Doc

from .cli import CommandError
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
        check_update(update)
        self.store.append(name, update, "server:import")
        await self.store.flush()

    async def compact(self, name: str) -> None:
        await self.store.compact(name)

    async def close(self) -> None:
        await self.store.close()


class ServerTarget:
    """Work through a running server's HTTP API."""

    def __init__(self, base_url: str, *, token: str | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CommandError(
                f"--server takes the server's http:// URL, e.g. http://{parts.path or base_url} "
                f"(not {base_url!r})",
                2,
            )
        self.base = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.http = aiohttp.ClientSession(raise_for_status=False, headers=headers)

    def _url(self, name: str, suffix: str = "") -> str:
        return f"{self.base}/api/docs/{quote(name, safe='')}{suffix}"

    @asynccontextmanager
    async def _request(
        self, method: str, url: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request whose connection failure is one clear line."""
        try:
            async with self.http.request(method, url, **kwargs) as resp:
                yield resp
        except aiohttp.ClientConnectionError as exc:
            cause = getattr(exc, "os_error", None)
            why = getattr(cause, "strerror", None) or str(exc)
            raise CommandError(f"cannot reach the server at {self.base}: {why}") from None

    async def list(self) -> list[DocInfo]:
        async with self._request("GET", f"{self.base}/api/docs") as resp:
            await _ok(resp)
            body: dict[str, Any] = await resp.json()
        return [
            DocInfo(d["name"], d["size"], d["updates"], d["updated_at"] or 0.0)
            for d in body["docs"]
        ]

    async def export(self, name: str) -> bytes | None:
        async with self._request("GET", self._url(name, "/update")) as resp:
            if resp.status == 404:
                return None
            await _ok(resp)
            return await resp.read()

    async def import_update(self, name: str, update: bytes) -> None:
        async with self._request("POST", self._url(name, "/update"), data=update) as resp:
            await _ok(resp)

    async def close(self) -> None:
        await self.http.close()


async def _ok(resp: aiohttp.ClientResponse) -> None:
    """Raise ``CommandError`` with the server's own message for an error status."""
    if resp.status < 400:
        return
    text = (await resp.text()).strip()
    try:
        message = str((await resp.json(content_type=None))["message"])
    except (ValueError, KeyError, TypeError):
        message = " ".join(text.split())[:200] or resp.reason or ""
    hint = ""
    if resp.status == 401:
        hint = " (give --token or set COLLAB_TOKEN; `collab token` mints one)"
    elif resp.status == 404 and "/api/" in str(resp.url) and "text/html" in resp.content_type:
        hint = " (is this a collab server?)"
    raise CommandError(f"the server answered {resp.status}: {message}{hint}")


def check_update(update: bytes) -> None:
    """Raise ``CommandError`` unless ``update`` is a Yjs update."""
    try:
        Doc().apply_update(update)
    except Exception as exc:
        raise CommandError(f"not a Yjs update: {exc}") from None


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
