"""Version history of a remote server, over its HTTP API (docs/history.md), for bots and the CLI.

::

    async with collab.remote.History("http://127.0.0.1:8080", token=token) as history:
        page = await history.sessions("notes")
        await history.restore("notes", to=page["sessions"][1]["to_seq"], by=["bot"])

Every method returns the route's JSON; a refusal raises ``RemoteError``
with the status and the API's stable ``code``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp

__all__ = ["History", "RemoteError"]


class RemoteError(Exception):
    """The server refused: HTTP ``status``, the API's ``code`` and its ``body``."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class History:
    """A server's history routes; use as ``async with`` (it owns an HTTP session)."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _doc(self, name: str, suffix: str = "") -> str:
        return f"{self.url}/api/docs/{quote(name, safe='')}{suffix}"

    async def _call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        if self._session is None:
            raise RuntimeError("use History as 'async with History(url) as history:'")
        async with self._session.request(
            method, url, json=json, params=params, headers=headers
        ) as resp:
            if resp.status >= 400:
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = {}
                if not isinstance(body, dict):
                    body = {}
                raise RemoteError(
                    resp.status,
                    str(body.get("error", f"http_{resp.status}")),
                    str(body.get("message", resp.reason or "")),
                    body,
                )
            if raw:
                return await resp.read()
            if resp.status == 204:
                return None
            return await resp.json()

    async def sessions(
        self, name: str, *, limit: int = 50, before: int | None = None, gap_ms: int = 60_000
    ) -> dict[str, Any]:
        """``GET /history``: editing sessions, newest first."""
        params = {"limit": str(limit), "gap_ms": str(gap_ms)}
        if before is not None:
            params["before"] = str(before)
        result: dict[str, Any] = await self._call("GET", self._doc(name, "/history"), params=params)
        return result

    async def at(self, name: str, point: str | int) -> dict[str, Any]:
        """``GET /at/{point}``: the document then, as JSON."""
        result: dict[str, Any] = await self._call(
            "GET", self._doc(name, f"/at/{quote(str(point), safe='')}")
        )
        return result

    async def state(self, name: str, point: str | int) -> bytes:
        """``GET /at/{point}?format=update``: the whole state then, as a Yjs update."""
        result: bytes = await self._call(
            "GET",
            self._doc(name, f"/at/{quote(str(point), safe='')}"),
            params={"format": "update"},
            raw=True,
        )
        return result

    async def diff(
        self, name: str, start: str | int, end: str | int | None = None
    ) -> dict[str, Any]:
        """``GET /diff``: text diff per root and the Yjs snapshot pair."""
        params = {"from": str(start)}
        if end is not None:
            params["to"] = str(end)
        result: dict[str, Any] = await self._call("GET", self._doc(name, "/diff"), params=params)
        return result

    async def restore(
        self,
        name: str,
        *,
        to: str | int,
        by: list[str] | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /restore``: back to ``to``, or undo ``by``'s changes since."""
        body: dict[str, Any] = {"to": to}
        if by:
            body["by"] = by
        headers = {"Idempotency-Key": key} if key else None
        result: dict[str, Any] = await self._call(
            "POST", self._doc(name, "/restore"), json=body, headers=headers
        )
        return result

    async def versions(self, name: str) -> list[dict[str, Any]]:
        result: dict[str, Any] = await self._call("GET", self._doc(name, "/versions"))
        versions: list[dict[str, Any]] = result["versions"]
        return versions

    async def create_version(self, name: str, label: str = "") -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", self._doc(name, "/versions"), json={"label": label}
        )
        return result

    async def delete_version(self, name: str, version_id: str) -> None:
        await self._call("DELETE", self._doc(name, f"/versions/{quote(version_id, safe='')}"))

    async def trash(self) -> list[dict[str, Any]]:
        result: dict[str, Any] = await self._call("GET", f"{self.url}/api/trash")
        documents: list[dict[str, Any]] = result["documents"]
        return documents

    async def untrash(self, name: str) -> None:
        await self._call("POST", f"{self.url}/api/trash/{quote(name, safe='')}/restore")

    async def purge(self, name: str) -> None:
        await self._call("DELETE", f"{self.url}/api/trash/{quote(name, safe='')}")
