"""collab as a library: one ``Server`` object owns the application, the rooms and the hooks.

``collab serve`` runs ``Server(settings).app``; an application embeds the
same object::

    server = collab.Server(settings, hooks=[MyHooks()])
    parent.add_subapp("/collab/", server.app)      # /collab/ws/{doc}, /collab/api/...

    async with server.open_document("notes", origin="assistant") as doc:
        doc.append("\\nSummary: ...")               # broadcast, replicated, stored

Startup, shutdown and the final store flush run whether the app runs alone
or as a sub-application (aiohttp runs a sub-app's ``cleanup_ctx`` and
``on_shutdown`` with its parent's).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .app import build_app
from .closecodes import CloseCode
from .config import Settings
from .connection import Connection
from .document import DocumentHandle
from .history import History
from .hooks import HookRunner, Hooks, Persisted, Principal
from .keys import (
    BROKER,
    LOOP_CONTEXT,
    MANAGER,
    STORE,
    BrokerSlot,
)
from .loop import Context
from .metrics import Metrics
from .origins import ServerOrigin
from .protocol import AwarenessBounds
from .pubsub import Broker, open_broker
from .room import RoomLimits
from .rooms import RoomManager
from .store import Store, open_store
from .store.group import GroupCommitStore
from .webhooks import Outbox, StoredEvent, Webhook

log = logging.getLogger("collab.server")


class NotRunning(RuntimeError):
    """The server's application has not started (or has stopped)."""


class Server:
    """The collab server as an object: settings, store, hooks, rooms and the aiohttp app.

    ``store`` and ``broker`` may be given as instances (opened and closed by
    the server); otherwise they come from ``settings.store`` and
    ``settings.redis_url``.  ``hooks`` run in the order given, before the
    built-in token check (when ``settings.auth_secret`` is set) and the
    webhooks of ``settings.webhook_url``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        hooks: Sequence[Hooks] = (),
        store: Store | None = None,
        broker: Broker | None = None,
        frontend: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        self._store = store
        self._broker = broker
        self._manager: RoomManager | None = None
        self._history: History | None = None
        self.metrics = Metrics()
        self.hooks = HookRunner([*hooks, *_builtin_hooks(self.settings)])
        self.metrics.registry.register(self.hooks.collector())
        self.app = build_app(self, frontend=frontend)

    # -- state ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._manager is not None

    @property
    def manager(self) -> RoomManager:
        if self._manager is None:
            raise NotRunning("the server has not started: run or mount server.app first")
        return self._manager

    @property
    def store(self) -> Store:
        if self._store is None or self._manager is None:
            raise NotRunning("the server has not started: run or mount server.app first")
        return self._store

    # -- version history (collab.history) ----------------------------------------

    @property
    def history_engine(self) -> History:
        """Reads, diffs and restores documents' pasts (docs/history.md)."""
        if self._history is None:
            self._history = History(self)
        return self._history

    async def history(
        self, name: str, *, limit: int = 50, before: int | None = None, gap_ms: float = 60_000
    ) -> dict[str, Any]:
        """Editing sessions of ``name``, newest first (the JSON of GET .../history)."""
        return await self.history_engine.history(name, limit=limit, before=before, gap_ms=gap_ms)

    async def at(self, name: str, point: str | int) -> dict[str, Any]:
        """``name`` at a seq, ISO time or version id (the JSON of GET .../at/{point})."""
        return await self.history_engine.at(name, point)

    async def restore(
        self,
        name: str,
        *,
        to: str | int,
        by: Sequence[str] | None = None,
        principal: str = "server",
        key: str | None = None,
    ) -> dict[str, Any]:
        """Restore ``name`` to ``to`` (or undo ``by``'s changes since) as a forward edit
        by ``restore:<principal>``; ``key`` makes retries answer the first result."""
        return await self.history_engine.restore(name, to, by=by, principal=principal, key=key)

    # -- server-side documents --------------------------------------------------

    @asynccontextmanager
    async def open_document(
        self, name: str, *, origin: str | ServerOrigin = "server", durable: bool = True
    ) -> AsyncIterator[DocumentHandle]:
        """The live document ``name`` for server code (see ``collab.document``).

        The room stays loaded while the block runs; on exit the block's edits
        have been broadcast, handed to the other processes and, unless
        ``durable=False``, committed to the store.  CRDT edits cannot be rolled
        back: an exception inside the block still keeps what was applied.
        """
        origin = origin if isinstance(origin, ServerOrigin) else ServerOrigin(origin)
        manager = self.manager
        room = await manager.acquire(name)
        room.hold()
        try:
            yield DocumentHandle(room, origin)
        finally:
            room.flush()
            room.release()
            manager.release_if_idle(room)
        if durable:
            await self.store.flush()
            if manager.replicator is not None:
                await manager.replicator.flush()

    # -- live permissions -------------------------------------------------------

    def connections(self, user: str | None = None, *, doc: str | None = None) -> list[Connection]:
        """Open connections of this process: all, or those of principal ``user``, on ``doc``."""
        rooms = self.manager.rooms
        if doc is not None:
            room = rooms.get(doc)
            conns = list(room.connections) if room is not None else []
        else:
            conns = [c for room in rooms.values() for c in room.connections]
        return conns if user is None else [c for c in conns if c.principal.id == user]

    def set_read_only(self, user: str, read_only: bool = True, *, doc: str | None = None) -> int:
        """Switch ``user``'s open connections (on ``doc``, or all) to read-only or back.

        A read-only connection keeps its socket and presence; its updates are
        answered with "permission denied".  Returns how many changed.  With
        several processes, call it on each (it sees this process's sockets).
        """
        changed = 0
        for conn in self.connections(user, doc=doc):
            if conn.can_write == read_only:
                conn.can_write = not read_only
                changed += 1
        if changed:
            mode = "read-only" if read_only else "writable"
            log.info("user %r: %d connections now %s", user, changed, mode)
        return changed

    def disconnect(
        self,
        user: str,
        code: int = CloseCode.FORBIDDEN,
        reason: str = "access revoked",
        *,
        doc: str | None = None,
    ) -> int:
        """Close ``user``'s open connections (on ``doc``, or all) with ``code``; how many."""
        conns = self.connections(user, doc=doc)
        for conn in conns:
            conn.close(code, reason)
        return len(conns)

    # -- lifecycle (an aiohttp cleanup context) ----------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """The application's cleanup context: open everything, yield, close everything."""
        settings = self.settings
        if self._store is not None:
            store = self._store
        else:  # alone: no other process may serve a SQLite file without Redis
            store = store_from_settings(
                settings, alone=not settings.redis_url and self._broker is None
            )
        await store.open()
        manager: RoomManager | None = None
        broker = self._broker
        try:
            app[STORE] = self._store = store
            if broker is None and settings.redis_url:
                broker = open_broker(settings.redis_url, prefix=settings.redis_prefix)
                scheme = urlsplit(settings.store).scheme
                if scheme == "memory":
                    log.warning(
                        "--redis-url with a memory store: each process keeps its own copy; "
                        "use postgresql:// (or one sqlite:// file) so the processes share one"
                    )
            self._broker = broker
            app[BROKER] = BrokerSlot(broker)
            manager = RoomManager(
                store,
                unload_grace=settings.unload_grace,
                awareness_timeout=settings.awareness_timeout,
                heartbeat=settings.heartbeat,
                max_doc_size=settings.max_doc_size,
                metrics=self.metrics,
                broker=broker,
                hooks=self.hooks,
                room_limits=room_limits(settings),
            )
            app[MANAGER] = self._manager = manager
            app[LOOP_CONTEXT] = Context(manager, settings, self.metrics, self.hooks)
            for hook in self.hooks.hooks:
                if isinstance(hook, Webhook):
                    hook.attach(_outbox_of(store), self._content_of)
            await self.hooks.start()
            manager.start()
            if manager.replicator is not None:
                await manager.replicator.start()
            _register_gauges(self.metrics, store, manager, broker)
            _report_persisted(store, self.hooks)
            _warn_about_auth(settings, self.hooks)
            yield
        finally:
            if manager is not None:
                await manager.close()
            await self.hooks.close()
            if broker is not None:
                await broker.close()
            self._manager = None
            await store.close()

    async def going_away(self, app: web.Application) -> None:
        """The application's on_shutdown: 1001 to every client, then flush."""
        # Before aiohttp cancels the handlers: tell every client to reconnect
        # (1001) and flush, so a restart loses nothing.
        if self._manager is not None:
            await self._manager.close(CloseCode.GOING_AWAY)

    async def _content_of(self, name: str) -> dict[str, object] | None:
        """The document's JSON (for webhook payloads), decoded in the API's worker processes
        (decoding holds the GIL: a thread would stall the loop)."""
        from .http_api import API
        from .render import document_content

        room = self.manager.rooms.get(name)
        update = room.doc.get_update() if room is not None else await self.store.load(name)
        if update is None:
            return None
        content: dict[str, object] = await self.app[API].renderer.run(document_content, update)
        return content


def room_limits(settings: Settings) -> RoomLimits:
    """What one connection may make a room do, from the settings (issue #18)."""
    return RoomLimits(
        awareness=AwarenessBounds(max_entries=settings.max_awareness_entries),
        max_waiting_bytes=settings.max_waiting_bytes,
        max_doc_memory=settings.max_doc_memory,
        max_depth=settings.max_nesting,
        sync_chunk_bytes=settings.sync_chunk_bytes,
    )


def store_from_settings(settings: Settings, *, alone: bool | None = None) -> Store:
    """The (unopened) store the settings name, with their commit and compaction knobs.

    ``alone`` is for a server: True locks a SQLite file for this process,
    False shares it with others linked by Redis (issue #18, finding 8); None
    (commands such as ``collab ls``) takes no lock.
    """
    scheme = urlsplit(settings.store).scheme
    if scheme == "memory":
        return open_store(settings.store)
    lock = (
        {} if alone is None or scheme != "sqlite" else {"lock": "exclusive" if alone else "shared"}
    )
    store = open_store(
        settings.store,
        commit_window=settings.commit_window,
        compact_updates=settings.compact_updates,
        compact_bytes=settings.compact_bytes,
        **lock,
    )
    if isinstance(store, GroupCommitStore):  # SQLite and PostgreSQL: collab.store.history
        store.history_retention = settings.history_retention
        store.trash_retention = settings.trash_retention
    return store


#: Shorter HS256 secrets can be brute-forced from one token (RFC 7518 3.2).
MIN_SECRET_BYTES = 32


def _warn_about_auth(settings: Settings, hooks: HookRunner) -> None:
    if settings.auth_secret is None and not hooks.wants("authenticate"):
        log.warning(
            "no --auth-secret: the server is OPEN, anyone who can reach it may read and "
            "write every document"
        )
    elif settings.auth_secret is not None and len(settings.auth_secret.encode()) < MIN_SECRET_BYTES:
        log.warning(
            "--auth-secret is only %d bytes: tokens signed with it can be forged by "
            "guessing it; use %d random bytes or more (e.g. python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')",
            len(settings.auth_secret.encode()),
            MIN_SECRET_BYTES,
        )


def _builtin_hooks(settings: Settings) -> list[Hooks]:
    from .auth import TokenAuth

    hooks: list[Hooks] = [_load_hook(path) for path in settings.hook]
    if settings.auth_secret is not None:
        hooks.append(TokenAuth(settings.auth_secret))
    for url in settings.webhook_url:
        if not settings.webhook_secret:
            raise ValueError("--webhook-url needs --webhook-secret (it signs every delivery)")
        hooks.append(
            Webhook(
                url,
                settings.webhook_secret,
                events=settings.webhook_events,
                include_content=settings.webhook_content,
                retry_schedule=settings.webhook_retry,
            )
        )
    return hooks


def _load_hook(path: str) -> Hooks:
    """The hook ``module:name`` names: a ``Hooks`` instance, or a class made without arguments."""
    module_name, _, name = path.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--hook {path}: cannot import it: {exc}") from None
    hook = target() if isinstance(target, type) else target
    if not isinstance(hook, Hooks):
        raise ValueError(f"--hook {path}: {type(hook).__name__} is not a collab.Hooks")
    return hook


def _outbox_of(store: Store) -> Outbox:
    if not isinstance(store, Outbox):
        raise ValueError(f"webhooks need a SQLite or PostgreSQL store, not {type(store).__name__}")
    return store


def _report_persisted(store: Store, hooks: HookRunner) -> None:
    """Turn the store's committed events into ``on_persisted`` hook events (and wake webhooks)."""
    if not hooks.wants("on_persisted") or getattr(store, "on_persisted", "absent") is not None:
        return

    def persisted(events: list[StoredEvent]) -> None:
        for event in events:
            if event.type == "doc.persisted":
                hooks.emit(
                    "on_persisted",
                    Persisted(
                        event.doc,
                        event.seq_from,
                        event.seq_to,
                        event.authors,
                        event.updates,
                        event.size,
                    ),
                )

    store.on_persisted = persisted  # type: ignore[attr-defined]


def _register_gauges(
    metrics: Metrics, store: Store, manager: RoomManager, broker: Broker | None
) -> None:
    if broker is not None:
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


__all__ = ["NotRunning", "Principal", "Server", "store_from_settings"]
