"""Hooks for the bench's ``collab-hooked`` server: what an application's hooks cost.

``CountChanges`` is a typical cheap ``on_change`` (it counts words of
nothing: it only tallies bytes per document); ``Receiver`` runs the
webhook receiver the server delivers to, on port 18099 beside it, so the
deliveries are real HTTP requests answered 204.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from collab.hooks import Change, Hooks

RECEIVER_PORT = 18099


class CountChanges(Hooks):
    def __init__(self) -> None:
        self.bytes: Counter[str] = Counter()

    async def on_change(self, event: Change) -> None:
        self.bytes[event.doc] += event.bytes


class Receiver(Hooks):
    """Answers every webhook delivery with 204 (no checks: its cost is not the server's)."""

    def __init__(self) -> None:
        self.deliveries = 0
        self._runner: web.AppRunner | None = None

    async def _receive(self, request: web.Request) -> web.Response:
        await request.read()
        self.deliveries += 1
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", RECEIVER_PORT).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
