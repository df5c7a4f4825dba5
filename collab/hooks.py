"""Hooks: how an application plugs its own code into collab.

A hook is an object with any of the async methods of ``Hooks``; several
are stacked in order.  Two kinds:

* **Gating** hooks may refuse, each within ``timeout`` seconds, and the
  first refusal wins: ``authenticate``, ``load_document``,
  ``before_update`` and ``before_awareness``.  They run in the request's or
  the connection's own coroutine, so a slow one delays only that request or
  that connection, never the room.
* **Observing** hooks (``on_connect``, ``on_disconnect``, ``on_change``,
  ``on_persisted``, ``on_unload``) cannot stall or break a room: each hook
  gets its events through its own bounded queue and one worker task; an
  exception is logged and counted in ``collab_hook_errors_total``, and an
  event that finds the queue full is dropped and counted in
  ``collab_hook_dropped_total`` (use ``on_persisted`` or webhooks, which
  read the store's durable change feed, when nothing may be missed).

Only methods a hook overrides cost anything: the runner looks them up once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections import Counter
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .closecodes import CloseCode

log = logging.getLogger("collab.hooks")

#: Seconds a gating hook may take before it counts as a refusal.
DEFAULT_TIMEOUT = 5.0
#: Events an observing hook may have waiting before new ones are dropped.
DEFAULT_QUEUE_SIZE = 10_000

Transport = Literal["websocket", "http", "direct"]


# -- who -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection or a request acts for.

    ``documents`` are literal names and ``patterns`` globs (``team-*``);
    both empty means every document.  ``data`` is the application's own
    context (its user record, say), handed to every hook event.
    """

    id: str
    name: str | None = None
    can_write: bool = True
    documents: frozenset[str] = frozenset()
    patterns: tuple[str, ...] = ()
    expires_at: float | None = None
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def covers(self, doc: str) -> bool:
        """Whether this principal may open ``doc`` at all."""
        if not self.documents and not self.patterns:
            return True
        # fnmatchcase: "Team-*" must not match "team-a" on any platform.
        return doc in self.documents or any(fnmatch.fnmatchcase(doc, p) for p in self.patterns)

    def read_only(self) -> Principal:
        """The same principal without write access."""
        return Principal(
            self.id,
            self.name,
            False,
            self.documents,
            self.patterns,
            self.expires_at,
            self.data,
        )

    @property
    def label(self) -> str:
        """For logs: ``id`` and, when known, the display name."""
        return self.id if not self.name or self.name == self.id else f"{self.id} ({self.name})"


#: Whoever connects to a server without authentication.
ANONYMOUS = Principal("anonymous")


class Reject(Exception):
    """Raised by a gating hook to refuse.

    ``code`` is the WebSocket close code (44xx mirror HTTP statuses) and
    ``status`` the HTTP status used when the refusal happens before an
    upgrade or on an HTTP request (derived from ``code`` when not given).
    ``close=True`` refuses a WebSocket with the close code instead.
    """

    def __init__(
        self,
        code: int = CloseCode.FORBIDDEN,
        reason: str = "refused",
        *,
        status: int | None = None,
        error: str | None = None,
        metric: str = "hook_refused",
        close: bool = False,
    ) -> None:
        super().__init__(reason)
        #: Refuse a WebSocket by upgrading and closing with ``code`` rather than
        #: with an HTTP status: a browser cannot read the status of a failed
        #: upgrade, but it does see a close code.
        self.close = close
        self.code = int(code)
        self.reason = reason
        self.status = status if status is not None else _status_for(self.code)
        #: The stable code of the JSON error an HTTP refusal answers with.
        self.error = error or {401: "unauthenticated", 404: "not_found"}.get(
            self.status, "forbidden"
        )
        #: The label of ``collab_requests_refused``.
        self.metric = metric


def _status_for(code: int) -> int:
    if 4400 <= code <= 4599:
        return code - 4000
    if code in (CloseCode.TRY_AGAIN_LATER, CloseCode.GOING_AWAY):
        return 503
    return 403


class HookFailed(Exception):
    """A gating hook raised something other than ``Reject``, or timed out."""


# -- events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What ``authenticate`` decides on: a connection or an HTTP request.

    ``doc`` is None for requests about no single document (listing).
    ``request`` is the transport's own request object (an aiohttp
    ``web.Request`` for the built-in transports), for anything else an
    application wants to look at.
    """

    doc: str | None
    token: str | None
    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    query: Mapping[str, str]
    peer: str
    transport: Transport
    write: bool
    request: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class IncomingUpdate:
    """A client's update, before it is applied (``before_update``)."""

    doc: str
    update: bytes
    principal: Principal
    connection_id: int


@dataclass(frozen=True, slots=True)
class IncomingAwareness:
    """A client's presence payload, before it is applied (``before_awareness``)."""

    doc: str
    payload: bytes
    principal: Principal
    connection_id: int


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A connection joined or left a document."""

    doc: str
    principal: Principal
    connection_id: int
    peer: str
    transport: Transport
    can_write: bool
    close_code: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """The changes one flush window applied to a document on this process.

    ``update`` is the merged Yjs update; ``authors`` the principals (or
    server origins) that made it, in order of appearance.  Changes relayed
    from other processes are not reported here: each change is reported
    once per cluster, by the process where it entered.
    """

    doc: str
    update: bytes
    authors: tuple[str, ...]
    updates: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Persisted:
    """Updates of a document that the store has committed (a change feed).

    ``seq_from``..``seq_to`` are the store's sequence numbers of the
    committed log rows for this document.
    """

    doc: str
    seq_from: int
    seq_to: int
    authors: tuple[str, ...]
    updates: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Unload:
    """A document left memory (its last change is durable)."""

    doc: str


# -- the protocol ----------------------------------------------------------------


class Hooks:
    """Base class with every hook doing nothing: override what you need.

    Gating hooks return None (no opinion: the next hook decides) or raise
    ``Reject``.  ``timeout`` bounds each gating call of this hook.
    """

    timeout: float = DEFAULT_TIMEOUT
    queue_size: int = DEFAULT_QUEUE_SIZE

    async def authenticate(self, request: ConnectRequest) -> Principal | None:
        """Who is asking; None leaves the decision to the next hook."""
        return None

    async def load_document(self, doc: str) -> bytes | None:
        """Initial content (a Yjs update) for a document the store does not have."""
        return None

    async def before_update(self, event: IncomingUpdate) -> None:
        """Raise ``Reject`` to refuse a client's update (it gets "permission denied")."""

    async def before_awareness(self, event: IncomingAwareness) -> None:
        """Raise ``Reject`` to refuse a client's presence update."""

    async def on_connect(self, event: ConnectionEvent) -> None: ...

    async def on_disconnect(self, event: ConnectionEvent) -> None: ...

    async def on_change(self, event: Change) -> None: ...

    async def on_persisted(self, event: Persisted) -> None: ...

    async def on_unload(self, event: Unload) -> None: ...

    async def start(self) -> None:
        """Called once when the server starts (open clients, start workers)."""

    async def close(self) -> None:
        """Called once when the server stops, after its last event was handed over."""


GATING = ("authenticate", "load_document", "before_update", "before_awareness")
OBSERVING = ("on_connect", "on_disconnect", "on_change", "on_persisted", "on_unload")


def _overrides(hook: Hooks, method: str) -> bool:
    return getattr(type(hook), method, None) is not getattr(Hooks, method)


def hook_name(hook: Hooks) -> str:
    """The label a hook has in logs and metrics."""
    return getattr(hook, "name", None) or type(hook).__name__


class _Worker:
    """One observing hook's queue and the task that empties it."""

    def __init__(self, hook: Hooks, runner: HookRunner) -> None:
        self.hook = hook
        self.name = hook_name(hook)
        self._runner = runner
        self.queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue(hook.queue_size)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"collab-hook-{self.name}"
        )

    async def _run(self) -> None:
        while True:
            method, event = await self.queue.get()
            try:
                await getattr(self.hook, method)(event)
            except Exception:
                self._runner.errors[(self.name, method)] += 1
                log.exception("hook %s.%s failed", self.name, method)
            finally:
                self.queue.task_done()


class HookRunner:
    """Runs a stack of hooks: gating ones in order, observing ones from queues."""

    def __init__(self, hooks: Sequence[Hooks] = ()) -> None:
        self.hooks = tuple(hooks)
        #: (hook, method) -> calls that raised or timed out.
        self.errors: Counter[tuple[str, str]] = Counter()
        #: (hook, method) -> events dropped because the hook's queue was full.
        self.dropped: Counter[tuple[str, str]] = Counter()
        self._gating = {m: [h for h in self.hooks if _overrides(h, m)] for m in GATING}
        self._workers = [_Worker(h, self) for h in self.hooks]
        self._observers: dict[str, list[_Worker]] = {
            m: [w for w in self._workers if _overrides(w.hook, m)] for m in OBSERVING
        }
        self._started = False

    def wants(self, method: str) -> bool:
        """Whether any hook implements ``method`` (to skip building events)."""
        return bool(self._gating.get(method) or self._observers.get(method))

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for hook in self.hooks:
            await hook.start()
        for worker in self._workers:
            if any(worker in ws for ws in self._observers.values()):
                worker.start()

    async def close(self, timeout: float = 5.0) -> None:
        """Let the queues drain (bounded by ``timeout``), then stop the workers and hooks."""
        if not self._started:
            return
        self._started = False
        running = [w for w in self._workers if w.task is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(w.queue.join() for w in running))
        for worker in running:
            assert worker.task is not None
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task
            left = worker.queue.qsize()
            if left:
                log.warning("hook %s stopped with %d events not handled", worker.name, left)
        for hook in reversed(self.hooks):
            try:
                await hook.close()
            except Exception:
                log.exception("closing hook %s failed", hook_name(hook))

    # -- gating ---------------------------------------------------------------

    async def _gate(self, hook: Hooks, method: str, call: Awaitable[Any]) -> Any:
        name = hook_name(hook)
        try:
            async with asyncio.timeout(hook.timeout):
                return await call
        except Reject:
            raise
        except TimeoutError:
            self.errors[(name, method)] += 1
            log.error("hook %s.%s timed out after %gs", name, method, hook.timeout)
            raise HookFailed(f"{name}.{method} timed out") from None
        except Exception as exc:
            self.errors[(name, method)] += 1
            log.exception("hook %s.%s failed", name, method)
            raise HookFailed(f"{name}.{method} failed: {exc}") from exc

    async def authenticate(self, request: ConnectRequest) -> Principal | None:
        """The first principal a hook returns; ``Reject``/``HookFailed`` refuse."""
        for hook in self._gating["authenticate"]:
            principal = await self._gate(hook, "authenticate", hook.authenticate(request))
            if principal is not None:
                return principal  # type: ignore[no-any-return]
        return None

    async def load_document(self, doc: str) -> bytes | None:
        """The first initial content a hook offers; ``HookFailed`` refuses the room."""
        for hook in self._gating["load_document"]:
            update = await self._gate(hook, "load_document", hook.load_document(doc))
            if update is not None:
                return update  # type: ignore[no-any-return]
        return None

    async def before_update(self, event: IncomingUpdate) -> None:
        for hook in self._gating["before_update"]:
            await self._gate(hook, "before_update", hook.before_update(event))

    async def before_awareness(self, event: IncomingAwareness) -> None:
        for hook in self._gating["before_awareness"]:
            await self._gate(hook, "before_awareness", hook.before_awareness(event))

    # -- observing ------------------------------------------------------------

    def emit(self, method: str, event: object) -> None:
        """Hand ``event`` to every hook observing ``method``; never blocks."""
        for worker in self._observers[method]:
            try:
                worker.queue.put_nowait((method, event))
            except asyncio.QueueFull:
                self.dropped[(worker.name, method)] += 1
                if self.dropped[(worker.name, method)] in (1, 100, 10_000):
                    log.warning(
                        "hook %s is %d events behind: %s events dropped so far",
                        worker.name,
                        worker.queue.qsize(),
                        self.dropped[(worker.name, method)],
                    )

    async def idle(self) -> None:
        """Wait until every observing hook has handled what was emitted so far."""
        await asyncio.gather(*(w.queue.join() for w in self._workers if w.task is not None))

    # -- metrics --------------------------------------------------------------

    def collector(self) -> Collector:
        return _HookCollector(self)


class _HookCollector(Collector):
    def __init__(self, runner: HookRunner) -> None:
        self._runner = runner

    def collect(self) -> Iterator[Metric]:
        for name, doc, counts in (
            ("collab_hook_errors", "Hook calls that raised or timed out", self._runner.errors),
            ("collab_hook_dropped", "Hook events dropped on a full queue", self._runner.dropped),
        ):
            family = CounterMetricFamily(name, doc, labels=["hook", "method"])
            for (hook, method), count in sorted(counts.items()):
                family.add_metric([hook, method], count)
            yield family
