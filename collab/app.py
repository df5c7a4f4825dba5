"""The aiohttp application of a ``Server``: routes, guards, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from . import __version__, workers
from .config import Settings
from .guard import GUARD, Guard, add_route
from .http_api import setup_api
from .http_transport import setup_http_transport
from .keys import (
    BROKER,
    HOOKS,
    MANAGER,
    METRICS,
    RATE_LIMITS,
    SEND_LIMITS,
    SERVER,
    SETTINGS,
    STORE,
)
from .metrics import CONTENT_TYPE
from .rlimits import DescriptorWatch
from .static import setup_frontend
from .ws import connection_limits, websocket_route

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("collab.app")


def create_app(settings: Settings | None = None) -> web.Application:
    """The standalone server's application: ``Server(settings).app``."""
    from .server import Server

    return Server(settings).app


def build_app(server: Server, *, frontend: bool = True) -> web.Application:
    """The aiohttp application of ``server``: routes, guards and lifecycle.

    Routes are relative, so the application runs alone or mounted with
    ``parent.add_subapp("/collab/", app)``.
    """
    settings = server.settings
    if settings.auth_secret == "":
        # An empty secret used to mean "open": a typo must not unlock the server.
        raise ValueError("auth_secret is empty: give a secret, or None for an open server")
    app = web.Application(
        client_max_size=settings.max_message_size,
        # No middlewares: every route is registered behind the Guard instead
        # (guard.add_route says why).
        # aiohttp closes a connection that has not sent a complete request
        # within keepalive_timeout of connecting or of its last response:
        # the slowloris defence (aiohttp >= 3.14.4 starts the timer at connect).
        # (A sub-application's handler_args are its parent's to set.)
        handler_args={"keepalive_timeout": settings.request_timeout},
    )
    app[GUARD] = Guard(settings)
    app[SERVER] = server
    app[SETTINGS] = settings
    app[METRICS] = server.metrics
    app[HOOKS] = server.hooks
    app[SEND_LIMITS], app[RATE_LIMITS] = connection_limits(settings)
    app.cleanup_ctx.append(server.lifecycle)
    app.cleanup_ctx.append(_descriptors_ctx)
    app.on_shutdown.append(server.going_away)
    # [\s\S]: "." would not match a newline (%0A) in a document name.
    add_route(app, "GET", r"/ws/{doc:[\s\S]+}", websocket_route)
    add_route(app, "GET", "/healthz", _healthz)
    add_route(app, "GET", "/readyz", _readyz)
    add_route(app, "GET", "/metrics", _metrics)
    setup_api(app)
    setup_http_transport(app)
    if frontend:
        setup_frontend(app)
    return app


async def _descriptors_ctx(app: web.Application) -> AsyncIterator[None]:
    """Log, in our format, when accepts fail for want of file descriptors."""
    watch = DescriptorWatch()
    watch.start()
    try:
        yield
    finally:
        watch.stop()


def _ready(app: web.Application) -> bool:
    broker = app[BROKER].broker
    return app[STORE].healthy and (broker is None or broker.ready)


def _status(app: web.Application) -> dict[str, object]:
    manager = app[MANAGER]
    broker = app[BROKER].broker
    return {
        "version": __version__,
        "store": {"url": redacted(app[SETTINGS].store), "healthy": app[STORE].healthy},
        "redis": None if broker is None else {"node": broker.node, "ready": broker.ready},
        "worker": workers.status(),  # which worker of --workers answered, or null
        "documents": len(manager.rooms),
        "connections": sum(len(r.connections) for r in manager.rooms.values()),
    }


async def _healthz(request: web.Request) -> web.Response:
    """The process is up; ``store.healthy`` is false while commits are failing."""
    return web.json_response({"status": "ok", **_status(request.app)})


async def _readyz(request: web.Request) -> web.Response:
    """Ready to take traffic: 503 while the store cannot commit or Redis is unreachable."""
    status = _status(request.app)
    ready = _ready(request.app)
    return web.json_response(
        {"status": "ready" if ready else "unavailable", **status}, status=200 if ready else 503
    )


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
