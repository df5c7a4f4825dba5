"""Group commit, shared by the SQLite and PostgreSQL stores.

``append`` only queues an update in memory; a commit task hands everything
queued, of every document, to the backend in one transaction at most every
``commit_window`` seconds, and retries a failed commit with backoff (the
updates stay queued, ``healthy`` turns False).  Backends implement the
``_backend_*`` operations.

Compaction runs beside the commits, never in their way (issue #18, finding
7: commits that waited for a compaction were lost to a SIGKILL): it reads
the snapshot and log, merges them (big documents in a worker process, see
``merge.py``), then in one short transaction writes the new snapshot and
deletes exactly the rows it read, provided they are all still there and the
snapshot is the one it read; otherwise nothing is written and it tries
again later.  A crash at any point leaves the old snapshot and log, or the
new snapshot and the rows committed meanwhile.

Each commit also writes the change feed's events in its transaction (see
``events.py``) and hands them to ``on_persisted`` once it is durable; the
compaction task prunes old events now and then.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Self

from ..webhooks import Delivery, StoredEvent
from .base import CorruptDocument, DocInfo, LogEntry, StoreError
from .events import PRUNE_INTERVAL, RETENTION
from .history import CHECKPOINT_EVERY
from .merge import PROCESS_BYTES, Merger, build_update

log = logging.getLogger("collab.store")

__all__ = [
    "COMMIT_WINDOW",
    "COMPACT_BYTES",
    "COMPACT_UPDATES",
    "Committed",
    "GroupCommitStore",
    "LogRead",
    "Pending",
    "build_update",
]

#: Default commit window: a commit at most this often, in seconds.
COMMIT_WINDOW = 0.02
#: Default log length (rows) past which a document is compacted.
COMPACT_UPDATES = 500
#: Default log size (bytes) past which a document is compacted.
COMPACT_BYTES = 1024 * 1024


class Pending(NamedTuple):
    """An appended update not yet committed; ``seq`` orders all appends."""

    seq: int
    name: str
    update: bytes
    at: float
    author: str | None = None


class Committed(NamedTuple):
    """What one commit transaction wrote, besides the rows."""

    #: (log rows, log bytes) per document in it: the compaction trigger.
    totals: dict[str, tuple[int, int]]
    #: The events it wrote (``doc.created``, ``doc.persisted``), by id.
    events: list[StoredEvent]


class LogRead(NamedTuple):
    """What a backend read of one document, consistently."""

    #: The snapshot (if any), then the log rows in order, with labels for errors.
    parts: list[tuple[str, bytes]]
    #: How many of the parts are log rows.
    rows: int
    #: What ``_backend_replace_log`` needs to check that nothing changed since.
    token: Any


def _add_pending(infos: Mapping[str, DocInfo], pending: Iterable[Pending]) -> dict[str, DocInfo]:
    """Committed stats plus the still-queued updates (not yet in the database)."""
    merged = dict(infos)
    for entry in pending:
        old = merged.get(entry.name)
        if old is None:
            merged[entry.name] = DocInfo(entry.name, len(entry.update), 1, entry.at)
        else:
            merged[entry.name] = DocInfo(
                entry.name,
                old.size + len(entry.update),
                old.updates + 1,
                max(old.updated_at, entry.at),
            )
    return merged


class GroupCommitStore(abc.ABC):
    """Queue appends in memory and commit them in groups, retrying failures.

    Subclasses implement the ``_backend_*`` operations.  The commit task is
    the only caller of ``_backend_write`` and holds ``_io_lock`` while it
    runs, and until it has recorded the outcome; readers that must not
    count an update twice (``info``, ``list``) take the same lock, so under
    it ``_inflight + _pending`` are exactly the updates not in the database.

    Compactions run one at a time in their own task, queued by the commit
    task when a log passes a threshold; merges go through ``merger``.
    """

    #: Exceptions of the driver that mean "the database said no"; wrapped in StoreError.
    _driver_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        *,
        commit_window: float = COMMIT_WINDOW,
        compact_updates: int = COMPACT_UPDATES,
        compact_bytes: int = COMPACT_BYTES,
        retry_min: float = 0.05,
        retry_max: float = 5.0,
        close_timeout: float = 30.0,
        merge_process_bytes: int | None = PROCESS_BYTES,
    ) -> None:
        if commit_window < 0 or compact_updates < 1 or compact_bytes < 1:
            raise ValueError("commit_window must be >= 0, compact_* must be >= 1")
        self.commit_window = commit_window
        self.compact_updates = compact_updates
        self.compact_bytes = compact_bytes
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._close_timeout = close_timeout
        #: Successful commit transactions so far (one per group of appends).
        self.commits = 0
        #: Compactions done so far (automatic and forced).
        self.compactions = 0
        #: Called after every successful commit with (updates committed, seconds
        #: the transaction took): a hook for metrics.
        self.on_commit: Callable[[int, float], None] | None = None
        #: Called on the event loop after every successful commit with the
        #: events it wrote (``doc.created`` and ``doc.persisted``, by id): the
        #: change feed of this process's commits.  Exceptions are logged.
        self.on_persisted: Callable[[list[StoredEvent]], None] | None = None
        #: Seconds events and finished webhook deliveries are kept.
        self.event_retention = RETENTION
        #: Version history (``history.py``): seconds of log kept (0: none, as before),
        #: seconds a deleted document stays in the trash (0: deleted at once), and
        #: seconds between checkpoints kept while the log is there.
        self.history_retention = 0.0
        self.trash_retention = 0.0
        self.checkpoint_every = CHECKPOINT_EVERY
        self._pruned_at = -math.inf
        self._seq = 0
        self._durable_seq = 0
        self._pending: list[Pending] = []
        self._inflight: list[Pending] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        self._io_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        self._last_error: str | None = None
        self._corrupt: set[str] = set()
        #: Merges snapshot and log; big ones in worker processes, off our GIL.
        self.merger = Merger(process_bytes=merge_process_bytes)
        #: Documents waiting for (or in) an automatic compaction, in order.
        self._to_compact: dict[str, None] = {}
        self._compactor: asyncio.Task[None] | None = None
        self._compact_lock = asyncio.Lock()
        self._opened = False
        self._closed = False

    # -- what a backend provides ------------------------------------------------

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """The database, for messages (never with a password)."""

    @abc.abstractmethod
    async def _backend_open(self) -> None: ...

    @abc.abstractmethod
    async def _backend_close(self) -> None: ...

    @abc.abstractmethod
    async def _backend_write(self, batch: Sequence[Pending]) -> Committed:
        """Insert ``batch`` and its events (``events.drafts``) in one transaction."""

    @abc.abstractmethod
    async def _backend_read(self, name: str) -> LogRead:
        """Snapshot and log of ``name`` in one consistent read (no parts: never stored)."""

    @abc.abstractmethod
    async def _backend_replace_log(self, name: str, state: bytes, token: Any) -> bool:
        """In one transaction, if the snapshot and log rows that ``token`` describes
        are unchanged: write ``state`` as the snapshot and delete exactly those rows.
        False (and nothing written) when they changed meanwhile."""

    async def _backend_recount(self, name: str) -> None:  # noqa: B027 - optional
        """A compaction found the log empty or changed: forget cached log totals."""

    @abc.abstractmethod
    async def _backend_delete(self, name: str, author: str | None) -> StoredEvent | None:
        """Delete snapshot and log and, if there was any, write ``doc.deleted``; one transaction."""

    @abc.abstractmethod
    async def _backend_prune(self, before: float) -> int:
        """Delete events and finished deliveries older than ``before``; how many."""

    @abc.abstractmethod
    async def _backend_entries(self, name: str) -> list[LogEntry]: ...

    # -- the Outbox of collab.webhooks (each backend implements it) --------------------

    @abc.abstractmethod
    async def events_after(self, after: int, limit: int) -> list[StoredEvent]:
        """Events with an id above ``after``, oldest first (at most ``limit``)."""

    @abc.abstractmethod
    async def webhook_cursor(self, endpoint: str) -> int:
        """The last event id turned into deliveries for ``endpoint`` (0 at first)."""

    @abc.abstractmethod
    async def webhook_absorb(self, endpoint: str, cursor: int, upserts: Sequence[Delivery]) -> None:
        """In one transaction: insert or replace ``upserts`` and move the cursor."""

    @abc.abstractmethod
    async def webhook_pending(self, endpoint: str) -> list[Delivery]:
        """The endpoint's deliveries with status ``pending``, by ``next_at``."""

    @abc.abstractmethod
    async def webhook_update(self, delivery: Delivery) -> None:
        """Record an attempt's outcome (replaces the row with the same id)."""

    @abc.abstractmethod
    async def webhook_deliveries(self, endpoint: str) -> list[Delivery]:
        """Every delivery of ``endpoint`` kept (pending, delivered, failed), by ``first_at``."""

    @abc.abstractmethod
    async def webhook_disabled(self, endpoint: str) -> bool:
        """Whether ``endpoint`` was disabled (it answered ``410 Gone``)."""

    @abc.abstractmethod
    async def webhook_disable(self, endpoint: str, reason: str) -> None: ...

    @abc.abstractmethod
    async def webhook_enable(self, endpoint: str) -> bool:
        """Undo ``webhook_disable``; whether it was disabled."""

    @abc.abstractmethod
    async def try_lead(self, key: str) -> bool:
        """Whether this process dispatches for ``key`` (one process per cluster)."""

    @abc.abstractmethod
    async def _backend_stats(self, name: str | None) -> list[DocInfo]:
        """Committed size/count/time of one document (or all), sorted by name."""

    # -- the Store interface ------------------------------------------------------

    async def open(self) -> None:
        """Create or connect to the database, then start the commit task."""
        if self._opened:
            return
        await self._backend_open()
        self._opened = True
        self._task = asyncio.get_running_loop().create_task(
            self._commit_loop(), name=f"collab-store-commit {self.where}"
        )

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def append(self, name: str, update: bytes, author: str | None = None) -> None:
        """Queue ``update``; the next group commit (within ``commit_window``) stores it
        as one log row that keeps ``author``."""
        if self._closed or not self._opened:
            raise StoreError(f"store {self.where} is {'closed' if self._closed else 'not open'}")
        self._seq += 1
        self._pending.append(Pending(self._seq, name, update, time.time(), author))
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every update appended before this call is committed."""
        target = self._seq
        if self._durable_seq >= target:
            return
        if self._task is None or self._task.done():
            raise StoreError(f"store {self.where} is not running")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._hurry.set()
        self._wake.set()
        await waiter

    async def load(self, name: str) -> bytes | None:
        """Snapshot, log and still-queued updates of ``name`` as one update."""
        self._check_open()
        # An update committed while we read is then applied twice: harmless,
        # applying a Yjs update is idempotent.
        pending = [e.update for e in (*self._inflight, *self._pending) if e.name == name]
        with self._driver_guard(f"loading {name!r}"):
            read = await self._backend_read(name)
        return await self.merger.merge(
            name, [*read.parts, *(("queued update", update) for update in pending)]
        )

    async def compact(self, name: str) -> None:
        """Commit what is queued, then replace ``name``'s log by one snapshot."""
        self._check_open()
        await self.flush()
        # Another process may compact or delete the document meanwhile: then
        # nothing was written, and we read again.
        for _ in range(5):
            if await self._compact_once(name) is not False:
                break
        self._corrupt.discard(name)

    async def delete(self, name: str, author: str | None = None) -> None:
        """Drop the queued updates, snapshot and log of ``name``.

        If anything was stored, a ``doc.deleted`` event (naming ``author``) is
        written in the same transaction.
        """
        self._check_open()
        # The commit task works on a copy of _inflight, and rebuilds its
        # batch from _inflight before a retry: a failed commit cannot bring
        # the deleted updates back.
        self._pending = [e for e in self._pending if e.name != name]
        self._inflight = [e for e in self._inflight if e.name != name]
        async with self._io_lock:
            with self._driver_guard(f"deleting {name!r}"):
                await self._backend_delete(name, author)
        self._corrupt.discard(name)

    async def entries(self, name: str) -> list[LogEntry]:
        """The committed log rows of ``name`` (not the snapshot), oldest first."""
        self._check_open()
        with self._driver_guard(f"reading the log of {name!r}"):
            return await self._backend_entries(name)

    async def prune(self, before: float | None = None) -> int:
        """Delete events, and webhook deliveries no longer pending, from before
        ``before`` (default: ``event_retention`` ago); how many rows went.

        The compaction task calls this at most every ``PRUNE_INTERVAL``.
        """
        self._check_open()
        if before is None:
            before = time.time() - self.event_retention
        with self._driver_guard("pruning events"):
            return await self._backend_prune(before)

    async def list(self) -> list[DocInfo]:
        """Every stored document (queued updates included), sorted by name."""
        self._check_open()
        async with self._io_lock:
            with self._driver_guard("listing documents"):
                stats = await self._backend_stats(None)
            pending = [*self._inflight, *self._pending]
        merged = _add_pending({i.name: i for i in stats}, pending)
        return [merged[name] for name in sorted(merged)]

    async def info(self, name: str) -> DocInfo | None:
        """Size in bytes, log length (a snapshot counts as one) and last change of ``name``."""
        self._check_open()
        async with self._io_lock:
            with self._driver_guard(f"reading info of {name!r}"):
                stats = await self._backend_stats(name)
            pending = [e for e in (*self._inflight, *self._pending) if e.name == name]
        return _add_pending({i.name: i for i in stats}, pending).get(name)

    @property
    def healthy(self) -> bool:
        """False from a failed commit until the next successful one."""
        return self._healthy

    @property
    def queued(self) -> int:
        """Updates appended but not yet committed."""
        return len(self._pending) + len(self._inflight)

    async def close(self) -> None:
        """Commit what is queued (retrying up to ``close_timeout``), then release everything.

        Raises ``StoreError`` saying how many updates were lost if the
        database stayed unwritable for the whole ``close_timeout``.
        """
        if self._closed:
            return
        self._closed = True
        lost = 0
        try:
            if self._compactor is not None:
                # A compaction cut short writes nothing: the log stays as it is.
                self._compactor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._compactor
            if self._opened:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._close_timeout):
                        await self.flush()
                lost = self.queued
        finally:
            await self.merger.close()
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            for _, waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(StoreError(f"store {self.where} closed"))
            self._waiters.clear()
            if self._opened:
                await self._backend_close()
        if lost:
            raise StoreError(
                f"store {self.where} closed with {lost} updates not saved: {self._last_error}"
            )

    # -- internals -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or not self._opened:
            raise StoreError(f"store {self.where} is {'closed' if self._closed else 'not open'}")

    @contextlib.contextmanager
    def _driver_guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except self._driver_errors as exc:
            raise StoreError(f"{what} in {self.where} failed: {exc}") from exc

    def _mark_durable(self, seq: int) -> None:
        self._durable_seq = max(self._durable_seq, seq)
        waiting = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if target <= self._durable_seq:
                waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._waiters = waiting

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_commit = -math.inf
        failures = 0
        while True:
            if not self._pending and not self._inflight:
                # Nothing left (deletes may have emptied the queue): every
                # append so far is durable or forgotten.
                self._mark_durable(self._seq)
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = last_commit + self.commit_window - loop.time()
            if delay > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._hurry.wait()
            self._hurry.clear()
            # After a failure, the next attempt also takes what came since.
            self._inflight.extend(self._pending)
            self._pending = []
            upto = self._seq
            batch = tuple(self._inflight)
            last_commit = loop.time()
            if not batch:
                continue
            try:
                async with self._io_lock:
                    started = loop.time()
                    committed = await self._backend_write(batch)
                    took = loop.time() - started
                    self._inflight = []
                    self.commits += 1
                    self._mark_durable(upto)
            except Exception as exc:
                failures += 1
                self._healthy = False
                self._last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(self._retry_max, self._retry_min * 2 ** (failures - 1))
                log.warning(
                    "commit of %d updates to %s failed (attempt %d, retrying in %.2fs): %s",
                    len(batch),
                    self.where,
                    failures,
                    backoff,
                    self._last_error,
                )
                await asyncio.sleep(backoff)
                continue
            if failures:
                log.info("commits to %s succeed again after %d failures", self.where, failures)
            failures = 0
            self._healthy = True
            self._last_error = None
            if self.on_commit is not None:
                try:
                    self.on_commit(len(batch), took)
                except Exception:
                    log.exception("on_commit hook of %s failed", self.where)
            if self.on_persisted is not None and committed.events:
                try:
                    self.on_persisted(committed.events)
                except Exception:
                    log.exception("on_persisted hook of %s failed", self.where)
            # Compactions run in their own task: commits go on meanwhile, so an
            # update is durable within the commit window also while a big
            # document compacts.
            for name, (rows, size) in committed.totals.items():
                if rows > self.compact_updates or size > self.compact_bytes:
                    self._schedule_compaction(name)

    def _schedule_compaction(self, name: str) -> None:
        if name in self._corrupt or name in self._to_compact or self._closed:
            return
        self._to_compact[name] = None
        if self._compactor is None or self._compactor.done():
            self._compactor = asyncio.get_running_loop().create_task(
                self._compact_queued(), name=f"collab-store-compact {self.where}"
            )

    async def _compact_queued(self) -> None:
        await self._prune_now_and_then()
        while self._to_compact:
            name = next(iter(self._to_compact))
            try:
                await self._compact_once(name)
            except CorruptDocument as exc:
                # Not retried after every commit; compact() or delete() clears this.
                self._corrupt.add(name)
                log.error("not compacting %s: %s", self.where, exc)
            except Exception as exc:
                log.warning("compacting %r in %s failed (retried later): %s", name, self.where, exc)
            finally:
                # Queued while it ran, so that the commits meanwhile did not queue it again.
                self._to_compact.pop(name, None)

    async def _prune_now_and_then(self) -> None:
        """Prune old events, at most every ``PRUNE_INTERVAL``: commits write events,
        commits lead to compactions, so this runs as long as anything is written."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = now
        try:
            pruned = await self.prune()
        except Exception as exc:
            log.warning("pruning old events in %s failed (retried later): %s", self.where, exc)
            return
        if pruned:
            log.info("pruned %d old events and deliveries from %s", pruned, self.where)
        try:
            await self.history_sweep()
        except Exception as exc:
            log.warning("pruning old history in %s failed (retried later): %s", self.where, exc)

    async def history_sweep(self) -> None:  # noqa: B027 - optional
        """Thin history beyond its window and purge expired trash (``collab.store.history``)."""

    async def _compact_once(self, name: str) -> bool | None:
        """Read, merge, replace: True when compacted, None when there was no log,
        False when the log or snapshot changed meanwhile (nothing written)."""
        async with self._compact_lock:
            started = time.monotonic()
            with self._driver_guard(f"compacting {name!r}"):
                read = await self._backend_read(name)
            if read.rows == 0:
                with self._driver_guard(f"compacting {name!r}"):
                    await self._backend_recount(name)
                return None
            state = await self.merger.merge(name, read.parts)
            assert state is not None
            token, rows = read.token, read.rows
            del read  # the parts: as big as the document
            with self._driver_guard(f"compacting {name!r}"):
                done = await self._backend_replace_log(name, state, token)
                if not done:
                    await self._backend_recount(name)
            if done:
                self.compactions += 1
                log.debug(
                    "compacted %r in %s: %d updates into %d bytes in %.3fs",
                    name,
                    self.where,
                    rows,
                    len(state),
                    time.monotonic() - started,
                )
            else:
                log.debug("%r in %s changed while it compacted: not written", name, self.where)
            return done
