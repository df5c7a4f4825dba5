"""The aiohttp application: routes, and the lifecycle of store and rooms."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from . import __version__
from .closecodes import CloseCode
from .config import Settings
from .guard import guard_middleware
from .http_api import routes as api_routes
from .keys import BROKER, MANAGER, METRICS, RATE_LIMITS, SEND_LIMITS, SETTINGS, STORE, BrokerSlot
from .metrics import CONTENT_TYPE, Metrics
from .pubsub import Broker, open_broker
from .rlimits import DescriptorWatch
from .rooms import RoomManager
from .static import setup_frontend
from .store import Store, open_store
from .ws import connection_limits, websocket_handler

log = logging.getLogger("collab.app")

#: Shorter HS256 secrets can be brute-forced from one token (RFC 7518 3.2).
MIN_SECRET_BYTES = 32


def create_app(settings: Settings | None = None) -> web.Application:
    """Build the application; the store opens on startup and closes on cleanup."""
    settings = settings or Settings()
    if settings.auth_secret == "":
        # An empty secret used to mean "open": a typo must not unlock the server.
        raise ValueError("auth_secret is empty: give a secret, or None for an open server")
    app = web.Application(
        client_max_size=settings.max_message_size,
        middlewares=[guard_middleware(settings)],
        # aiohttp closes a connection that has not sent a complete request
        # within keepalive_timeout of connecting or of its last response:
        # the slowloris defence (aiohttp >= 3.14.4 starts the timer at connect).
        handler_args={"keepalive_timeout": settings.request_timeout},
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[SEND_LIMITS], app[RATE_LIMITS] = connection_limits(settings)
    app.cleanup_ctx.append(_rooms_ctx)
    app.cleanup_ctx.append(_descriptors_ctx)
    app.on_shutdown.append(_going_away)
    # [\s\S]: "." would not match a newline (%0A) in a document name.
    app.router.add_get(r"/ws/{doc:[\s\S]+}", websocket_handler)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_routes(api_routes)
    setup_frontend(app)
    return app


def store_from_settings(settings: Settings) -> Store:
    """The (unopened) store the settings name, with their commit and compaction knobs."""
    if urlsplit(settings.store).scheme == "memory":
        return open_store(settings.store)
    return open_store(
        settings.store,
        commit_window=settings.commit_window,
        compact_updates=settings.compact_updates,
        compact_bytes=settings.compact_bytes,
    )


async def _rooms_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = store_from_settings(settings)
    await store.open()
    app[STORE] = store
    metrics = app[METRICS]
    broker: Broker | None = None
    if settings.redis_url:
        broker = open_broker(
            settings.redis_url,
            lambda message: manager.deliver(message),
            prefix=settings.redis_prefix,
        )
        if urlsplit(settings.store).scheme in ("memory", "sqlite"):
            log.warning(
                "--redis-url with a %s store: each process keeps its own copy; "
                "use postgresql:// so the processes share one",
                urlsplit(settings.store).scheme,
            )
    app[BROKER] = BrokerSlot(broker)
    manager = app[MANAGER] = RoomManager(
        store,
        unload_grace=settings.unload_grace,
        awareness_timeout=settings.awareness_timeout,
        heartbeat=settings.heartbeat,
        max_doc_size=settings.max_doc_size,
        metrics=metrics,
        broker=broker,
    )
    manager.start()
    if broker is not None:
        await broker.start(manager.resync)
        metrics.gauge(
            "collab_broker_ready", "1 while Redis is reachable", lambda: float(broker.ready)
        )
    on_commit = getattr(store, "on_commit", "absent")
    if on_commit is None:  # group-committing stores time their commits
        store.on_commit = lambda updates, seconds: metrics.commit_seconds.observe(seconds)  # type: ignore[attr-defined]
    metrics.gauge(
        "collab_connections", "Open WebSocket connections", lambda: manager.connection_count
    )
    metrics.gauge("collab_documents_loaded", "Documents open in memory", lambda: len(manager.rooms))
    metrics.gauge("collab_store_healthy", "1 while the store commits", lambda: float(store.healthy))
    if settings.auth_secret is None:
        log.warning(
            "no --auth-secret: the server is OPEN, anyone who can reach it may read and "
            "write every document"
        )
    elif len(settings.auth_secret.encode()) < MIN_SECRET_BYTES:
        log.warning(
            "--auth-secret is only %d bytes: tokens signed with it can be forged by "
            "guessing it; use %d random bytes or more (e.g. python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')",
            len(settings.auth_secret.encode()),
            MIN_SECRET_BYTES,
        )
    try:
        yield
    finally:
        await app[MANAGER].close()
        if broker is not None:
            await broker.close()
        await store.close()


async def _descriptors_ctx(app: web.Application) -> AsyncIterator[None]:
    """Log, in our format, when accepts fail for want of file descriptors."""
    watch = DescriptorWatch()
    watch.start()
    try:
        yield
    finally:
        watch.stop()


async def _going_away(app: web.Application) -> None:
    # Runs before aiohttp cancels the handlers: tell every client to
    # reconnect (1001) and flush, so a restart loses nothing.
    await app[MANAGER].close(CloseCode.GOING_AWAY)


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
