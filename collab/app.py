"""The aiohttp application: routes, and the lifecycle of store and rooms."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import __version__
from .closecodes import CloseCode
from .config import Settings
from .keys import MANAGER, SETTINGS, STORE
from .rooms import RoomManager
from .store import open_store
from .ws import websocket_handler

log = logging.getLogger("collab.app")


def create_app(settings: Settings | None = None) -> web.Application:
    """Build the application; the store opens on startup and closes on cleanup."""
    settings = settings or Settings()
    app = web.Application(client_max_size=settings.max_message_size)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_rooms_ctx)
    app.on_shutdown.append(_going_away)
    app.router.add_get("/ws/{doc:.+}", websocket_handler)
    app.router.add_get("/healthz", _healthz)
    return app


async def _rooms_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = open_store(settings.store)
    await store.open()
    app[STORE] = store
    app[MANAGER] = RoomManager(
        store,
        unload_grace=settings.unload_grace,
        awareness_timeout=settings.awareness_timeout,
    )
    try:
        yield
    finally:
        await app[MANAGER].close()
        await store.close()


async def _going_away(app: web.Application) -> None:
    # Runs before aiohttp cancels the handlers: tell every client to
    # reconnect (1001) and flush, so a restart loses nothing.
    await app[MANAGER].close(CloseCode.GOING_AWAY)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})
