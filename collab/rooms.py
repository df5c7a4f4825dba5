"""The registry of open rooms, their single-flight load and unload, and the
one timer that keeps them live.

Two clients opening the same new document at the same instant share one
load; a room is dropped only after its final flush, and whether it is
still empty is asked again after every ``await`` (a client may have joined
meanwhile, in which case the room simply stays).

One periodic tick, for the whole server, pings silent connections (and
drops the ones that do not answer) and expires stale presence: no timer,
task or task group per connection or per room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence

from .closecodes import CloseCode
from .hooks import Change, HookRunner, Unload
from .memory import MemoryReleaser
from .metrics import Metrics
from .origins import ServerOrigin
from .protocol import ProtocolError, UpdateShape, scan_update
from .pubsub import Broker
from .replication import Replicator
from .room import Origin, Room, RoomLimits, RoomObserver, author_of
from .store import Store

log = logging.getLogger("collab.rooms")

#: How long an unload waits for the store before keeping the room loaded.
FLUSH_TIMEOUT = 30.0


class ChangeReporter:
    """Turns what rooms report into the hooks' ``on_change`` events (a RoomObserver)."""

    def __init__(self, hooks: HookRunner) -> None:
        self._hooks = hooks

    def room_changed(self, room: Room, update: bytes, origins: Sequence[Origin]) -> None:
        authors = tuple(dict.fromkeys(author_of(o) for o in origins))
        self._hooks.emit("on_change", Change(room.name, update, authors, len(origins), len(update)))

    def room_presence(self, room: Room, payload: bytes) -> None:
        pass


class RoomManager:
    """Owns name -> ``Room`` and the loading / unloading of rooms."""

    def __init__(
        self,
        store: Store,
        *,
        unload_grace: float = 10.0,
        awareness_timeout: float = 30.0,
        heartbeat: float | None = 30.0,
        max_doc_size: int | None = None,
        metrics: Metrics | None = None,
        broker: Broker | None = None,
        room_limits: RoomLimits | None = None,
        hooks: HookRunner | None = None,
    ) -> None:
        self.store = store
        self.hooks = hooks or HookRunner()
        #: What one connection may make a room do; rooms loaded later use a replacement.
        self.room_limits = room_limits or RoomLimits()
        self.metrics = metrics
        self.rooms: dict[str, Room] = {}
        #: Keeps other processes in step (None: this process is alone).
        self.replicator = (
            Replicator(broker, store, self.rooms.get, self.forget) if broker is not None else None
        )
        observers: list[RoomObserver] = []
        if self.replicator is not None:
            observers.append(self.replicator)
        if self.hooks.wants("on_change"):
            observers.append(ChangeReporter(self.hooks))
        self._observers = tuple(observers)
        self._max_doc_size = max_doc_size
        #: Open connections over all rooms (the ws route keeps it).
        self.connection_count = 0
        self._unload_grace = unload_grace
        self._awareness_timeout = awareness_timeout
        self._heartbeat = heartbeat or None
        #: Often enough to ping within a quarter heartbeat of the deadline and
        #: to expire presence within a tenth of its timeout (as pycrdt does).
        self.tick_interval = min(
            awareness_timeout / 10, self._heartbeat / 4 if self._heartbeat else float("inf")
        )
        self._ticker: asyncio.Task[None] | None = None
        self.memory = MemoryReleaser()
        self._loading: dict[str, asyncio.Task[Room]] = {}
        self._unload_timers: dict[str, asyncio.TimerHandle] = {}
        self._unloading: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        """Start the server-wide tick (pings and presence expiry)."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick_forever(), name="collab-tick"
            )

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.tick()
            except Exception:  # one bad room must not stop the pings of all others
                log.exception("tick failed")

    def tick(self) -> None:
        """Ping silent connections, drop unresponsive ones and expired tokens, expire presence."""
        now = asyncio.get_running_loop().time()
        now_ms = time.time() * 1000
        heartbeat = self._heartbeat
        for room in list(self.rooms.values()):
            room.expire_awareness(now_ms)
            room.expire_waiting(now)
            for conn in list(room.connections):
                conn.keep_alive(now)  # the no-op awareness frame to a silent socket (issue #16)
                if heartbeat is not None:
                    conn.check_alive(now, heartbeat)
                # A token that expires closes the sockets it opened (issue #18).
                if conn.expires is not None and conn.expires * 1000 <= now_ms:
                    conn.close(CloseCode.UNAUTHORIZED, "token expired")

    async def acquire(self, name: str) -> Room:
        """The open room for ``name``, loading it if needed.

        The caller must join the room before its next ``await`` so that the
        room cannot be unloaded in between.
        """
        room = self.rooms.get(name)
        if room is None:
            task = self._loading.get(name)
            if task is None:
                task = asyncio.get_running_loop().create_task(
                    self._load(name), name=f"collab-load-{name}"
                )
                self._loading[name] = task
            # shield: one opener giving up must not cancel the others' load.
            room = await asyncio.shield(task)
        timer = self._unload_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        return room

    async def _load(self, name: str) -> Room:
        replicator = self.replicator
        try:
            if replicator is not None:
                # Subscribe before loading, so nothing published between the
                # store's read and our first stream read slips through.
                await replicator.loading(name)
            update = await self.store.load(name)
            initial = None
            if update is None and self.hooks.wants("load_document"):
                # A failing or slow loader refuses the room (HookFailed): an
                # empty document must never stand in for content it could not load.
                initial = await self.hooks.load_document(name)
            # Seeds the room's nesting levels and memory estimate; Python
            # work proportional to the document, so aside from the loop.
            shape = await asyncio.to_thread(_shape_of_stored, name, update) if update else None
            room = Room(
                name,
                store=self.store,
                on_empty=self._schedule_unload,
                awareness_timeout=self._awareness_timeout,
                max_doc_size=self._max_doc_size,
                metrics=self.metrics,
                observers=self._observers,
                limits=self.room_limits,
            )
            try:
                room.load(update, shape)
                if initial is not None:
                    # Stored (and published) like any edit: it is new content.
                    room.apply_update(initial, ServerOrigin("load_document"))
            except Exception:
                await room.close(flush=False)
                raise
            self.rooms[name] = room
            if replicator is not None:
                # Peers holding the document answer with what the store lacked
                # (updates still inside their commit window).
                replicator.loaded(room)
            log.debug("loaded room %r", name)
            return room
        except BaseException:
            if replicator is not None and name not in self.rooms:
                replicator.load_failed(name)
            raise
        finally:
            del self._loading[name]

    def _schedule_unload(self, room: Room) -> None:
        if self.rooms.get(room.name) is not room or room.name in self._unload_timers:
            return  # deleted (or replaced) meanwhile, or already scheduled
        loop = asyncio.get_running_loop()

        def start() -> None:
            del self._unload_timers[room.name]
            if room.name not in self._unloading:
                self._unloading[room.name] = loop.create_task(self._unload(room))

        self._unload_timers[room.name] = loop.call_later(self._unload_grace, start)

    async def _unload(self, room: Room) -> None:
        try:
            if not room.idle or self.rooms.get(room.name) is not room:
                return
            async with asyncio.timeout(FLUSH_TIMEOUT):
                room.flush()
                if self.replicator is not None:
                    await self.replicator.reconcile(room)
                await self.store.flush()
            if not room.idle or self.rooms.get(room.name) is not room:
                return  # someone joined while we were flushing: keep it
            del self.rooms[room.name]
            if self.replicator is not None:
                self.replicator.unloaded(room.name)
            await room.close()
            self.memory.unloaded(len(self.rooms))
            if self.hooks.wants("on_unload"):
                self.hooks.emit("on_unload", Unload(room.name))
            log.debug("unloaded room %r", room.name)
        except Exception as exc:
            # The store is failing (it retries on its own): keep the document
            # in memory, where its changes are safe, and try again later.
            log.warning("unloading %r postponed, store not flushed: %r", room.name, exc)
            self._unloading.pop(room.name, None)
            self._schedule_unload(room)
        finally:
            self._unloading.pop(room.name, None)

    def release_if_idle(self, room: Room) -> None:
        """Let a room opened without a connection (HTTP API) unload after the grace."""
        if room.idle:
            self._schedule_unload(room)

    async def delete(self, name: str, *, author: str | None = None) -> bool:
        """Close the document's connections with 4404 and forget it everywhere.

        Returns whether there was anything to delete.
        """
        timer = self._unload_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        loading = self._loading.get(name)
        if loading is not None:
            with contextlib.suppress(Exception):
                await loading
        room = self.rooms.get(name)
        existed = room is not None or await self.store.info(name) is not None
        await self.forget(name)
        if self.replicator is not None:
            self.replicator.deleted(name)
        await self.store.delete(name, author)
        log.info("deleted document %r", name, extra={"doc": name, "user": author})
        return existed

    async def forget(self, name: str) -> None:
        """Close the document's connections with 4404 and drop its room unsaved."""
        timer = self._unload_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        room = self.rooms.pop(name, None)
        if room is None:
            return
        for conn in list(room.connections):
            conn.close(CloseCode.NOT_FOUND, "document deleted")
        await room.close(flush=False)
        if self.replicator is not None:
            self.replicator.unloaded(name)

    async def close(self, code: CloseCode = CloseCode.GOING_AWAY, timeout: float = 5.0) -> None:
        """Close every connection with ``code``, then flush and drop every room."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        self.memory.close()
        for timer in self._unload_timers.values():
            timer.cancel()
        self._unload_timers.clear()
        conns = [c for room in self.rooms.values() for c in room.connections]
        for conn in conns:
            conn.close(code, "server shutting down")
        if conns:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*(c.wait_closed() for c in conns))
        for task in list(self._unloading.values()):
            with contextlib.suppress(Exception):
                await task
        for room in list(self.rooms.values()):
            await room.close()
            if self.replicator is not None:
                try:
                    async with asyncio.timeout(timeout):
                        await self.replicator.reconcile(room)
                except Exception as exc:
                    # The one moment this guards against losing another
                    # process's edits: say so if it could not be done.
                    log.error(
                        "could not reconcile %r with the store at shutdown: %r", room.name, exc
                    )
        self.rooms.clear()
        # Bounded: with the database down, shutdown must still end; the
        # store's close() reports what could not be written.
        try:
            async with asyncio.timeout(timeout):
                await self.store.flush()
        except TimeoutError:
            log.error("store did not flush within %.0fs during shutdown", timeout)


def _shape_of_stored(name: str, update: bytes) -> UpdateShape | None:
    """What a stored document holds; never refused (it was checked when written)."""
    try:
        return scan_update(update, max_depth=sys.maxsize)
    except ProtocolError as exc:
        log.warning("could not read the structs of stored %r: %s", name, exc)
        return None
